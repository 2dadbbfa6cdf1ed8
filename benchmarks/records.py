"""Run records: one JSON file per (suite, method label, seed), written atomically.

A record is written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write leaves either the old record or the new one, never half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def runs_dir(results_dir: Path, suite: str) -> Path:
    return Path(results_dir) / suite / "runs"


def record_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return runs_dir(results_dir, suite) / f"{label}__seed{seed}.json"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(obj), f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing or unreadable (a reader decides what to say)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
