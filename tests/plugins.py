"""Throwaway plugins that misbehave on purpose, registered only inside the tests that need them."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from kdbench.api.method import Method
from kdbench.api.registry import register, unregister


class Explodes(Method):
    """Raises in the second epoch: the run must be recorded as failed and the suite go on."""

    name = "explodes"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        if progress.epoch >= 1:
            raise RuntimeError("boom in epoch 2")
        return {"ce": F.cross_entropy(s.logits, y)}


class GoesNaN(Method):
    """Returns a NaN loss at the fourth step of the second epoch: the run must end as diverged,
    saying where."""

    name = "goes_nan"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        ce = F.cross_entropy(s.logits, y)
        return {"ce": ce * (torch.nan if (progress.epoch, progress.step) >= (1, 3) else 1.0)}


class FailsInPrepare(Method):
    """Raises while computing its offline targets: only this cell fails."""

    name = "fails_in_prepare"
    paper = "test plugin"
    teacher_taps = frozenset({"logits"})

    def prepare(self, data):
        raise ValueError("no targets today")

    def losses(self, s, t, y, progress):
        return {"ce": F.cross_entropy(s.logits, y)}


class FailsAtEpochEnd(Method):
    """Raises in its first epoch-end hook: only this cell fails."""

    name = "fails_at_epoch_end"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        return {"ce": F.cross_entropy(s.logits, y)}

    def on_epoch_end(self, epoch):
        raise RuntimeError("hook broke")


@contextlib.contextmanager
def registered(*classes):
    for cls in classes:
        register(cls)
    try:
        yield
    finally:
        for cls in classes:
            unregister(cls.name)
