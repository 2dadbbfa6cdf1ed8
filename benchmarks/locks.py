"""Locks on a results folder that several processes may share, through ``filelock``.

They are ``flock`` locks: the kernel frees one when the process holding it dies, so a lock left by a
killed run is simply taken by the next one, with no stale-lock guessing. The lock files themselves
stay (empty) after release; deleting them would race with a process that has just opened one.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from kdbench.errors import ConfigError
from kdbench.paths import under


def suite_lock(results_dir: Path, suite: str) -> FileLock:
    """Held for the whole of ``kdbench run``: a second run of the same suite in the same folder
    would train every cell again, so it is refused at once, in one line."""
    folder = under(results_dir, suite)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".run.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"suite {suite!r} is being run in {results_dir} by another live kdbench process (it holds "
            f"{lock.lock_file}); wait for it to end, or pass another --results-dir"
        ) from None
    return lock


@contextmanager
def exclusive(path: Path, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock at ``path`` while computing ``what`` (a teacher, offline targets), waiting for
    another process that computes it now; the caller re-checks for its result once inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"waiting for another process computing {what} (lock {path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
