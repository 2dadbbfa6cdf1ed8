"""_bregman: each transfer's potential, gradient, Hessian, inverse and divergence against finite
differences and independent formulas (scipy's rel_entr, torch's kl_div); the Bregman mean; the fit
(monotone history, the Vᵀ H_F(m) V = I constraint, determinism, more k fits better, full rank is
exact, identity is PCA); the coefficient solver (recovers known codes, never worse than its start,
float32 and no_grad); bad arguments; and the frozen imported layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kdbench.methods._bregman import (BregmanFit, ImportedLayer, bregman_mean, fit_bregman_pca, solve_coefficients,
                                      transfer, warm_start)
from scipy.special import rel_entr

NAMES = ["identity", "softmax", "sigmoid", "leaky_relu"]
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds a barrier per op, which on a busy
    2-core machine costs a whole scheduler slice (fits ran ~50× slower). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tr_of(name: str):
    return transfer(name, slope=0.1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def points(n: int, d: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    """Random pre-activations kept ≥ 0.05 away from 0 (leaky ReLU's kink), float64."""
    z = scale * torch.randn(n, d, generator=gen(seed), dtype=F64)
    return torch.sign(z) * (0.05 + z.abs())


def low_rank_logits(n: int, d: int, rank: int, seed: int, scale: float = 3.0, noise: float = 0.3):
    """Synthetic teacher logits: a rank-``rank`` signal plus isotropic noise, float64."""
    g = gen(seed)
    signal = torch.randn(n, rank, generator=g, dtype=F64) @ torch.randn(rank, d, generator=g, dtype=F64)
    return scale * signal / rank**0.5 + noise * torch.randn(n, d, generator=g, dtype=F64)


def mean_kl_by_hand(y: torch.Tensor, z_tilde: torch.Tensor) -> float:
    """mean_i KL(softmax(ŷ_i) ‖ softmax(z̃_i)) with scipy, independent of the module."""
    p = torch.softmax(y, -1).numpy()
    q = torch.softmax(z_tilde, -1).numpy()
    return float(rel_entr(p, q).sum(1).mean())


def softmax_hessian_by_hand(z: torch.Tensor) -> torch.Tensor:
    q = torch.softmax(z, -1)
    return torch.diag(q) - torch.outer(q, q)


# --- transfers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_divergence_positive_on_pairs_and_zero_at_equality(name):
    tr = tr_of(name)
    z, z_tilde = points(300, 6, 0), points(300, 6, 1)
    assert torch.all(tr.divergence(z_tilde, z) > 0)
    assert torch.all(tr.divergence(z, z).abs() <= 1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_f_is_the_gradient_of_the_potential(name):
    tr, z, h = tr_of(name), points(20, 5, 2), 1e-6
    fd = torch.stack([(tr.potential(z + h * e) - tr.potential(z - h * e)) / (2 * h)
                      for e in torch.eye(5, dtype=F64)], dim=-1)
    torch.testing.assert_close(tr.f(z), fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_is_the_jacobian_of_f_and_its_products_agree(name):
    tr, z, h = tr_of(name), points(20, 5, 3), 1e-6
    fd = torch.stack([(tr.f(z + h * e) - tr.f(z - h * e)) / (2 * h) for e in torch.eye(5, dtype=F64)], dim=-1)
    H = tr.hessian(z)
    torch.testing.assert_close(H, fd, rtol=0, atol=1e-8)
    W, u = torch.randn(5, 3, generator=gen(4), dtype=F64), torch.randn(20, 5, generator=gen(5), dtype=F64)
    torch.testing.assert_close(tr.projected_hessian(z, W), W.T @ H @ W, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tr.curvature(z, u), torch.einsum("ni,nij,nj->n", u, H, u), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_f_inv_inverts_f(name):
    tr, z = tr_of(name), points(50, 7, 6)
    expected = z - z.mean(-1, keepdim=True) if name == "softmax" else z  # softmax: up to the ones vector
    torch.testing.assert_close(tr.f_inv(tr.f(z)), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_divergence_is_the_bregman_divergence_of_the_potential(name):
    tr, z, z_tilde = tr_of(name), points(200, 6, 7), points(200, 6, 8)
    by_potentials = tr.potential(z_tilde) - tr.potential(z) - (tr.f(z) * (z_tilde - z)).sum(-1)
    torch.testing.assert_close(tr.divergence(z_tilde, z), by_potentials, rtol=1e-10, atol=1e-12)


def test_softmax_divergence_is_kl_of_the_probabilities():
    tr = transfer("softmax")
    for scale in (1.0, 30.0):  # 30: peaked probabilities, where F(z̃) − F(z) − … cancels badly
        z, z_tilde = points(100, 10, 9, scale), points(100, 10, 10, scale)
        by_scipy = rel_entr(torch.softmax(z, -1).numpy(), torch.softmax(z_tilde, -1).numpy()).sum(1)
        np.testing.assert_allclose(tr.divergence(z_tilde, z).numpy(), by_scipy, rtol=1e-9, atol=1e-12)
        by_torch = F.kl_div(torch.log_softmax(z_tilde, -1), torch.log_softmax(z, -1), reduction="none",
                            log_target=True).sum(-1)
        torch.testing.assert_close(tr.divergence(z_tilde, z), by_torch, rtol=1e-12, atol=1e-14)


def test_sigmoid_divergence_is_a_sum_of_binary_kls():
    tr, z, z_tilde = transfer("sigmoid"), points(100, 6, 11, 3.0), points(100, 6, 12, 3.0)
    p, q = torch.sigmoid(z).numpy(), torch.sigmoid(z_tilde).numpy()
    by_scipy = (rel_entr(p, q) + rel_entr(1 - p, 1 - q)).sum(1)
    np.testing.assert_allclose(tr.divergence(z_tilde, z).numpy(), by_scipy, rtol=1e-9, atol=1e-12)


def test_leaky_relu_divergence_by_hand_on_each_side_of_zero():
    tr = transfer("leaky_relu", slope=0.2)
    z_tilde = torch.tensor([[2.0, -3.0, -1.0, 4.0]], dtype=F64)
    z = torch.tensor([[1.0, -1.0, 2.0, -2.0]], dtype=F64)
    # ½(2−1)² ; ½·0.2·(−3+1)² ; ½·0.2·1 + ½·4 − 2·(−1) ; ½·16 + ½·0.2·4 − 0.2·(−2)·4
    expected = 0.5 + 0.4 + (0.1 + 2.0 + 2.0) + (8.0 + 0.4 + 1.6)
    assert tr.divergence(z_tilde, z).item() == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_mean_activation_of_the_bregman_mean(name):
    tr, y = tr_of(name), points(400, 6, 13)
    torch.testing.assert_close(tr.f(bregman_mean(tr, y)), tr.f(y).mean(0), rtol=1e-12, atol=1e-14)


def test_unknown_transfer_and_bad_k_raise():
    with pytest.raises(ValueError, match="identity, leaky_relu, sigmoid, softmax"):
        transfer("tanh")
    with pytest.raises(ValueError, match="positive"):
        transfer("leaky_relu", slope=0.0)
    y = points(50, 6, 14)
    for name, k in [("softmax", 0), ("softmax", 6), ("identity", 7), ("identity", 2.0), ("sigmoid", -1)]:
        with pytest.raises(ValueError, match="k must be an integer with 1 <= k <="):
            fit_bregman_pca(transfer(name), y, k)
    fit_bregman_pca(transfer("softmax"), y, 5, iters=1)   # d − 1 is allowed for softmax,
    fit_bregman_pca(transfer("identity"), y, 6, iters=1)  # d elsewhere


# --- the fit --------------------------------------------------------------------------------------------

SOFTMAX = transfer("softmax")
D = 20  # classes in the synthetic softmax data


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    return low_rank_logits(1500, D, rank=6, seed=20)


@pytest.fixture(scope="module")
def fits(logits) -> dict[int, BregmanFit]:
    return {k: fit_bregman_pca(SOFTMAX, logits, k, iters=15) for k in (2, 5)}


def assert_never_rises(history):
    h = np.asarray(history)
    assert np.all(np.diff(h) <= 1e-12 * h[0]), np.diff(h).max()


def test_softmax_fit_history_never_rises_and_beats_the_mean(fits, logits):
    for k, fit in fits.items():
        assert (fit.k, fit.n, len(fit.history)) == (k, 1500, 2 + 15)
        assert_never_rises(fit.history)
        mean_only = mean_kl_by_hand(logits, bregman_mean(SOFTMAX, logits).expand_as(logits))
        assert fit.history[0] == pytest.approx(mean_only, rel=1e-12)
        assert fit.history[-1] < 0.5 * fit.history[0]
        assert fit.history[-1] < 0.9 * fit.history[1]  # the iterations improve on the start
    assert fits[5].history[-1] < 0.2 * fits[2].history[-1]


def test_softmax_fit_history_is_the_kl_its_layer_reaches(fits, logits):
    # Each c_i ↦ KL is convex, so a long Newton solve gets at least as low as the fit's coefficients …
    for fit in fits.values():
        c = solve_coefficients(SOFTMAX, fit.m, fit.V, logits, iters=50)
        reached = mean_kl_by_hand(logits, ImportedLayer.from_fit(fit, dtype=F64)(c))
        # … and not much further: the fit's coefficients were (nearly) optimal for its V
        assert 0.99 * fit.history[-1] <= reached <= fit.history[-1] * (1 + 1e-9)


def test_softmax_fit_satisfies_the_constraint_in_canonical_form(fits, logits):
    for k, fit in fits.items():
        H = softmax_hessian_by_hand(fit.m)
        torch.testing.assert_close(fit.V.T @ H @ fit.V, torch.eye(k, dtype=F64), rtol=0, atol=1e-8)
        assert fit.m.dtype == fit.V.dtype == F64 and fit.V.shape == (D, k)
        assert abs(fit.m.sum().item()) < 1e-12 and fit.V.sum(0).abs().max() < 1e-10  # ⊥ all-ones
        # rotation: the codes' covariance is (nearly: these codes are re-solved) diagonal, descending;
        # sign: each column's largest-magnitude entry is positive
        cov = torch.cov(solve_coefficients(SOFTMAX, fit.m, fit.V, logits, iters=50).T, correction=0)
        variances = cov.diagonal()
        assert torch.all(variances[:-1] > variances[1:])
        assert (cov - torch.diag(variances)).abs().max() < 0.1 * variances.min()
        assert torch.all(fit.V[fit.V.abs().argmax(0), torch.arange(k)] > 0)


def test_fit_is_deterministic_and_the_seed_picks_the_subsample(logits):
    one, two, other = (fit_bregman_pca(SOFTMAX, logits, 3, iters=5, seed=s, max_samples=700) for s in (1, 1, 2))
    assert torch.equal(one.m, two.m) and torch.equal(one.V, two.V) and one.history == two.history
    assert one.n == other.n == 700 and not torch.equal(one.m, other.m)


def test_softmax_fit_with_k_d_minus_1_is_exact(logits):
    fit = fit_bregman_pca(SOFTMAX, logits[:300], D - 1, iters=2)
    assert fit.history[-1] <= 1e-10 * fit.history[0]


@pytest.mark.parametrize("name, scale, d", [("sigmoid", 2.0, 8), ("leaky_relu", 2.0, 8), ("softmax", 12.0, 20)])
def test_fits_never_rise_under_the_constraint(name, scale, d):
    # softmax at scale 12 (peaked probabilities) is where the direction step's first η overshoots
    tr = tr_of(name)
    y = low_rank_logits(600, d, rank=6, seed=21, scale=scale)
    fits = [fit_bregman_pca(tr, y, k, iters=15) for k in (2, 4)]
    for fit in fits:
        assert_never_rises(fit.history)
        H = tr.hessian(fit.m)
        torch.testing.assert_close(fit.V.T @ H @ fit.V, torch.eye(fit.k, dtype=F64), rtol=0, atol=1e-8)
        assert fit.history[-1] < 0.6 * fit.history[0]
    assert fits[1].history[-1] < fits[0].history[-1]


def test_identity_fit_is_pca():
    g = gen(22)
    scales = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25], dtype=F64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=F64))
    y = (torch.randn(1000, 8, generator=g, dtype=F64) * scales) @ rotation.T + 3.0
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(y.numpy(), rowvar=False, bias=True))  # ascending
    for k in (1, 3, 5):
        fit = fit_bregman_pca(transfer("identity"), y, k, iters=5)
        assert fit.history[-1] == pytest.approx(eigenvalues[: 8 - k].sum() / 2, rel=1e-9)
        assert_never_rises(fit.history)
        top = eigenvectors[:, 8 - k:]
        np.testing.assert_allclose(fit.V.numpy() @ fit.V.numpy().T, top @ top.T, atol=1e-8)
        np.testing.assert_allclose(fit.m.numpy(), y.numpy().mean(0), atol=1e-12)
    full = fit_bregman_pca(transfer("identity"), y, 8, iters=1)
    assert full.history[-1] <= 1e-20 * full.history[0]


# --- the coefficient solver -------------------------------------------------------------------------------


def exact_problem(name: str, seed: int, n: int = 200, d: int = 10, k: int = 3):
    """Targets ŷ = m + V c* (+ an arbitrary shift along the ones vector for softmax), so c* is the
    optimum, with V built by hand to satisfy Vᵀ H_F(m) V = I_k."""
    g = gen(seed)
    m = 0.5 * torch.randn(d, generator=g, dtype=F64)
    if name == "identity":
        V = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))[0]
    else:  # H = E Λ Eᵀ on its range (drop the null eigenvector 1/√d), V = E Λ^{−1/2} U, U orthonormal
        m = m - m.mean()
        lam, E = torch.linalg.eigh(softmax_hessian_by_hand(m))
        U = torch.linalg.qr(torch.randn(d - 1, k, generator=g, dtype=F64))[0]
        V = (E[:, 1:] / lam[1:].sqrt()) @ U
    c_star = 0.5 * torch.randn(n, k, generator=g, dtype=F64)
    y = m + c_star @ V.T
    if name == "softmax":
        y = y + 5.0 * torch.randn(n, 1, generator=g, dtype=F64)
    return transfer(name), m, V, y, c_star


@pytest.mark.parametrize("name", ["identity", "softmax"])
def test_warm_start_is_exact_for_representable_targets(name):
    tr, m, V, y, c_star = exact_problem(name, 30)
    c0 = warm_start(tr, m, V, y)
    torch.testing.assert_close(c0, c_star, rtol=0, atol=1e-12)
    torch.testing.assert_close(solve_coefficients(tr, m, V, y, c0=c0, iters=5), c_star, rtol=0, atol=1e-12)


def test_newton_recovers_known_softmax_codes_from_a_wrong_start():
    tr, m, V, y, c_star = exact_problem("softmax", 31)
    c0 = c_star + 0.1 * torch.randn(c_star.shape, generator=gen(32), dtype=F64)
    assert (c0 - c_star).abs().max() > 0.25
    torch.testing.assert_close(solve_coefficients(tr, m, V, y, c0=c0, iters=5), c_star, rtol=0, atol=1e-6)
    # the damping is the one asked for: a huge one leaves only steps of about g / λ
    stiff = solve_coefficients(tr, m, V, y, c0=c0, iters=5, damping=1e6)
    assert 0 < (stiff - c0).abs().max() < 1e-5


def test_newton_recovers_known_identity_codes_where_the_warm_start_is_wrong():
    tr, m, V, y, c_orthonormal = exact_problem("identity", 33)
    mix = torch.tensor([[1.0, 0.4, 0.0], [0.0, 0.8, -0.3], [0.2, 0.0, 1.5]], dtype=F64)
    V_skew = V @ mix                                              # Vᵀ H V = mixᵀ mix, not I
    c_star = torch.linalg.solve(mix, c_orthonormal.T).T           # V_skew c* = V c_orthonormal
    assert (warm_start(tr, m, V_skew, y) - c_star).abs().max() > 0.1
    # each damped step leaves λ/(σ² + λ) ≤ 1e-3·… of the error: 5 steps reach round-off
    torch.testing.assert_close(solve_coefficients(tr, m, V_skew, y, iters=5), c_star, rtol=0, atol=1e-10)


def test_solver_never_worse_than_its_start_on_peaked_targets(fits):
    tr, fit = SOFTMAX, fits[2]
    y = low_rank_logits(500, D, rank=10, seed=31, scale=12.0)  # peaked, far from rank 2
    c0 = warm_start(tr, fit.m, fit.V, y)
    kl = lambda c: tr.divergence(fit.m + c @ fit.V.T, y)  # noqa: E731
    c = solve_coefficients(tr, fit.m, fit.V, y, c0=c0, iters=5)
    assert torch.all(kl(c) <= kl(c0)) and kl(c).mean() < 0.9 * kl(c0).mean()
    default = solve_coefficients(tr, fit.m, fit.V, y, iters=5)  # starts from the better of c0 and 0
    assert torch.all(kl(default) <= torch.minimum(kl(c0), kl(torch.zeros_like(c0))))


def test_solver_on_float32_under_no_grad():
    tr, m, V, y, c_star = exact_problem("softmax", 34)
    with torch.no_grad():
        c = solve_coefficients(tr, m.float(), V.float(), y.float())
    assert c.dtype == torch.float32 and not c.requires_grad
    torch.testing.assert_close(c, c_star.float(), rtol=0, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_solver_on_cuda_matches_cpu(fits, logits):
    fit = fits[5]
    on_cpu = solve_coefficients(SOFTMAX, fit.m.float(), fit.V.float(), logits.float())
    on_gpu = solve_coefficients(SOFTMAX, fit.m.float().cuda(), fit.V.float().cuda(), logits.float().cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-5)


# --- the imported layer --------------------------------------------------------------------------------------


def test_imported_layer_is_frozen_and_differentiable_in_its_input(fits):
    fit = fits[5]
    layer = ImportedLayer.from_fit(fit)
    assert [(n, p.requires_grad, p.dtype) for n, p in layer.named_parameters()] == [
        ("m", False, torch.float32), ("V", False, torch.float32)]
    assert sum(p.numel() for p in layer.parameters()) == D + D * 5
    c = torch.randn(7, 5, generator=gen(40), requires_grad=True)
    z = layer(c)
    torch.testing.assert_close(z, fit.m.float() + c.detach() @ fit.V.float().T)
    torch.testing.assert_close(layer.activation(c), torch.softmax(z, -1))
    target = torch.softmax(torch.randn(7, D, generator=gen(41)), -1)
    F.kl_div(torch.log_softmax(z, -1), target, reduction="batchmean").backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert layer.m.grad is None and layer.V.grad is None
