"""Representation diagnostics recorded for every run, whatever its method.

Kernel gap: how far the student's linear kernel on test-set features is from the teacher's,
‖K_S − K_T‖_F / ‖K_T‖_F with K = F Fᵀ (n×n). It is what kernel-transfer methods minimise, and
recording it for every run (baseline and KD included) shows whether a method moves it at all.
Computed without forming the n×n matrices: ‖SSᵀ − TTᵀ‖²_F = ‖SᵀS‖²_F + ‖TᵀT‖²_F − 2‖SᵀT‖²_F, which
is O(n·d²) instead of O(n²·d) time and O(n²) memory.
"""

from __future__ import annotations

import math

import torch
from kdbench.api.tapped import TappedModel
from kdbench.data.datasets import Split, test_batches
from kdbench.train.fast_path import autocast
from kdbench.train.loop import EVAL_BATCH


@torch.no_grad()
def test_pass(
    model: TappedModel, split: Split, batch_size: int = EVAL_BATCH, precision: str = "fp32",
) -> tuple[float, torch.Tensor | None]:
    """Top-1 accuracy (%) and the pooled tap (GAP of the pre-pool map) of every image of ``split``,
    from one pass in eval mode: a teacher's check at load and its kernel-gap features cost one pass.
    The features are None for a model without a pooled tap."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    feats = []
    for x, y in test_batches(split, batch_size):
        with autocast(precision, x.device):
            taps = model.forward_taps(x)
        correct += (taps.logits.argmax(dim=1) == y).sum()
        if taps.pooled is not None:
            feats.append(taps.pooled.float())
    model.train(was_training)
    return 100.0 * int(correct) / len(split), torch.cat(feats) if feats else None


def pooled_features(model: TappedModel, split: Split, precision: str = "fp32") -> torch.Tensor | None:
    """The pooled tap for every image of ``split``, in eval mode."""
    return test_pass(model, split, precision=precision)[1]


def kernel_gap(student_features: torch.Tensor, teacher_features: torch.Tensor) -> float:
    """‖S Sᵀ − T Tᵀ‖_F / ‖T Tᵀ‖_F for features S (n×d_s) and T (n×d_t), in float64."""
    s = student_features.double()
    t = teacher_features.double()
    ss = (s.T @ s).square().sum()
    tt = (t.T @ t).square().sum()
    st = (s.T @ t).square().sum()
    return math.sqrt(max(float(ss + tt - 2 * st), 0.0)) / math.sqrt(float(tt))
