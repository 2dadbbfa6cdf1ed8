"""Reading a suite's run records for the report: every readable record kept, every other one named.

A record can be cut short by a crash outside the runner's atomic write, edited by hand, or written
by an older harness; the report must say which files it skipped and why rather than crash or
silently drop them. Files are read with limits (``api/json_file.py``), so a FIFO, a link to a device
or a document nested without end is listed like any other unreadable record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdbench.api.errors import ReportError
from kdbench.api.json_file import JSONFileError, read_json
from kdbench.train import records as schema
from kdbench.train.records import runs_dir


@dataclass(frozen=True)
class Unreadable:
    path: Path
    reason: str


@dataclass(frozen=True)
class LoadedRuns:
    runs_dir: Path
    records: list[dict]
    unreadable: list[Unreadable]


def lookup(rec: dict, *path: str):
    """``rec[path[0]][path[1]]…``, or None where a level is missing or not an object (older or edited records)."""
    for key in path:
        rec = rec.get(key) if isinstance(rec, dict) else None
    return rec


def load_runs(results_dir: str | Path, suite: str) -> LoadedRuns:
    """The records in ``<results_dir>/<suite>/runs/*.json``; a missing or empty folder is a ReportError."""
    folder = runs_dir(Path(results_dir), suite)
    if not folder.is_dir():
        raise ReportError(f"no run records for suite {suite!r}: {folder} does not exist "
                          f"(run `kdbench run {suite}` first, or pass --results-dir)")
    return read_runs_folder(folder, f"for suite {suite!r}")


def read_runs_folder(folder: Path, what: str = "") -> LoadedRuns:
    """The records in ``folder/*.json`` (a suite's runs/ folder), the unreadable ones named; none is a ReportError."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ReportError(f"no run records{' ' + what if what else ''}: {folder} holds no *.json file")
    records, unreadable, seen = [], [], {}
    for path in files:
        try:
            rec = read_json(path)
        except OSError as exc:
            unreadable.append(Unreadable(path, f"cannot be read ({exc.strerror or exc})"))
            continue
        except JSONFileError as exc:
            unreadable.append(Unreadable(path, str(exc)))
            continue
        problem = schema.problem(rec)
        key = (rec.get("label"), rec.get("seed")) if isinstance(rec, dict) else None
        if problem is None and key in seen:
            problem = f"a second record for {key[0]} seed {key[1]} (the first is {seen[key]})"
        if problem is not None:
            unreadable.append(Unreadable(path, problem))
            continue
        seen[key] = path.name
        records.append(rec)
    if not records:
        names = "; ".join(f"{u.path.name}: {u.reason}" for u in unreadable)
        raise ReportError(f"no readable run record in {folder}: {names}")
    return LoadedRuns(folder, records, unreadable)
