"""The kernel gap against the explicit n×n kernel matrices."""

import pytest
import torch
from kdbench.train.diagnostics import kernel_gap


def test_kernel_gap_equals_explicit_frobenius_ratio():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, 4, generator=g, dtype=torch.float64)
    t = torch.randn(50, 7, generator=g, dtype=torch.float64)
    k_s, k_t = s @ s.T, t @ t.T
    explicit = (torch.linalg.norm(k_s - k_t) / torch.linalg.norm(k_t)).item()
    assert kernel_gap(s, t) == pytest.approx(explicit, rel=1e-9)


def test_kernel_gap_is_zero_for_rotated_features():
    # K = F Fᵀ is invariant to an orthogonal change of basis: the gap must vanish.
    g = torch.Generator().manual_seed(1)
    t = torch.randn(30, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert kernel_gap(t @ q, t) == pytest.approx(0.0, abs=1e-6)
