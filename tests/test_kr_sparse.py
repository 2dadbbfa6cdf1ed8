"""kr_sparse (reconstructed KR): the sparse recoding, the loss and the penalized gradient, on fixed
inputs checked against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kdbench.api.errors import ConfigError
from kdbench.api.method import MethodContext, forward_taps_for
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.methods.kr_sparse import (kr_loss, penalize_gradient, relative_index, site_pairs, sparse_recode,
                                       support_size)
from kdbench.models import build_model
from kdbench.train.teacher import freeze

from tests.contract import FMNIST_TASK, at_epoch


def maps(seed=0, b=3, c=12, h=4, w=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g, dtype=torch.float64),
            torch.randn(b, c, h, w, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("rho, channels, keep", [
    (0.25, 128, 32), (0.25, 10, 3), (0.1, 10, 1), (0.3, 10, 3), (1.0, 7, 7), (0.01, 10, 1), (0.5, 64, 32),
])
def test_support_size_is_ceil_rho_c(rho, channels, keep):
    assert support_size(rho, channels) == keep


@pytest.mark.parametrize("rho", [0.1, 0.25, 0.5, 1.0])
def test_recoding_keeps_exactly_the_top_entries_and_sums_to_one(rho):
    t, _ = maps()
    p = F.softmax(t, dim=1)
    keep = support_size(rho, p.shape[1])
    recoded, mask = sparse_recode(p, keep)
    assert torch.equal(mask.sum(dim=1), torch.full(p.shape[:1] + p.shape[2:], float(keep), dtype=p.dtype))
    torch.testing.assert_close(recoded.sum(dim=1), torch.ones_like(recoded.sum(dim=1)))
    # independently, location by location: the kept set is the top-`keep` by sorting, values rescaled
    flat_p = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])
    flat_r = recoded.permute(0, 2, 3, 1).reshape(-1, p.shape[1])
    for row_p, row_r in zip(flat_p, flat_r):
        order = sorted(range(len(row_p)), key=lambda c: -float(row_p[c]))
        top = set(order[:keep])
        total = sum(float(row_p[c]) for c in top)
        for c in range(len(row_p)):
            expected = float(row_p[c]) / total if c in top else 0.0
            assert math.isclose(float(row_r[c]), expected, rel_tol=1e-12, abs_tol=1e-15)


def test_hand_computed_loss_on_one_location():
    # three channels, τ = 1, ρ = 0.5 → keep 2: teacher logits (2, 1, 0), student logits (0, 0, 0)
    t = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    e = math.e
    p_top = (e**2 / (e**2 + e), e / (e**2 + e))  # renormalised top two
    expected = -(p_top[0] * math.log(1 / 3) + p_top[1] * math.log(1 / 3))  # = log 3
    assert math.isclose(float(kr_loss(s, t, tau=1.0, rho=0.5, eps=0.1)), expected, rel_tol=1e-12)
    assert math.isclose(expected, math.log(3), rel_tol=1e-12)
    # τ = 2 multiplies by τ² and softens both distributions
    p2 = torch.softmax(t.flatten() / 2, 0)[:2]
    p2 = p2 / p2.sum()
    expected2 = 4 * -(p2 * torch.log_softmax(s.flatten() / 2, 0)[:2]).sum()
    assert math.isclose(float(kr_loss(s, t, tau=2.0, rho=0.5, eps=0.1)), float(expected2), rel_tol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_rho_one_eps_one_is_plain_cross_entropy_to_the_teacher(tau):
    t, s0 = maps(seed=1)
    s1 = s0.clone().requires_grad_(True)
    s2 = s0.clone().requires_grad_(True)
    ours = kr_loss(s1, t, tau=tau, rho=1.0, eps=1.0)
    p_t = F.softmax(t / tau, dim=1)
    plain = tau**2 * -(p_t * F.log_softmax(s2 / tau, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=0)
    ours.backward()
    plain.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-15)
    # the closed form of that gradient: τ (softmax(s/τ) − P^T) / (B·H·W)
    n = s0.shape[0] * s0.shape[2] * s0.shape[3]
    torch.testing.assert_close(s1.grad, tau * (F.softmax(s0 / tau, dim=1) - p_t) / n, rtol=1e-10, atol=1e-15)


def test_hook_scales_off_support_gradients_by_eps():
    t, s0 = maps(seed=2)
    rho, eps = 0.25, 0.1
    s_pen = s0.clone().requires_grad_(True)
    s_free = s0.clone().requires_grad_(True)
    kr_loss(s_pen, t, tau=1.0, rho=rho, eps=eps).backward()
    kr_loss(s_free, t, tau=1.0, rho=rho, eps=1.0).backward()  # same loss, no penalty
    _, mask = sparse_recode(F.softmax(t, dim=1), support_size(rho, t.shape[1]))
    on, off = mask.bool(), ~mask.bool()
    torch.testing.assert_close(s_pen.grad[on], s_free.grad[on], rtol=0, atol=0)
    torch.testing.assert_close(s_pen.grad[off], eps * s_free.grad[off], rtol=1e-15, atol=0)
    assert s_free.grad[off].abs().min() > 0  # off-support gradients exist: the check is not vacuous


def test_penalize_gradient_is_identity_forward_and_ignores_no_grad_tensors():
    z = torch.randn(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    out = penalize_gradient(z, mask, 0.5)
    assert out is z
    (out * torch.arange(6.0).view(2, 3)).sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, 0.5, 1.0], [1.5, 4.0, 5.0]]))
    frozen = torch.randn(2, 3)
    assert penalize_gradient(frozen, mask, 0.5) is frozen  # nothing to hook, nothing raised


def test_relative_depth_pairing():
    assert [relative_index(i, 3, 3) for i in range(3)] == [0, 1, 2]
    assert [relative_index(i, 1, 5) for i in range(1)] == [4]
    assert [relative_index(i, 2, 5) for i in range(2)] == [1, 4]
    assert site_pairs((1, 1, 1), (5, 5, 5), "stage") == [("stage0", "stage0"), ("stage1", "stage1"),
                                                          ("stage2", "stage2")]
    assert site_pairs((1, 2), (3, 4), "block") == [
        ("stage0.block0", "stage0.block2"), ("stage1.block0", "stage1.block1"),
        ("stage1.block1", "stage1.block3"),
    ]


def build(**overrides):
    torch.manual_seed(0)
    teacher = freeze(build_model("fmnist_teacher", 10, 1))
    student = build_model("fmnist_student", 10, 1)
    shape = (1, 28, 28)
    ctx = MethodContext(student=student, teacher=teacher, student_shapes=student.tap_shapes(shape),
                        teacher_shapes=teacher.tap_shapes(shape), num_classes=10, epochs=2,
                        steps_per_epoch=1)
    cls = get_method("kr_sparse")
    return cls, student, teacher, cls(resolve_hyperparameters("kr_sparse", overrides, FMNIST_TASK), ctx)


def test_stage_level_sites_read_the_teachers_preactivation():
    cls, student, teacher, method = build()
    assert [a[0].in_channels for a in method.adapters] == [8, 16, 32]
    assert [a[0].out_channels for a in method.adapters] == [32, 64, 128]
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        t = forward_taps_for(teacher, x, cls.teacher_taps)
    s = forward_taps_for(student, x, cls.student_taps)
    terms = method.losses(s, t, y, progress=at_epoch(0))
    assert set(terms) == {"ce", "kr"}
    # recomputed by hand from the pre-activation maps: same value
    expected = sum(
        kr_loss(a(s.stages[g]), t.preact_stages[g], 1.0, 0.25, 0.1) for g, a in enumerate(method.adapters)
    )
    torch.testing.assert_close(terms["kr"], expected)
    # teacher_map "output" reads the post-ReLU maps instead. The renormalised top-k depends only on
    # the kept logits, so the two agree wherever at least ⌈ρC⌉ channels are positive (here: all)...
    *_, out_method = build(teacher_map="output")
    out_method.load_state_dict(method.state_dict())
    assert all(((t.preact_stages[g] > 0).sum(dim=1) >= k).all() for g, k in enumerate((8, 16, 32)))
    torch.testing.assert_close(out_method.losses(s, t, y, progress=at_epoch(0))["kr"], terms["kr"])
    # ...and differ once the support reaches negative channels (ρ = 1)
    values = {}
    for teacher_map in ("preact", "output"):
        *_, m = build(teacher_map=teacher_map, rho=1.0)
        m.load_state_dict(method.state_dict())
        values[teacher_map] = m.losses(s, t, y, progress=at_epoch(0))["kr"]
    expected_out = sum(
        kr_loss(a(s.stages[g]), t.stages[g], 1.0, 1.0, 0.1) for g, a in enumerate(method.adapters)
    )
    torch.testing.assert_close(values["output"], expected_out)
    assert not torch.isclose(values["output"], values["preact"])


def test_block_level_and_kd_term():
    cls, student, teacher, method = build(level="block", gamma=0.5)
    assert len(method.adapters) == 5  # 2 + 2 + 1 blocks on the Fashion-MNIST pair
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        t = forward_taps_for(teacher, x, cls.teacher_taps)
    terms = method.losses(forward_taps_for(student, x, cls.student_taps), t, y, progress=at_epoch(0))
    assert set(terms) == {"ce", "kr", "kd"}
    assert method.record_extras()["sites"][0] == {"student": "stage0.block0", "teacher": "stage0.block0",
                                                  "channels": 32, "support": 8}


@pytest.mark.parametrize("overrides, message", [
    ({"rho": 0.0}, "rho"), ({"rho": 1.5}, "rho"), ({"eps": -0.1}, "eps"), ({"tau": 0.0}, "tau"),
    ({"level": "layer"}, "level"), ({"teacher_map": "post"}, "teacher_map"), ({"beta": -1.0}, "beta"),
])
def test_bad_hyperparameters_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_hyperparameters("kr_sparse", overrides, FMNIST_TASK)
