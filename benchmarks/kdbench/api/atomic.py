"""Files written atomically: to a temporary file in the same folder, then renamed over the target.

A run killed mid-write leaves either the old file or the new one, never half a file; a write that
fails (disk full) is a :class:`StorageError` naming the file and leaves no temporary file behind.
Records, checkpoints, teachers and offline caches are all written this way.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from kdbench.api.errors import StorageError


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


