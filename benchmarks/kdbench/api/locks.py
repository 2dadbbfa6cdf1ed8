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
from kdbench.api.errors import StorageError


def lock_error(path: Path, exc: OSError) -> StorageError:
    """A lock that cannot be created (a read-only or full folder), as the one-line storage error
    every other write gives."""
    return StorageError(f"cannot create the lock {path}: {exc.strerror or exc}")


def try_lock(path: Path) -> FileLock | None:
    """The lock at ``path``, now held, or None when another live process holds it."""
    lock = FileLock(str(path), timeout=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:  # a TimeoutError, so an OSError: caught first
        return None
    except OSError as exc:
        raise lock_error(path, exc) from None
    return lock


def wait_unlocked(path: Path) -> None:
    """Block until no process holds the lock at ``path``."""
    lock = FileLock(str(path))
    try:
        lock.acquire()
    except OSError as exc:
        raise lock_error(path, exc) from None
    lock.release()


@contextmanager
def exclusive(path: Path, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock at ``path`` while computing ``what`` (a teacher, offline targets), waiting for
    another process that computes it now; the caller re-checks for its result once inside."""
    lock = try_lock(path)
    if lock is None:
        log(f"waiting for another process computing {what} (lock {path})")
        lock = FileLock(str(path))
        try:
            lock.acquire()
        except OSError as exc:
            raise lock_error(path, exc) from None
    try:
        yield
    finally:
        lock.release()
