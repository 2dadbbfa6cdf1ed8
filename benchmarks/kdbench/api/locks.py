"""Locks around what several processes sharing a results folder would otherwise compute twice (a
teacher, offline targets), through ``filelock``; a cell's claim (``claims.py``) is one too.

They are ``flock`` locks: the kernel frees one when the process holding it dies, so a lock left by a
killed run is simply taken by the next one, with no stale-lock guessing. The lock files themselves
stay (empty) after release; deleting them would race with a process that has just opened one.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout


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
