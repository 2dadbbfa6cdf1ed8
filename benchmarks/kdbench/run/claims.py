"""A claim per cell: the lock a process holds while it runs that cell, so no cell runs twice.

Claims are ``flock`` locks (``filelock``) on ``results/<suite>/claims/<label>__seed<k>.lock`` (a tuning
trial's under ``results/<suite>/tuning/claims/``, named by its ``RunSpec.stem``): every
process sharing the results folder (a second ``kdbench run``, a worker of any executor) takes a
cell's claim before running it and skips the cells it cannot take; the kernel frees the claim of a
process that dies, so its cells are taken over by whoever asks next.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock
from kdbench.api.errors import StorageError
from kdbench.api.locks import try_lock, wait_unlocked
from kdbench.api.paths import under
from kdbench.train.cell import RunSpec


def claim_path(folder: Path, spec: RunSpec) -> Path:
    """``folder``: the cells' folder (``SharedRun.folder``)."""
    return under(folder, "claims", f"{spec.stem}.lock")


def check(folder: Path, specs: list[RunSpec]) -> None:
    """Before a run's first write: no claim file already there is a symbolic link or a folder (the
    harness makes neither, and a lock cannot be taken on one), so a planted one is refused before a
    teacher is trained, not after."""
    for spec in specs:
        path = claim_path(folder, spec)
        if os.path.islink(path) or os.path.isdir(path):
            raise _unusable(path, f"it is a {'symbolic link' if os.path.islink(path) else 'folder'}")


def _unusable(path: Path, reason: str) -> StorageError:
    return StorageError(f"the claim {path} cannot be taken: {reason}; "
                        "remove it if no run is using this results folder")


def take(folder: Path, specs: list[RunSpec]) -> dict[tuple, FileLock]:
    """The claims of ``specs`` that no other live process holds, now held by this one, by ``RunSpec.key``;
    a claim that cannot be created (a read-only folder) is a :class:`StorageError`."""
    held = {}
    for spec in specs:
        if (lock := try_lock(claim_path(folder, spec))) is not None:
            held[spec.key] = lock
    return held


def release(held: dict[tuple, FileLock]) -> None:
    for lock in held.values():
        lock.release()


def wait_for(folder: Path, spec: RunSpec) -> None:
    """Block until the process holding ``spec``'s claim ends it (finishes the cell, or dies)."""
    wait_unlocked(claim_path(folder, spec))
