"""Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network".

    L = γ · CE(z_s, y) + α · T² · KL( softmax(z_t/T) ‖ softmax(z_s/T) )

KL summed over classes and averaged over the batch (``reduction="batchmean"``) on the student's
*log*-probabilities; T² keeps the gradient scale independent of T. Defaults, their source and the
traps: docs/methods.md, ``vanilla_kd``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench import NON_NEGATIVE, POSITIVE, LogUniform, Method, Uniform, register


def kd_loss(z_s: torch.Tensor, z_t: torch.Tensor, T: float) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), batch mean. Shared by methods that add a KD term."""
    log_p_s = F.log_softmax(z_s / T, dim=1)
    p_t = F.softmax(z_t / T, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * T * T


@register
class VanillaKD(Method):
    name = "vanilla_kd"
    paper = "Hinton, Vinyals, Dean 2015, Distilling the Knowledge in a Neural Network (arXiv 1503.02531)"
    defaults = {"T": 4.0, "gamma": 0.1, "alpha": 0.9}
    domains = {"T": POSITIVE, "gamma": NON_NEGATIVE, "alpha": NON_NEGATIVE}
    search_space = {"T": LogUniform(1, 8), "alpha": Uniform(0.1, 1), "gamma": Uniform(0, 1)}
    student_taps = frozenset({"logits"})
    teacher_taps = frozenset({"logits"})

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        return {
            "ce": self.hp["gamma"] * F.cross_entropy(s.logits, y),
            "kd": self.hp["alpha"] * kd_loss(s.logits, t.logits, self.hp["T"]),
        }
