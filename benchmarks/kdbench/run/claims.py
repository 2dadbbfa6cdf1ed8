"""A claim per cell: the lock a process holds while it runs that cell, so no cell runs twice.

Claims are ``flock`` locks (``filelock``) on ``results/<suite>/claims/<label>__seed<k>.lock``: every
process sharing the results folder (a second ``kdbench run``, a worker of any executor) takes a
cell's claim before running it and skips the cells it cannot take; the kernel frees the claim of a
process that dies, so its cells are taken over by whoever asks next.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from kdbench.train.cell import RunSpec
from kdbench.api.paths import under


def claim_path(results_dir: Path, suite: str, spec: RunSpec) -> Path:
    return under(results_dir, suite, "claims", f"{spec.entry.label}__seed{spec.seed}.lock")


def key(spec: RunSpec) -> tuple[str, int]:
    return spec.entry.label, spec.seed


def take(results_dir: Path, suite: str, specs: list[RunSpec]) -> dict[tuple[str, int], FileLock]:
    """The claims of ``specs`` that no other live process holds, now held by this one, by :func:`key`."""
    held = {}
    for spec in specs:
        path = claim_path(results_dir, suite, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        held[key(spec)] = lock
    return held


def release(held: dict[tuple[str, int], FileLock]) -> None:
    for lock in held.values():
        lock.release()


def wait_for(results_dir: Path, suite: str, spec: RunSpec) -> None:
    """Block until the process holding ``spec``'s claim ends it (finishes the cell, or dies)."""
    lock = FileLock(str(claim_path(results_dir, suite, spec)))
    lock.acquire()
    lock.release()
