"""Qian, Li, Hu, "Efficient Kernel Transfer in Knowledge Distillation" (arXiv 2009.14416; v2 "Improved
Knowledge Distillation via Full Kernel Matrix Transfer", SDM 2022). The paper calls the method KDA.

A layer's features define a kernel K = Φ Φᵀ over the batch; matching the teacher's kernel
(min ‖K_S − K_T‖) is quadratic in the batch size B. With landmarks D, Nyström gives K ≈ C W⁺ Cᵀ with
the partial matrix C = Φ Dᵀ (B×L), and the paper bounds the full-kernel gap by the Nyström error plus
the gap between partial matrices, so matching the B×L partial matrices controls K in linear cost
[paper]. Landmarks are the class centres, one per class, in each network's own feature space, so no
connector is needed when widths differ [code]:

    P_S   = S · M_Sᵀ,   P_T = T · M_Tᵀ                          (B×L, linear kernel)       [code]
    L_KDA = Σ_{b,l} smoothL1_{β=1}(P_S − P_T) / ‖P_T‖_F                                    [code]
    L     = CE(z_s, y) + α · L_KDA,   α = 0.04, no KD term                                 [code]

S, T are the pooled features (``feature="pooled"``), the logits (``"logits"``) or both summed
(``"combo"``). Class centres are per-epoch means of the detached features, used as constants through
the next epoch (buffers, so a resumed run keeps them); CE alone for a warm-up of
``warmup_fraction`` of the budget, at least one epoch, since centres exist only after the first.
Choices and their sources: docs/methods.md, ``kernel_nystrom``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench import NON_NEGATIVE, UNIT, LogUniform, Method, OneOf, Uniform, register

FEATURES = {"pooled": ("pooled",), "logits": ("logits",), "combo": ("pooled", "logits")}


def partial_kernel_loss(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """Σ smoothL1_{β=1}(p_s − p_t) / ‖p_t‖_F, and 0 where ‖p_t‖_F = 0 (nothing to match)."""
    norm = torch.linalg.norm(p_t)
    huber = F.smooth_l1_loss(p_s, p_t, reduction="sum", beta=1.0)
    # Divide by a safe denominator, then select: a NaN in the unused branch would poison the gradient.
    return torch.where(norm > 0, huber / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)


def warmup_epochs(fraction: float, epochs: int) -> int:
    """CE-only epochs: ``fraction`` of the budget rounded half up, at least 1, at most the budget."""
    return min(max(int(fraction * epochs + 0.5), 1), epochs)


@register
class KernelNystrom(Method):
    name = "kernel_nystrom"
    paper = (
        "Qian, Li, Hu, Efficient Kernel Transfer in Knowledge Distillation (arXiv 2009.14416; "
        "SDM 2022 as Improved Knowledge Distillation via Full Kernel Matrix Transfer)"
    )
    defaults = {"alpha": 0.04, "warmup_fraction": 5 / 120, "feature": "pooled"}
    domains = {"alpha": NON_NEGATIVE, "warmup_fraction": UNIT, "feature": OneOf(*FEATURES)}
    search_space = {"alpha": LogUniform(0.004, 0.4), "warmup_fraction": Uniform(0, 0.2)}
    student_taps = frozenset({"pooled", "logits"})
    teacher_taps = frozenset({"pooled", "logits"})

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.layers = FEATURES[self.hp["feature"]]
        self.warmup = warmup_epochs(self.hp["warmup_fraction"], ctx.epochs)
        n = ctx.num_classes
        for layer in self.layers:
            for net, shapes in (("s", ctx.student_shapes), ("t", ctx.teacher_shapes)):
                d = getattr(shapes, layer)[0]
                self.register_buffer(f"centres_{net}_{layer}", torch.zeros(n, d))
                self.register_buffer(f"sums_{net}_{layer}", torch.zeros(n, d))
        self.register_buffer("counts", torch.zeros(n))

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        if self.training:
            self._accumulate(s, t, y)
        ce = F.cross_entropy(s.logits, y)
        if progress.epoch < self.warmup:
            return {"ce": ce, "kda": ce.new_zeros(())}
        kda = sum(
            partial_kernel_loss(
                getattr(s, layer) @ getattr(self, f"centres_s_{layer}").T,
                getattr(t, layer) @ getattr(self, f"centres_t_{layer}").T,
            )
            for layer in self.layers
        )
        return {"ce": ce, "kda": self.hp["alpha"] * kda}

    @torch.no_grad()
    def _accumulate(self, s, t, y) -> None:
        onehot = F.one_hot(y, self.ctx.num_classes).to(self.counts.dtype)  # B×L; matmul: deterministic
        self.counts += onehot.sum(dim=0)
        for layer in self.layers:
            getattr(self, f"sums_s_{layer}").add_(onehot.T @ getattr(s, layer).detach())
            getattr(self, f"sums_t_{layer}").add_(onehot.T @ getattr(t, layer))

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        seen = self.counts > 0
        for layer in self.layers:
            for net in ("s", "t"):
                sums = getattr(self, f"sums_{net}_{layer}")
                centres = getattr(self, f"centres_{net}_{layer}")
                centres[seen] = sums[seen] / self.counts[seen, None]
                sums.zero_()
        self.counts.zero_()

    def record_extras(self) -> dict:
        return {
            "warmup_epochs": self.warmup,
            "warmup_rule": "round(warmup_fraction * epochs), at least 1: centres form at epoch 1's end",
        }
