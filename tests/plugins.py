"""Throwaway plugins that misbehave on purpose, registered only inside the tests that need them."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from kdbench.method import Method
from kdbench.registry import register, unregister


class Explodes(Method):
    """Raises in the second epoch: the run must be recorded as failed and the suite go on."""

    name = "explodes"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        if progress.epoch >= 1:
            raise RuntimeError("boom in epoch 2")
        return {"ce": F.cross_entropy(s.logits, y)}


class GoesNaN(Method):
    """Returns a NaN loss in the second epoch: the run must end as diverged."""

    name = "goes_nan"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        ce = F.cross_entropy(s.logits, y)
        return {"ce": ce * (torch.nan if progress.epoch >= 1 else 1.0)}


@contextlib.contextmanager
def registered(*classes):
    for cls in classes:
        register(cls)
    try:
        yield
    finally:
        for cls in classes:
            unregister(cls.name)
