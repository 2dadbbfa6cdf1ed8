"""Run records: one JSON file per (suite, method label, seed), written atomically, as every
checkpoint and cache is.

A record is written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write leaves either the old record or the new one, never half a file. A write that fails
(disk full) is a :class:`StorageError` naming the file, and leaves no temporary file behind.
"""

from __future__ import annotations

import json
from pathlib import Path


from kdbench.api.atomic import write_json_atomic
from kdbench.api.paths import under

SCHEMA_VERSION = 1


def runs_dir(results_dir: Path, suite: str) -> Path:
    return under(results_dir, suite, "runs")


def record_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return under(runs_dir(results_dir, suite), f"{label}__seed{seed}.json")


def write_record(path: Path, record: dict) -> None:
    write_json_atomic(path, record)


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing, unreadable or not a JSON object (a reader
    decides what to say)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
