"""Yang, Martinez, Bulat, Tzimiropoulos, ICLR 2021, "Knowledge distillation via Softmax Regression
Representation Learning" (SRRL; released code: github.com/jingyang2017/KD_SRRL).

Only the penultimate representation is distilled. With F_s (B×C_s×H_s×W_s) and F_t (B×C_t×H_t×W_t)
the maps each network actually pools (the ``prepool`` taps), and r a connector:

    r(F_s)  = ReLU(BN(Conv1×1(F_s)))                      C_s → C_t, no bias               [code]
    L_FM    = mean_{b,c} (GAP(r(F_s)) − GAP(F_t))²        MSE, no normalisation            [code]
    L_SR    = mean_{b,k} (W_t·GAP(r(F_s)) + b_t − z_t)²   raw logits, no softmax / T       [code]
    L       = CE(z_s, y) + 1·L_FM + 1·L_SR  (+ κ·T²·KL, κ = 0 by default)

L_SR scores the connected student feature with the teacher's own frozen classifier (W_t, b_t),
through ``F.linear`` on detached weights: never a parameter here, never updated, while gradients
flow through it into r and the student. The connector is pooled after it is applied, so only means
are compared and spatial sizes may differ. Connector init, the optional KD term and what the
released code adds to the paper: docs/methods.md, ``srrl``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdbench import NON_NEGATIVE, POSITIVE, LogUniform, Method, Uniform, register
from kdbench.methods.vanilla_kd import kd_loss


def connector(c_s: int, c_t: int) -> nn.Sequential:
    """1×1 conv (no bias) → BN → ReLU, initialised as the released code."""
    conv = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / c_t))
    bn = nn.BatchNorm2d(c_t)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn, nn.ReLU())


@register
class SRRL(Method):
    name = "srrl"
    paper = (
        "Yang, Martinez, Bulat, Tzimiropoulos, ICLR 2021, Knowledge distillation via Softmax "
        "Regression Representation Learning"
    )
    defaults = {"fm_weight": 1.0, "sr_weight": 1.0, "kd_weight": 0.0, "T": 4.0}
    domains = {
        "fm_weight": NON_NEGATIVE, "sr_weight": NON_NEGATIVE, "kd_weight": NON_NEGATIVE, "T": POSITIVE,
    }
    search_space = {"fm_weight": LogUniform(0.1, 10), "sr_weight": LogUniform(0.1, 10), "kd_weight": Uniform(0, 1)}
    student_taps = frozenset({"prepool", "logits"})
    teacher_taps = frozenset({"prepool", "pooled", "logits"})  # prepool: the connector's width

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.connector = connector(ctx.student_shapes.prepool[0], ctx.teacher_shapes.prepool[0])

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        head = self.ctx.teacher.classifier
        feat = self.connector(s.prepool).mean(dim=(2, 3))  # GAP(r(F_s)), B×C_t
        z_tc = F.linear(feat, head.weight.detach(), head.bias.detach())
        terms = {
            "ce": F.cross_entropy(s.logits, y),
            "fm": self.hp["fm_weight"] * F.mse_loss(feat, t.pooled),
            "sr": self.hp["sr_weight"] * F.mse_loss(z_tc, t.logits),
        }
        if self.hp["kd_weight"] > 0:
            terms["kd"] = self.hp["kd_weight"] * kd_loss(s.logits, t.logits, self.hp["T"])
        return terms
