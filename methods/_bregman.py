"""Layerwise Bregman representation: a k-coefficient code for a layer, measured in the layer's own geometry.

Why. Ordinary PCA compresses a layer's pre-activations ŷ by squared Euclidean error, but what the
next layer (or a loss) sees is the activation a = f(ŷ). For a softmax head two logit vectors far apart
in ℓ2 can give the same probabilities, and two close ones very different probabilities. Amid, Anil,
Fifty and Warmuth (TMLR 2023, "Layerwise Bregman Representation Learning (of Neural Networks) with
Applications to Knowledge Distillation", arXiv 2209.07080) measure the error by the Bregman divergence
of the potential F whose gradient is the transfer function, f = ∇F:

    D_F(z̃, z) = F(z̃) − F(z) − f(z)ᵀ(z̃ − z)            (softmax: KL(softmax(z) ‖ softmax(z̃)))

and learn a mean m, k directions V (d×k) and per-sample coefficients c_i minimising

    Σ_i D_F(m + V c_i, ŷ_i)    subject to   Vᵀ H_F(m) V = I_k.

The result is an *imported layer* ℓ(c) = f(m + V c) with m and V frozen: a student predicts k
coefficients and the layer decodes them into, e.g., class probabilities (``ImportedLayer``).

The paper released no code: everything below is our reconstruction from its equations, and these
choices are ours, not the paper's:

* the start (the paper's closed form, H^{+1/2}-whitened PCA at the Bregman mean) is kept per sample
  only where it beats c = 0, so the fit is never worse than the mean-only model;
* coefficients: damped Newton (Hessian + 1e-3·I) with per-sample Armijo backtracking;
* directions: one gradient step on V per iteration, its step size η from the quadratic model along
  the gradient, halved until the mean divergence does not increase (the step is skipped otherwise);
* after each iteration V is re-normalised to Vᵀ H_F(m) V = I and rotated to the eigenvectors of the
  coefficient covariance (descending), each column signed so its largest-magnitude entry is positive.

Hence the recorded mean divergence never rises (up to float round-off). Softmax's F is flat along the
all-ones vector: pre-activations are centred (``Transfer.project``), k ≤ d − 1, and the whitening
uses the pseudo-inverse square root of H_F(m) on its range.

API (coordinates last; transfers and the layer take any leading dimensions, the solvers n×d rows;
the solvers compute in float64):

* ``transfer(name, slope=0.01) -> Transfer``: "identity", "softmax", "sigmoid" or "leaky_relu",
  each with ``potential``, ``f``, ``f_inv``, ``hessian``, ``divergence(z_tilde, z)`` and ``project``
  (drops the flat direction), plus the Hessian products the solvers use, ``projected_hessian(z, W)``
  = Wᵀ H_F(z) W and ``curvature(z, u)`` = uᵀ H_F(z) u.
* ``bregman_mean(tr, y) -> m``: m = f⁻¹(mean_i f(ŷ_i)).
* ``warm_start(tr, m, V, y) -> c``: the closed form c = Vᵀ H_F(m)(ŷ − m).
* ``solve_coefficients(tr, m, V, y, c0=None, iters=5, damping=1e-3) -> c``: the code of each ŷ
  (no gradient; any device; returns y's dtype); by default from the better of ``warm_start`` and 0.
* ``fit_bregman_pca(tr, y, k, iters=30, newton_iters=5, seed=0, max_samples=20_000) -> BregmanFit``
  with ``m``, ``V`` (float64), ``history`` (mean divergence: mean-only, start, each iteration), ``k``,
  ``n``, ``transfer``; more than ``max_samples`` rows are subsampled with ``seed``.
* ``ImportedLayer(tr, m, V)`` / ``ImportedLayer.from_fit(fit)``: frozen m, V; ``forward(c) = m + Vc``
  (pre-activations, e.g. logits), ``activation(c) = f(m + Vc)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Armijo sufficient-decrease constant: accept t when D(c + tδ) ≤ D(c) + σ·t·gᵀδ.
_ARMIJO = 1e-4
#: Halvings tried by a backtracking search (coefficients and directions) before giving up on a step.
_HALVINGS = 30
#: ``solve_coefficients`` stops a sample's Newton iteration once its predicted decrease −gᵀδ is at
#: most this fraction of its divergence; within a fit, where only the mean matters, once it is at most
#: ``_FIT_TOL`` × (its divergence + the mean divergence).
_SOLVE_RTOL = 1e-9
_FIT_TOL = 1e-6


# ----------------------------------------------------------------------------------------------------
# Transfer functions and their potentials
# ----------------------------------------------------------------------------------------------------


class Transfer:
    """A strictly monotonic transfer f = ∇F with its convex potential F. Rows are samples."""

    name: str = ""
    #: Directions along which F is flat (softmax: the all-ones vector); a code has k ≤ d − flat_dims.
    flat_dims: int = 0

    def potential(self, z: torch.Tensor) -> torch.Tensor:
        """F(z), one value per row."""
        raise NotImplementedError

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """The transfer f(z) = ∇F(z)."""
        raise NotImplementedError

    def f_inv(self, a: torch.Tensor) -> torch.Tensor:
        """The pre-activation whose activation is a (softmax: the centred one)."""
        raise NotImplementedError

    def hessian(self, z: torch.Tensor) -> torch.Tensor:
        """H_F(z) = ∇f(z), d×d per row."""
        raise NotImplementedError

    def divergence(self, z_tilde: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """D_F(z̃, z) = F(z̃) − F(z) − f(z)ᵀ(z̃ − z), one value per row, in a form without the
        cancellation of that difference of potentials."""
        raise NotImplementedError

    def projected_hessian(self, z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Wᵀ H_F(z) W (k×k per row) for one shared d×k matrix W, without forming H_F(z)."""
        raise NotImplementedError

    def curvature(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """uᵀ H_F(z) u per row, u one d-vector per row."""
        raise NotImplementedError

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """z without its components along the flat directions of F (only softmax has any)."""
        return z

    # Solver hooks: the same quantities, arranged so that repeated evaluations share work.

    def _target(self, z: torch.Tensor) -> torch.Tensor:
        """What ``_divergence_to`` needs of the fixed second argument z, one row per row of z."""
        return z

    def _divergence_to(self, z_tilde: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """D_F(z̃, z) from ``_target(z)``."""
        return self.divergence(z_tilde, target)

    def _newton_terms(self, z: torch.Tensor, a: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient Wᵀ(f(z) − a) and Hessian Wᵀ H_F(z) W of c ↦ D_F(m + Wc, ·) at z = m + Wc, a = f(·)."""
        return (self.f(z) - a) @ W, self.projected_hessian(z, W)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _DiagonalTransfer(Transfer):
    """A coordinate-wise f: H_F(z) = diag(h(z)), so every Hessian product is a weighted sum."""

    def hessian_diag(self, z: torch.Tensor) -> torch.Tensor:
        """h(z), the diagonal of H_F(z)."""
        raise NotImplementedError

    def hessian(self, z):
        return torch.diag_embed(self.hessian_diag(z))

    def projected_hessian(self, z, W):
        return _weighted_gram(self.hessian_diag(z), W)

    def curvature(self, z, u):
        return (self.hessian_diag(z) * u * u).sum(-1)


def _weighted_gram(weights: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j W_jᵀ W_j per row of weights (…×d) → …×k×k, as one matrix product."""
    d, k = W.shape
    outer = (W[:, :, None] * W[:, None, :]).reshape(d, k * k)  # row j: W_j W_jᵀ flattened
    return (weights @ outer).reshape(*weights.shape[:-1], k, k)


class Identity(_DiagonalTransfer):
    """f(z) = z, F = ½‖z‖²: D_F is half the squared distance and the fit is ordinary PCA."""

    name = "identity"

    def potential(self, z):
        return 0.5 * (z * z).sum(-1)

    def f(self, z):
        return z

    def f_inv(self, a):
        return a

    def hessian_diag(self, z):
        return torch.ones_like(z)

    def divergence(self, z_tilde, z):
        return 0.5 * ((z_tilde - z) ** 2).sum(-1)


class Softmax(Transfer):
    """f = softmax, F = logsumexp: D_F(z̃, z) = KL(softmax(z) ‖ softmax(z̃)). F is flat along 1."""

    name = "softmax"
    flat_dims = 1

    def potential(self, z):
        return torch.logsumexp(z, dim=-1)

    def f(self, z):
        return torch.softmax(z, dim=-1)

    def f_inv(self, a):
        log_a = torch.log(a)
        return log_a - log_a.mean(-1, keepdim=True)

    def hessian(self, z):
        q = self.f(z)
        return torch.diag_embed(q) - q[..., :, None] * q[..., None, :]  # diag(q) − qqᵀ

    def divergence(self, z_tilde, z):
        # KL(q ‖ q̃) = Σ_j q_j (log q_j − log q̃_j), the log-probabilities from log_softmax
        return self._divergence_to(z_tilde, self._target(z))

    def projected_hessian(self, z, W):
        return self._projected_hessian_at(self.f(z), W)

    @staticmethod
    def _projected_hessian_at(q: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        # Wᵀ(diag(q) − qqᵀ)W = Σ_j q_j W_jᵀW_j − (Wᵀq)(Wᵀq)ᵀ
        mean_row = q @ W
        return _weighted_gram(q, W).sub_(mean_row[..., :, None] * mean_row[..., None, :])

    def _target(self, z):
        return torch.log_softmax(z, dim=-1)

    def _divergence_to(self, z_tilde, log_q):
        return (log_q.exp() * (log_q - torch.log_softmax(z_tilde, dim=-1))).sum(-1)

    def _newton_terms(self, z, a, W):
        q = self.f(z)
        return (q - a) @ W, self._projected_hessian_at(q, W)

    def curvature(self, z, u):
        # uᵀ(diag(q) − qqᵀ)u = Var_q(u) = Σ_j q_j (u_j − qᵀu)², non-negative as written
        q = self.f(z)
        centred = u - (q * u).sum(-1, keepdim=True)
        return (q * centred * centred).sum(-1)

    def project(self, z):
        return z - z.mean(-1, keepdim=True)


class Sigmoid(_DiagonalTransfer):
    """f = σ per coordinate, F = Σ log(1 + e^z): D_F is a sum of binary KLs."""

    name = "sigmoid"

    def potential(self, z):
        return F.softplus(z).sum(-1)

    def f(self, z):
        return torch.sigmoid(z)

    def f_inv(self, a):
        return torch.logit(a)

    def hessian_diag(self, z):
        return torch.sigmoid(z) * torch.sigmoid(-z)  # σ(1 − σ), each factor without 1 − σ

    def divergence(self, z_tilde, z):
        # KL(p ‖ p̃) per coordinate with log σ(z) = −softplus(−z), log(1 − σ(z)) = −softplus(z)
        p, not_p = torch.sigmoid(z), torch.sigmoid(-z)
        kl = p * (F.softplus(-z_tilde) - F.softplus(-z)) + not_p * (F.softplus(z_tilde) - F.softplus(z))
        return kl.sum(-1)


class LeakyReLU(_DiagonalTransfer):
    """f(z) = z for z ≥ 0, s·z below; F = Σ ½ z f(z). Strictly monotonic only for s > 0."""

    name = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        if not slope > 0:
            raise ValueError(f"leaky_relu: the slope must be positive for f to be invertible, got {slope}")
        self.slope = float(slope)

    def potential(self, z):
        return 0.5 * (z * self.f(z)).sum(-1)

    def f(self, z):
        return torch.where(z >= 0, z, self.slope * z)

    def f_inv(self, a):
        return torch.where(a >= 0, a, a / self.slope)

    def hessian_diag(self, z):
        return torch.where(z >= 0, torch.ones_like(z), torch.full_like(z, self.slope))

    def divergence(self, z_tilde, z):
        # same side of 0: ½h(z̃ − z)²; opposite sides: ½h(z̃)z̃² + ½h(z)z² − h(z)z z̃, all terms ≥ 0
        h_tilde, h = self.hessian_diag(z_tilde), self.hessian_diag(z)
        same_side = 0.5 * h * (z_tilde - z) ** 2
        across = 0.5 * h_tilde * z_tilde**2 + 0.5 * h * z**2 - h * z * z_tilde
        return torch.where((z_tilde >= 0) == (z >= 0), same_side, across).sum(-1)

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


_TRANSFERS = {"identity": Identity, "softmax": Softmax, "sigmoid": Sigmoid, "leaky_relu": LeakyReLU}


def transfer(name: str, slope: float = 0.01) -> Transfer:
    """The transfer called ``name``; ``slope`` is used by leaky_relu only."""
    if name not in _TRANSFERS:
        raise ValueError(f"unknown transfer {name!r}; valid names: {', '.join(sorted(_TRANSFERS))}")
    return LeakyReLU(slope) if name == "leaky_relu" else _TRANSFERS[name]()


# ----------------------------------------------------------------------------------------------------
# Mean and coefficients
# ----------------------------------------------------------------------------------------------------


def bregman_mean(tr: Transfer, y: torch.Tensor) -> torch.Tensor:
    """The code-length-0 representation: f(m) = mean_i f(ŷ_i), i.e. m = f⁻¹(ā) (softmax: centred log ā)."""
    return tr.f_inv(tr.f(y).mean(0))


def warm_start(tr: Transfer, m: torch.Tensor, V: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form coefficients c_i = Vᵀ H_F(m) Δ_i, Δ_i = ŷ_i − m (centred for softmax): exact for the
    identity transfer, a second-order guess elsewhere."""
    return tr.project(y - m) @ (tr.hessian(m) @ V)


def _newton(
    tr: Transfer, m: torch.Tensor, V: torch.Tensor, target: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
    iters: int, damping: float, rtol: float, atol: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` damped Newton steps on each c_i ↦ D_F(m + V c_i, ŷ_i) (``target`` = ``tr._target(ŷ)``,
    a_i = f(ŷ_i)) with per-sample Armijo backtracking, so no sample's divergence ever increases.
    Returns (c, D_F(m + V c_i, ŷ_i)).

    A sample leaves the active set once its predicted decrease −gᵀδ is at most ``rtol`` × its
    divergence + ``atol`` (converged), or when no step length passes the Armijo test (stuck at
    round-off: later steps could not move it either)."""
    c = c.clone()
    loss = tr._divergence_to(m + c @ V.T, target)
    active = torch.arange(len(c), device=c.device)
    for _ in range(iters):
        if len(active) == 0:
            break
        c_act, target_act = c[active], target[active]
        grad, hess = tr._newton_terms(m + c_act @ V.T, a[active], V)   # Vᵀ(f(m + Vc) − a), Vᵀ H_F V
        hess.diagonal(dim1=-2, dim2=-1).add_(damping)                   # + λI
        step = -torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        decrease = (grad * step).sum(-1)                                # gᵀδ ≤ 0
        loss_act = loss[active]
        moving = -decrease > rtol * loss_act.abs() + atol               # NaN: not moving
        # t = 1 for every active sample at once, then halvings on the moving ones that failed
        trial_c = c_act + step
        trial_loss = tr._divergence_to(m + trial_c @ V.T, target_act)
        ok = moving & (trial_loss <= loss_act + _ARMIJO * decrease)     # NaN/inf: not ok
        c_act = torch.where(ok[:, None], trial_c, c_act)
        loss_act = torch.where(ok, trial_loss, loss_act)
        pending = torch.nonzero(moving & ~ok).squeeze(1)
        t = 0.5
        for _ in range(_HALVINGS - 1):
            if len(pending) == 0:
                break
            trial_c = c_act[pending] + t * step[pending]
            trial_loss = tr._divergence_to(m + trial_c @ V.T, target_act[pending])
            ok = trial_loss <= loss_act[pending] + _ARMIJO * t * decrease[pending]
            c_act[pending[ok]], loss_act[pending[ok]] = trial_c[ok], trial_loss[ok]
            pending = pending[~ok]
            t *= 0.5
        c[active], loss[active] = c_act, loss_act
        keep = moving.clone()
        keep[pending] = False                                           # every halving failed
        active = active[keep]
    return c, loss


@torch.no_grad()
def solve_coefficients(
    tr: Transfer, m: torch.Tensor, V: torch.Tensor, y: torch.Tensor, c0: torch.Tensor | None = None,
    iters: int = 5, damping: float = 1e-3,
) -> torch.Tensor:
    """The code c_i ≈ argmin_c D_F(m + V c, ŷ_i) of each row of y (n×d pre-activations, e.g. logits).

    Damped Newton (Hessian + ``damping``·I) with per-sample Armijo backtracking, ``iters`` steps, from
    ``c0``, or by default from whichever of ``warm_start`` and c = 0 is better for that sample. Computed
    in float64 on y's device (m, V, c0 are moved there); returned in y's dtype."""
    out_dtype = y.dtype
    to = dict(dtype=torch.float64, device=y.device)
    y, m, V = y.to(**to), m.to(**to), V.to(**to)
    if c0 is None:
        c0 = _better_of_zero(tr, m, V, y, warm_start(tr, m, V, y))
    c, _ = _newton(tr, m, V, tr._target(y), tr.f(y), c0.to(**to), iters, damping, rtol=_SOLVE_RTOL)
    return c.to(out_dtype)


def _better_of_zero(tr: Transfer, m, V, y, c: torch.Tensor) -> torch.Tensor:
    """c_i where it reconstructs ŷ_i at least as well as the mean alone (c_i = 0), else 0."""
    with_c = tr.divergence(m + c @ V.T, y)
    mean_only = tr.divergence(m.expand_as(y), y)
    return torch.where((with_c <= mean_only)[:, None], c, torch.zeros_like(c))


# ----------------------------------------------------------------------------------------------------
# Fitting m and V
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BregmanFit:
    """A fitted representation: ℓ(c) = f(m + V c) with Vᵀ H_F(m) V = I_k.

    ``history`` holds the mean divergence of the fitted samples: [0] the mean-only model (c = 0),
    [1] after the start, then one entry per iteration; it never rises beyond round-off."""

    transfer_name: str
    slope: float | None  # leaky_relu's slope; None for the other transfers
    m: torch.Tensor      # d, float64
    V: torch.Tensor      # d×k, float64
    history: tuple[float, ...]
    k: int
    n: int               # samples the fit used (after any subsampling)

    @property
    def transfer(self) -> Transfer:
        return transfer(self.transfer_name, self.slope if self.slope is not None else 0.01)


def _check_k(tr: Transfer, d: int, k: int) -> None:
    k_max = d - tr.flat_dims
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= k_max:
        flat = " (softmax is flat along the all-ones vector, which cannot carry a coefficient)" if tr.flat_dims else ""
        raise ValueError(f"k must be an integer with 1 <= k <= {k_max} for the {tr.name} transfer on "
                         f"d = {d} coordinates{flat}; got k = {k!r}")


def _eigen_on_range(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors E₊ and eigenvalues λ₊ of a symmetric PSD H on its range (λ above a rank tolerance)."""
    lam, E = torch.linalg.eigh(H)
    keep = lam > lam.max() * H.shape[0] * torch.finfo(H.dtype).eps
    return E[:, keep], lam[keep]


def _closed_form_directions(tr: Transfer, m: torch.Tensor, delta: torch.Tensor, k: int) -> torch.Tensor:
    """V₀ = H^{+1/2} U_k, U_k the top-k eigenvectors of H^{1/2} S H^{1/2}, S = Σ_i Δ_i Δ_iᵀ / n, H = H_F(m).

    Worked on the range of H (E₊, λ₊): H^{1/2} S H^{1/2} = E₊ B E₊ᵀ with B = Λ₊^{1/2} E₊ᵀ S E₊ Λ₊^{1/2};
    B w = μ w gives U = E₊ w and V₀ = E₊ Λ₊^{−1/2} W, so V₀ᵀ H V₀ = WᵀW = I_k exactly, whatever S's rank."""
    E, lam = _eigen_on_range(tr.hessian(m))
    if E.shape[1] < k:
        raise ValueError(f"H_F(m) has rank {E.shape[1]} < k = {k}: the mean activation is saturated")
    second_moment = delta.T @ delta / len(delta)
    root = E * lam.sqrt()                                        # E₊ Λ₊^{1/2}
    _, W = torch.linalg.eigh(root.T @ second_moment @ root)      # ascending
    W = W.flip(-1)[:, :k]
    return (E / lam.sqrt()) @ W


def _direction_step(tr: Transfer, m, V, C, target, a, loss_mean: float) -> torch.Tensor:
    """V ← V − η G, G = mean_i (f(m + V c_i) − a_i) c_iᵀ (the gradient of the mean divergence in V).

    η starts at the minimiser of the quadratic model along −G, ‖G‖² / mean_i (G c_i)ᵀ H_F(z̃_i)(G c_i),
    and is halved until the mean divergence does not increase; if none works V is kept."""
    n = len(C)
    z = m + C @ V.T
    G = (tr.f(z) - a).T @ C / n
    along = C @ G.T                                              # row i: G c_i
    grad_sq = (G * G).sum()
    curv = tr.curvature(z, along).mean()
    if not (grad_sq > 0 and curv > 0 and torch.isfinite(curv)):
        return V
    eta = (grad_sq / curv).item()
    for _ in range(_HALVINGS):
        trial = V - eta * G
        trial_loss = tr._divergence_to(m + C @ trial.T, target).mean().item()
        if trial_loss <= loss_mean:
            return trial
        eta *= 0.5
    return V


def _canonical_basis(tr: Transfer, m, V, C) -> tuple[torch.Tensor, torch.Tensor]:
    """Same reconstructions m + V c_i, basis made unique: re-normalise (M = Vᵀ H_F(m) V; V M^{−1/2},
    C M^{1/2}), rotate to the eigenvectors of cov(C) (descending), sign each column of V so its
    largest-magnitude entry is positive."""
    M = V.T @ tr.hessian(m) @ V
    mu, Q = torch.linalg.eigh(M)
    V = V @ (Q * mu.rsqrt()) @ Q.T
    C = C @ (Q * mu.sqrt()) @ Q.T
    centred = C - C.mean(0)
    _, R = torch.linalg.eigh(centred.T @ centred / len(C))
    R = R.flip(-1)
    V, C = V @ R, C @ R
    peak = V.abs().argmax(0)
    sign = torch.sign(V[peak, torch.arange(V.shape[1], device=V.device)])
    sign[sign == 0] = 1
    return V * sign, C * sign


@torch.no_grad()
def fit_bregman_pca(
    tr: Transfer, y: torch.Tensor, k: int, iters: int = 30, newton_iters: int = 5, seed: int = 0,
    max_samples: int | None = 20_000,
) -> BregmanFit:
    """Fit m, V (d×k) to the rows of y (n×d pre-activations) by alternating minimisation of
    mean_i D_F(m + V c_i, ŷ_i) s.t. Vᵀ H_F(m) V = I_k; m stays at the Bregman mean.

    Start: closed-form V₀ and c_i (kept only where better than c = 0). Each iteration: ``newton_iters``
    damped Newton steps on every c_i, one line-searched gradient step on V, re-normalisation and
    rotation (``_canonical_basis``).

    More than ``max_samples`` rows are subsampled without replacement, drawn with ``seed`` (None: use
    all rows). The default keeps a fit to a few seconds on a CPU: every Newton step solves one k×k
    system per row, and on 60,000 ten-class teacher outputs a 20,000-row fit gave the same KL on all
    rows to ~1% while taking a third of the time. Same inputs and seed: bitwise the same fit."""
    if y.dim() != 2 or len(y) == 0:
        raise ValueError(f"y must be a non-empty n×d matrix, got shape {tuple(y.shape)}")
    _check_k(tr, y.shape[1], k)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    y = y.detach().to(torch.float64)
    if max_samples is not None and len(y) > max_samples:
        g = torch.Generator().manual_seed(seed)
        y = y[torch.randperm(len(y), generator=g)[:max_samples].sort().values.to(y.device)]
    y = tr.project(y)  # softmax: drop each row's mean, invisible to every divergence (keeps values small)
    a = tr.f(y)
    m = bregman_mean(tr, y)
    if not torch.isfinite(m).all():
        raise ValueError("the mean activation lies on the boundary of f's range: f⁻¹ of it is not finite")

    target = tr._target(y)

    def mean_loss(V: torch.Tensor, C: torch.Tensor) -> float:
        return tr._divergence_to(m + C @ V.T, target).mean().item()

    history = [tr.divergence(m.expand_as(y), y).mean().item()]
    V = _closed_form_directions(tr, m, y - m, k)
    C = _better_of_zero(tr, m, V, y, warm_start(tr, m, V, y))
    history.append(mean_loss(V, C))
    for _ in range(iters):
        C, loss = _newton(tr, m, V, target, a, C, newton_iters, damping=1e-3,
                          rtol=_FIT_TOL, atol=_FIT_TOL * history[-1])
        V = _direction_step(tr, m, V, C, target, a, loss.mean().item())
        V, C = _canonical_basis(tr, m, V, C)
        history.append(mean_loss(V, C))
    return BregmanFit(transfer_name=tr.name, slope=getattr(tr, "slope", None), m=m, V=V,
                      history=tuple(history), k=int(k), n=len(y))


# ----------------------------------------------------------------------------------------------------
# The imported layer
# ----------------------------------------------------------------------------------------------------


class ImportedLayer(nn.Module):
    """ℓ(c) = f(m + V c) with m (d) and V (d×k) frozen ``nn.Parameter``s: counted as the network's
    parameters at inference, never trained. ``forward`` returns the pre-activation z = m + V c (for
    softmax, the logits a classifier head would give), so ℓ(c) = f(forward(c)) = ``activation(c)``."""

    def __init__(self, tr: Transfer, m: torch.Tensor, V: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tr = tr
        self.m = nn.Parameter(m.detach().to(dtype).clone(), requires_grad=False)
        self.V = nn.Parameter(V.detach().to(dtype).clone(), requires_grad=False)

    @classmethod
    def from_fit(cls, fit: BregmanFit, dtype: torch.dtype = torch.float32) -> ImportedLayer:
        return cls(fit.transfer, fit.m, fit.V, dtype)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """z = m + V c for each row c (…×k → …×d)."""
        return self.m + c @ self.V.T

    def activation(self, c: torch.Tensor) -> torch.Tensor:
        """ℓ(c) = f(m + V c)."""
        return self.tr.f(self.forward(c))

    def extra_repr(self) -> str:
        return f"transfer={self.tr!r}, d={self.V.shape[0]}, k={self.V.shape[1]}"
