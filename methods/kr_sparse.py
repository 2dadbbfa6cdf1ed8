"""Liu, Wen, Gao, Tao, Chen, Osa, Kato, CVPR Workshops 2019, "Knowledge Representing: Efficient,
Sparse Representation of Prior Knowledge for Knowledge Distillation" (arXiv 1911.05329; KR).

RECONSTRUCTED: no code was released and only the abstract was available (knowledge aggregation, a
sparse recoding penalty, penalized gradients, combinable with logit KD). The equations below are a
reconstruction coherent with it; every modelling choice is a hyperparameter, so an ablation can
switch it off. For each supervised site g, T_g the teacher's map, S_g the student's:

    P^T_g  = softmax_c(T_g / τ)                 channel distribution at every location
    P^S_g  = softmax_c(a_g(S_g) / τ)            a_g: 1×1 conv C_S→C_T + BN (training-only adapter)
    P̃^T_g  = top-⌈ρ·C_T⌉ of P^T_g, rest zeroed, renormalised;  M_g its support mask
    L_KR,g = τ² · mean_{b,h,w} [ − Σ_c P̃^T_g · log P^S_g ]
    ∂L/∂(a_g(S_g)/τ) ← (M_g + ε(1 − M_g)) ⊙ ∂L/∂(a_g(S_g)/τ)          the penalized gradient (a hook)
    L      = CE(z_s, y) + β · Σ_g L_KR,g  (+ γ · τ_KD² · KL, vanilla KD, γ = 0 by default)

``level`` picks the sites (stage outputs, or every block), paired by relative depth; ``teacher_map``
reads T_g before the stage's closing ReLU (``preact``) or after it (``output``); a larger map is
average-pooled to the smaller's size. Why each choice, and what it changes: docs/methods.md,
``kr_sparse``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdbench import NON_NEGATIVE, POSITIVE, UNIT, Choice, Interval, LogUniform, Method, OneOf, Taps, register
from kdbench.methods.vanilla_kd import kd_loss

LEVELS = ("stage", "block")
TEACHER_MAPS = ("preact", "output")


def support_size(rho: float, channels: int) -> int:
    """⌈ρ·C⌉, robust to float error (0.3 · 10 is 3.0000000000000004 in binary)."""
    return max(1, min(channels, math.ceil(round(rho * channels, 9))))


def sparse_recode(p: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` largest entries of ``p`` along dim 1, renormalise them to sum to one.
    Returns (P̃, M) with M the 0/1 support mask, both shaped like ``p``."""
    # The top-k along the channels, taken on a view where they are the contiguous last dimension:
    # along dim 1 of an NCHW map it is several times slower. The set matters, not its order.
    p_last = p.movedim(1, -1)
    idx = p_last.contiguous().topk(keep, dim=-1, sorted=False).indices
    mask = torch.zeros_like(p_last).scatter_(-1, idx, 1.0).movedim(-1, 1)
    kept = p * mask
    return kept / kept.sum(dim=1, keepdim=True), mask


def penalize_gradient(z: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by M + ε(1 − M)."""
    if z.requires_grad and eps != 1.0:
        scale = mask + eps * (1.0 - mask)
        z.register_hook(lambda grad: grad * scale)
    return z


def kr_loss(
    student_map: torch.Tensor, teacher_map: torch.Tensor, tau: float, rho: float, eps: float
) -> torch.Tensor:
    """L_KR for one site: adapted student map and teacher map, both B×C_T×H×W."""
    with torch.no_grad():
        p_t = F.softmax(teacher_map / tau, dim=1)
        target, mask = sparse_recode(p_t, support_size(rho, p_t.shape[1]))
    z = penalize_gradient(student_map / tau, mask, eps)
    cross_entropy = -(target * F.log_softmax(z, dim=1)).sum(dim=1)  # B×H×W
    return tau**2 * cross_entropy.mean()


def adapter(c_s: int, c_t: int) -> nn.Sequential:
    """a_g: 1×1 conv C_S→C_T (no bias, He init) + BN."""
    conv = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_t))


def relative_index(i: int, n_from: int, n_to: int) -> int:
    """The index in a sequence of ``n_to`` at the same relative depth as ``i`` in one of ``n_from``
    (the last always maps to the last)."""
    return max(0, round((i + 1) * n_to / n_from) - 1)


def site_pairs(s_blocks: tuple[int, ...], t_blocks: tuple[int, ...], level: str) -> list[tuple[str, str]]:
    """(student point, teacher point) of every supervised site, as tap names."""
    g_s, g_t = len(s_blocks), len(t_blocks)
    pairs = []
    for g in range(g_s):
        h = relative_index(g, g_s, g_t)
        if level == "stage":
            pairs.append((f"stage{g}", f"stage{h}"))
            continue
        for j in range(s_blocks[g]):
            k = relative_index(j, s_blocks[g], t_blocks[h])
            pairs.append((f"stage{g}.block{j}", f"stage{h}.block{k}"))
    return pairs


def point_map(taps: Taps, point: str, preact: bool) -> torch.Tensor:
    if "." in point:
        return (taps.preact_blocks if preact else taps.blocks)[point]
    g = int(point[len("stage"):])
    return (taps.preact_stages if preact else taps.stages)[g]


@register
class KRSparse(Method):
    name = "kr_sparse"
    paper = (
        "Liu, Wen, Gao, Tao, Chen, Osa, Kato, CVPR Workshops 2019, Knowledge Representing: Efficient, "
        "Sparse Representation of Prior Knowledge for Knowledge Distillation (arXiv 1911.05329)"
    )
    reconstructed = True
    defaults = {
        "beta": 1.0, "tau": 1.0, "rho": 0.25, "eps": 0.1, "gamma": 0.0, "T": 4.0,
        "level": "stage", "teacher_map": "preact",
    }
    domains = {
        "beta": NON_NEGATIVE, "tau": POSITIVE, "rho": Interval(0, 1, open_low=True), "eps": UNIT,
        "gamma": NON_NEGATIVE, "T": POSITIVE,
        "level": OneOf(*LEVELS), "teacher_map": OneOf(*TEACHER_MAPS),
    }
    search_space = {"beta": LogUniform(0.1, 10), "rho": Choice(0.1, 0.25, 0.5, 1.0), "tau": LogUniform(0.5, 4)}
    student_taps = frozenset({"stages", "blocks", "logits"})
    teacher_taps = frozenset({"stages", "blocks", "preact", "logits"})

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        s_shapes, t_shapes = ctx.student_shapes, ctx.teacher_shapes
        self.sites = tuple(site_pairs(s_shapes.blocks_per_stage, t_shapes.blocks_per_stage, self.hp["level"]))
        self.adapters = nn.ModuleList(
            adapter(s_shapes.at(sp)[0], t_shapes.at(tp)[0]) for sp, tp in self.sites
        )

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        hp = self.hp
        preact = hp["teacher_map"] == "preact"
        kr = torch.zeros((), device=y.device)
        for (sp, tp), a in zip(self.sites, self.adapters):
            s_map = a(point_map(s, sp, preact=False))
            t_map = point_map(t, tp, preact=preact)
            s_map, t_map = same_size(s_map, t_map)
            kr = kr + kr_loss(s_map, t_map, hp["tau"], hp["rho"], hp["eps"])
        terms = {"ce": F.cross_entropy(s.logits, y), "kr": hp["beta"] * kr}
        if hp["gamma"] > 0:
            terms["kd"] = hp["gamma"] * kd_loss(s.logits, t.logits, hp["T"])
        return terms

    def record_extras(self) -> dict:
        return {
            "sites": [{"student": sp, "teacher": tp, "channels": a[0].out_channels,
                       "support": support_size(self.hp["rho"], a[0].out_channels)}
                      for (sp, tp), a in zip(self.sites, self.adapters)],
        }


def same_size(s_map: torch.Tensor, t_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of the two maps to the smaller one's spatial size."""
    size = (min(s_map.shape[2], t_map.shape[2]), min(s_map.shape[3], t_map.shape[3]))
    if tuple(s_map.shape[2:]) != size:
        s_map = F.adaptive_avg_pool2d(s_map, size)
    if tuple(t_map.shape[2:]) != size:
        t_map = F.adaptive_avg_pool2d(t_map, size)
    return s_map, t_map
