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

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

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


def kept_logits(u: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, L) for the ``keep`` largest entries along the last dimension of u: M 1.0 there and 0.0
    elsewhere, exactly ``keep`` ones a row; L the logits there up to a constant a row, −inf elsewhere.

    On CPU the row's keep-th largest value comes from NumPy's partition (a SIMD selection, faster
    there than ``torch.topk``), and everything after it is float arithmetic: with b the largest
    float below that value, u − b is positive exactly on the kept entries (boolean masks would do
    the same, but torch's boolean kernels are slow on CPU). A row whose keep-th value is tied takes
    ``torch.topk``'s choice among the ties."""
    c = u.shape[-1]
    rows = u.reshape(-1, c)
    if keep == c:
        return torch.ones_like(rows).view(u.shape), u
    if u.device.type != "cpu":
        kept = torch.zeros_like(rows).scatter_(-1, rows.topk(keep, dim=-1, sorted=False).indices, 1.0)
        return kept.view(u.shape), rows.masked_fill(kept == 0, -math.inf).view(u.shape)
    cut = kth_largest(rows.numpy(), keep)
    shifted = rows - torch.nextafter(cut, cut.new_full((), -math.inf))
    logits = F.threshold(shifted, 0.0, -math.inf)
    kept = shifted.sign_().clamp_(min=0)
    tied = np.flatnonzero(kept.sum(dim=-1).numpy() != keep)  # in NumPy, as this path is the CPU's
    if len(tied):
        tied = torch.from_numpy(tied)
        top = rows.index_select(0, tied).topk(keep, dim=-1, sorted=False).indices
        kept.index_copy_(0, tied, torch.zeros(len(tied), c, dtype=kept.dtype).scatter_(-1, top, 1.0))
        logits.index_copy_(0, tied, logits[tied].masked_fill(kept[tied] == 0, -math.inf))
    return kept.view(u.shape), logits.view(u.shape)


def kth_largest(rows: np.ndarray, keep: int) -> torch.Tensor:
    """Each row's keep-th largest value (N×1), the rows split among torch's threads: NumPy's
    partition is single-threaded, and releases the GIL."""
    cut = rows.shape[1] - keep
    chunks = np.array_split(rows, max(1, min(torch.get_num_threads(), len(rows) // 1024)))
    if len(chunks) == 1:
        return torch.from_numpy(np.partition(rows, cut, axis=-1)[:, cut:cut + 1])
    parts = _threads(len(chunks)).map(lambda chunk: np.partition(chunk, cut, axis=-1)[:, cut:cut + 1], chunks)
    return torch.from_numpy(np.concatenate(list(parts)))


@functools.cache
def _threads(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="kr_sparse")


os.register_at_fork(after_in_child=_threads.cache_clear)  # a forked child has none of the threads


def sparse_target(teacher_map: torch.Tensor, tau: float, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, P̃^T) at every location, channels last (B×H×W×C): M 1.0 on the support, P̃^T zero off it.

    Softmax is monotonic, so the top entries of P^T are those of T/τ, and P̃^T (P^T renormalised
    over them) is the softmax of the kept logits alone: neither needs P^T itself."""
    u = teacher_map.movedim(1, -1).to(torch.promote_types(teacher_map.dtype, torch.float32))
    if tau != 1.0:
        u = u / tau
    kept, logits = kept_logits(u.contiguous(), keep)
    return kept, logits.softmax(dim=-1)


class SparseCrossEntropy(torch.autograd.Function):
    """The mean over locations of −Σ_c P̃_c log softmax(z)_c (channels last), its gradient
    penalized off the support: as Σ_c P̃_c = 1 the gradient is softmax(z) − P̃, kept on the support
    and multiplied by ε off it, i.e. coef ⊙ softmax(z) − P̃ with coef = 1 on M and ε elsewhere.

    Written out so that one C-wide log-softmax is all it forms: the loss is one dot product with P̃,
    and the gradient, which depends on nothing else, is made from it in place in the forward pass."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, target: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):  # bf16 maps: the loss in fp32
            log_p = F.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=-1)
        n = log_p.numel() // log_p.shape[-1]
        loss = -torch.dot(target.reshape(-1), log_p.reshape(-1)) / n
        if ctx.needs_input_grad[0]:
            p = log_p.exp_()
            ctx.save_for_backward(torch.addcmul(target, p, coef, value=-1, out=p))  # −(coef ⊙ p − P̃)
            ctx.n, ctx.z_dtype, ctx.spent = n, z.dtype, False
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.spent:
            raise RuntimeError("kr_sparse's loss was differentiated twice: its gradient is made in place")
        ctx.spent = True
        (minus_grad_z,) = ctx.saved_tensors
        return minus_grad_z.mul_(-grad / ctx.n).to(ctx.z_dtype), None, None


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
        kept, target = sparse_target(teacher_map, tau, support_size(rho, teacher_map.shape[1]))
        coef = F.threshold_(kept, 0.5, eps)  # 1 on the support, ε off it
    return tau**2 * SparseCrossEntropy.apply(z, target, coef)


def adapter(c_s: int, c_t: int) -> nn.Sequential:
    """a_g: 1×1 conv C_S→C_T (no bias, He init) + BN."""
    conv = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_t))


def adapted(a: nn.Sequential, x: torch.Tensor, size: tuple[int, int], tau: float) -> torch.Tensor:
    """a(x)/τ average-pooled to ``size``, channels last (B×h×w×C_T), computed as one affine map of x.

    In training, a 1×1 conv followed by BN is affine in x with coefficients set by the batch: BN's
    mean and variance of W·x are W·mean(x) and the diagonal of W·Cov(x)·Wᵀ. Folding them (and 1/τ)
    into the weights applies the adapter to the C_S-wide map, pooled first (pooling is linear too),
    instead of normalising a C_T-wide one; :class:`FoldedAdapter` writes out its gradient, which
    still flows through the batch statistics. BN's running statistics are updated as BN would,
    though no evaluation reads them."""
    conv, bn = a
    pooled = x if tuple(x.shape[2:]) == size else F.adaptive_avg_pool2d(x, size)
    z, mean, var = FoldedAdapter.apply(x, pooled, conv.weight, bn.weight, bn.bias, tau, bn.eps)
    if bn.training and bn.track_running_stats:
        _update_running_stats(bn, mean, var, x.numel() // x.shape[1])
    return z


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    bn.num_batches_tracked += 1
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
    bn.running_var.lerp_((var * n / max(n - 1, 1)).to(bn.running_var.dtype), momentum)


def _rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B×C×H×W as (B·H·W)×C, a view of a channels-last map."""
    return x.movedim(1, -1).reshape(-1, x.shape[1]).to(dtype)


class FoldedAdapter(torch.autograd.Function):
    """z = ((x̄_p − μ)·Wᵀ) ⊙ s + β/τ, with μ, Σ the mean and covariance of x (the map BN's statistics
    come from, before pooling), x̄_p the pooled map, v = diag(W Σ Wᵀ) and s = γ / (τ √(v + eps)).

    The backward pass is the chain rule through s, μ and Σ by hand: two C_T-wide matrix products
    (for x̄_p and W), and C_S-wide ones for the statistics, where autograd of the same expressions
    would keep and revisit every intermediate. Σ and everything C_T- or C_S-long are accumulated in
    float64, as BatchNorm does on CPU: with Σ in float32 the gradient lost about two digits
    (tests/test_kr_sparse.py holds it to BatchNorm's accuracy). Returns z (B×h×w×C_T) and BN's batch
    mean and (biased) variance of W·x, which carry no gradient."""

    @staticmethod
    def forward(ctx, x, pooled, weight, gamma, beta, tau: float, bn_eps: float):
        dtype = torch.promote_types(x.dtype, weight.dtype)
        small = torch.promote_types(dtype, torch.float64)  # C- and C_S-long vectors, as BatchNorm on CPU
        with torch.autocast(x.device.type, enabled=False):
            rows = _rows(x, dtype)
            mean = rows.mean(dim=0).to(small)
            centred = rows - mean.to(dtype)
            c64 = centred.to(small)
            cov = (c64.T @ c64) / rows.shape[0]
            w = weight.flatten(1).to(small)
            w_cov = w @ cov
            var = (w_cov * w).sum(dim=1)
            rstd = torch.rsqrt(var + bn_eps)
            scale = gamma.to(small) * rstd / tau
            a = w * scale.unsqueeze(1)
            p_centred = centred if pooled is x else _rows(pooled, dtype) - mean.to(dtype)
            bias = (beta.to(small) / tau).to(dtype)
            a_low = a.to(dtype)
            z = (p_centred @ a_low.T).add_(bias) if _narrow(a) else torch.addmm(bias, p_centred, a_low.T)
        ctx.save_for_backward(centred, p_centred, w, w_cov, rstd, scale, a, a_low)
        ctx.tau, ctx.shapes = tau, (x.shape, pooled.shape, weight.shape)
        ctx.dtypes = (x.dtype, pooled.dtype, weight.dtype, gamma.dtype, beta.dtype)
        mean_y = w @ mean
        ctx.mark_non_differentiable(mean_y, var)
        return z.view(*pooled.movedim(1, -1).shape[:-1], -1), mean_y, var

    @staticmethod
    def backward(ctx, grad_z, _grad_mean, _grad_var):
        centred, p_centred, w, w_cov, rstd, scale, a, a_low = ctx.saved_tensors
        tau = ctx.tau
        g = grad_z.reshape(-1, grad_z.shape[-1]).to(a_low.dtype)
        grad_bias = g.sum(dim=0).to(w.dtype)                     # z = (x̄_p − μ)·Aᵀ + β/τ
        grad_a = (p_centred.T @ g).T.to(w.dtype)
        grad_pooled = (a_low.T @ g.T).T if _narrow(a) else g @ a_low
        grad_scale = (grad_a * w).sum(dim=1)                      # A = W ⊙ s
        grad_var = -0.5 * grad_scale * scale * rstd**2            # s = γ (v + eps)^(−1/2) / τ
        grad_w = grad_a * scale.unsqueeze(1) + 2 * grad_var.unsqueeze(1) * w_cov  # v = diag(W Σ Wᵀ)
        grad_cov = (w.T * grad_var) @ w                           # symmetric
        n = centred.shape[0]
        grad_centred = centred @ (2 / n * grad_cov).to(centred.dtype)  # Σ = XcᵀXc / n
        grad_mean = -(grad_bias @ a) / n                          # μ = the mean of x's n rows
        grad_x = grad_centred - grad_centred.mean(dim=0) + grad_mean.to(centred.dtype)
        x_shape, p_shape, w_shape = ctx.shapes
        x_dtype, p_dtype, w_dtype, g_dtype, b_dtype = ctx.dtypes
        return (_maps(grad_x, x_shape, x_dtype), _maps(grad_pooled, p_shape, p_dtype),
                grad_w.view(w_shape).to(w_dtype), (grad_scale * rstd / tau).to(g_dtype),
                (grad_bias / tau).to(b_dtype), None, None)


def _narrow(a: torch.Tensor) -> bool:
    """Few input channels: on the project's CPU, MKL's product with so few result columns was slower
    than the transposed product, and an addmm slower than a product then the bias (docs/speed.md)."""
    return a.shape[1] < 16


def _maps(rows: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """(B·H·W)×C rows back to a B×C×H×W map."""
    b, c, h, w = shape
    return rows.reshape(b, h, w, c).movedim(-1, 1).to(dtype)


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

