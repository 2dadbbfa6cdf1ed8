"""Run records: one JSON file per (suite, method label, seed), written atomically, as every
checkpoint and cache is.

A record is written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write leaves either the old record or the new one, never half a file. A write that fails
(disk full) is a :class:`StorageError` naming the file, and leaves no temporary file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from kdbench.errors import StorageError
from kdbench.paths import under

SCHEMA_VERSION = 1


def runs_dir(results_dir: Path, suite: str) -> Path:
    return under(results_dir, suite, "runs")


def record_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return under(runs_dir(results_dir, suite), f"{label}__seed{seed}.json")


def _json_safe(obj: Any) -> Any:
    """NaN and infinities are not JSON: store them as strings a reader can recognise."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(path, (json.dumps(_json_safe(obj), indent=1, sort_keys=False) + "\n").encode())


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` of ``obj``, written as a record is (serialised in memory first, so a failing
    disk raises ``OSError`` rather than an error from inside torch's zip writer)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing, unreadable or not a JSON object (a reader
    decides what to say)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
