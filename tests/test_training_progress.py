"""The trainer tells a method where training stands at every step (epoch and step from 0)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdbench.api.method import Method, MethodContext
from kdbench.config.suite import OptimizerConfig, ScheduleConfig, TrainConfig
from kdbench.data.datasets import DATASETS, Dataset, Split
from kdbench.models import build_model
from kdbench.train.loop import make_cell, train_epoch


class RecordsProgress(Method):
    name = "records_progress"

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.seen = []

    def losses(self, s, t, y, progress):
        self.seen.append((progress.epoch, progress.step, progress.fraction))
        return {"ce": F.cross_entropy(s.logits, y)}


def test_losses_see_epoch_step_and_budget_fraction():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(10, 1, 28, 28, generator=g), torch.arange(10) % 10)
    data = Dataset(DATASETS["fashion_mnist"], split, split, "synthetic", "0" * 64)
    train = TrainConfig(2, 4, OptimizerConfig(), ScheduleConfig())
    student = build_model("fmnist_student", 10, 1)
    ctx = MethodContext(student, None, student.tap_shapes((1, 28, 28)), None, 10, 2, 3)
    method = RecordsProgress({}, ctx)
    cell = make_cell(student, method, train.optimizer)
    for epoch in range(2):
        train_epoch([cell], None, data, train, seed=0, epoch=epoch)
    assert [(e, s) for e, s, _ in method.seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [f for _, _, f in method.seen] == pytest.approx([0.0, 1 / 6, 2 / 6, 0.5, 4 / 6, 5 / 6], abs=1e-12)
