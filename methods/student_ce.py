"""The baseline every method is compared against: the student trained alone on the labels
(docs/methods.md, ``student_ce``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench import Method, register


@register
class StudentCE(Method):
    """L = CE(z_s, y). No teacher is loaded or run."""

    name = "student_ce"
    paper = "baseline: student trained alone with cross-entropy"
    defaults: dict = {}
    student_taps = frozenset({"logits"})
    teacher_taps = frozenset()

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(s.logits, y)}
