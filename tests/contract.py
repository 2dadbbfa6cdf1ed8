"""What a test needs to call a plugin the way the harness does: the task it is planned for and the
training progress its losses are computed at."""

from __future__ import annotations

from kdbench.api.method import Task, TrainingProgress

FMNIST_TASK = Task(10, (1, 28, 28))


def at_epoch(epoch: int, epochs: int | None = None) -> TrainingProgress:
    """The first step of ``epoch`` (from 0) of a budget of ``epochs`` (default: that epoch is the last)."""
    return TrainingProgress(epoch, 0, 1, epoch + 1 if epochs is None else epochs)
