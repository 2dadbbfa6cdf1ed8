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
    ∂L/∂(a_g(S_g)/τ) ← (M_g + ε(1 − M_g)) ⊙ ∂L/∂(a_g(S_g)/τ)          the penalized gradient
    L      = CE(z_s, y) + β · Σ_g L_KR,g  (+ γ · τ_KD² · KL, vanilla KD, γ = 0 by default)

``level`` picks the sites (stage outputs, or every block), paired by relative depth; ``teacher_map``
reads T_g before the stage's closing ReLU (``preact``) or after it (``output``); a larger map is
average-pooled to the smaller's size. Why each choice, and what it changes: docs/methods.md,
``kr_sparse``. The code computes the same quantities in fewer passes over C_T-wide maps (top-k of the
logits, the loss and its penalized gradient written out, the adapter's BN folded into its conv);
tests check them against the equations as first implemented.
"""

from __future__ import annotations

import math

import numpy as np
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


def sparse_target(teacher_map: torch.Tensor, tau: float, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P̃^T at every location as its ``keep`` non-zero entries: (indices, values), both B×H×W×keep.

    Softmax is monotonic, so the top entries of P^T are those of T/τ, and P̃^T (P^T renormalised
    over them) is the softmax of the kept logits alone: neither needs the C-wide softmax. The
    channels are the last dimension (a view of a channels-last map), where top-k is fastest; the set
    matters, not its order."""
    u = teacher_map.movedim(1, -1)
    if tau != 1.0:
        u = u / tau
    idx = top_indices(u, keep)
    return idx, F.softmax(u.gather(-1, idx), dim=-1)


def top_indices(u: torch.Tensor, keep: int) -> torch.Tensor:
    """The indices of the ``keep`` largest entries along the last dimension, in no order.

    On CPU, NumPy's partition (a SIMD introselect) finds them several times faster than
    ``torch.topk``, which sorts row by row; the set is the same but for the order of ties."""
    if u.device.type != "cpu" or keep == u.shape[-1]:
        return u.topk(keep, dim=-1, sorted=False).indices
    values = u.detach().to(torch.promote_types(u.dtype, torch.float32)).contiguous().numpy()
    cut = u.shape[-1] - keep
    return torch.from_numpy(np.argpartition(values, cut, axis=-1)[..., cut:]).to(torch.int64)


class SparseCrossEntropy(torch.autograd.Function):
    """−Σ_c P̃_c log softmax(z)_c at every location (channels last), its gradient penalized off the
    support P̃ is given on.

    Written out so that nothing C-wide is formed but log softmax(z) and, in the backward pass,
    softmax(z): the loss reads only the kept entries, and as Σ_c P̃_c = 1 the gradient is
    softmax(z)_c − P̃_c, times 1 on the support and ε off it."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, idx: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
        log_p = F.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=-1)  # bf16: in fp32
        kept = log_p.gather(-1, idx)
        ctx.save_for_backward(log_p, kept, idx, target)
        ctx.eps = eps
        return -(target * kept).sum(dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        log_p, kept, idx, target = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        on_support = (kept.exp() - target) * grad  # 1 · (softmax − P̃)
        grad_z = log_p.exp().mul_(ctx.eps * grad)  # ε · softmax
        return grad_z.scatter_(-1, idx, on_support), None, None, None


def kr_loss(
    student_map: torch.Tensor, teacher_map: torch.Tensor, tau: float, rho: float, eps: float
) -> torch.Tensor:
    """L_KR for one site, its gradient penalized: adapted student map and teacher map, both
    B×C_T×H×W."""
    z = student_map.movedim(1, -1)
    if tau != 1.0:
        z = z / tau
    return sparse_kr_loss(z, teacher_map, tau, rho, eps)


def sparse_kr_loss(z: torch.Tensor, teacher_map: torch.Tensor, tau: float, rho: float, eps: float) -> torch.Tensor:
    """L_KR for one site from z = a_g(S_g)/τ, channels last (B×H×W×C_T), and T_g (B×C_T×H×W)."""
    with torch.no_grad():
        idx, target = sparse_target(teacher_map, tau, support_size(rho, teacher_map.shape[1]))
    return tau**2 * SparseCrossEntropy.apply(z, idx, target, eps).mean()


def adapter(c_s: int, c_t: int) -> nn.Sequential:
    """a_g: 1×1 conv C_S→C_T (no bias, He init) + BN."""
    conv = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_t))


def adapted(a: nn.Sequential, x: torch.Tensor, size: tuple[int, int], tau: float) -> torch.Tensor:
    """a(x)/τ average-pooled to ``size``, channels last (B×h×w×C_T), computed as one linear map of x.

    In training, a 1×1 conv followed by BN is affine in x with coefficients set by the batch: BN's
    mean and variance of W·x are W·mean(x) and the diagonal of W·Cov(x)·Wᵀ. Folding them (and 1/τ)
    into the weights applies the adapter to the C_S-wide map, pooled first (pooling is linear too),
    instead of normalising a C_T-wide one; the gradient still flows through the batch statistics.
    BN's running statistics are updated as BN would, though no evaluation reads them."""
    conv, bn = a
    w = conv.weight.flatten(1).double()  # C_T×C_S; the statistics in float64, where they cost little
    flat = x.movedim(1, -1).reshape(-1, x.shape[1]).double()
    mean = flat.mean(dim=0)
    centred = flat - mean
    cov = centred.T @ centred / flat.shape[0]
    var = ((w @ cov) * w).sum(dim=1)
    if bn.training and bn.track_running_stats:
        _update_running_stats(bn, w @ mean, var, flat.shape[0])
    scale = bn.weight / torch.sqrt(var + bn.eps) / tau
    bias = bn.bias / tau - (w @ mean) * scale
    dtype = torch.promote_types(x.dtype, conv.weight.dtype)
    if tuple(x.shape[2:]) != size:
        x = F.adaptive_avg_pool2d(x, size)
    return F.linear(x.movedim(1, -1).to(dtype), (w * scale.unsqueeze(1)).to(dtype), bias.to(dtype))


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    bn.num_batches_tracked += 1
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
    bn.running_var.lerp_((var * n / max(n - 1, 1)).to(bn.running_var.dtype), momentum)


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
            s_map = point_map(s, sp, preact=False)
            t_map = point_map(t, tp, preact=preact)
            size = (min(s_map.shape[2], t_map.shape[2]), min(s_map.shape[3], t_map.shape[3]))
            if tuple(t_map.shape[2:]) != size:
                t_map = F.adaptive_avg_pool2d(t_map, size)
            z = adapted(a, s_map, size, hp["tau"])
            kr = kr + sparse_kr_loss(z, t_map, hp["tau"], hp["rho"], hp["eps"])
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

