"""kernel_nystrom: L_KDA on fixed tensors against a hand computation, centres that lag one epoch,
the budget-scaled warm-up, and a finite loss while the centres are still zero."""

from __future__ import annotations

import math

import pytest
import torch
from kdbench.api.errors import ConfigError
from kdbench.api.method import MethodContext
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.api.tapped import Taps, TapShapes

from tests.contract import FMNIST_TASK, at_epoch

KDA = get_method("kernel_nystrom")
L = 3  # classes


def shapes(d: int) -> TapShapes:
    return TapShapes(stages=(), prepool=(d, 1, 1), pooled=(d,), logits=(L,), blocks_per_stage=())


def make(epochs: int = 120, d_s: int = 2, d_t: int = 3, **hp) -> KDA:
    ctx = MethodContext(
        student=None, teacher=None, student_shapes=shapes(d_s), teacher_shapes=shapes(d_t),
        num_classes=L, epochs=epochs, steps_per_epoch=1,
    )
    method = KDA(resolve_hyperparameters("kernel_nystrom", hp, FMNIST_TASK), ctx)
    method.train()
    return method


def taps(pooled, logits=None) -> Taps:
    pooled = torch.tensor(pooled)
    logits = torch.zeros(len(pooled), L) if logits is None else torch.tensor(logits)
    return Taps(stages=[], prepool=None, pooled=pooled, logits=logits)


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def hand_kda(S, T, M_S, M_T) -> float:
    """Σ_{b,l} huber(S_b·M_S,l − T_b·M_T,l) / ‖T M_Tᵀ‖_F, by loops."""
    P_S = [[sum(a * m for a, m in zip(s, ms)) for ms in M_S] for s in S]
    P_T = [[sum(a * m for a, m in zip(t, mt)) for mt in M_T] for t in T]
    num = sum(huber(ps - pt) for rs, rt in zip(P_S, P_T) for ps, pt in zip(rs, rt))
    return num / math.sqrt(sum(pt * pt for row in P_T for pt in row))


def hand_ce(logits, y) -> float:
    return sum(math.log(sum(math.exp(v) for v in z)) - z[c] for z, c in zip(logits, y)) / len(y)


M_S = [[1.0, 0.0], [0.5, 2.0], [0.0, 0.0]]
M_T = [[0.2, 0.1, 0.0], [1.0, 0.0, 0.5], [0.3, 0.3, 0.3]]
S = [[0.5, 1.0], [2.0, 0.25]]
T = [[1.0, 2.0, 0.0], [0.5, 0.0, 4.0]]


def set_centres(method, layer, m_s, m_t):
    getattr(method, f"centres_s_{layer}").copy_(torch.tensor(m_s))
    getattr(method, f"centres_t_{layer}").copy_(torch.tensor(m_t))


def test_defaults_are_the_released_recipe():
    assert KDA.defaults == {"alpha": 0.04, "warmup_fraction": 5 / 120, "feature": "pooled"}
    assert not KDA.reconstructed


def test_pooled_loss_matches_hand_computation():
    method = make()
    set_centres(method, "pooled", M_S, M_T)
    s_logits, y = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], [0, 2]
    terms = method.losses(taps(S, s_logits), taps(T), torch.tensor(y), progress=at_epoch(50))
    assert set(terms) == {"ce", "kda"}
    expected = 0.04 * hand_kda(S, T, M_S, M_T)
    # Both Huber branches are exercised: the differences include |x| < 1 and |x| > 1.
    assert expected > 0
    assert terms["kda"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(hand_ce(s_logits, y), rel=1e-5)


def test_combo_sums_the_two_layers():
    zs = [[1.0, -1.0, 0.0], [0.0, 2.0, 1.0]]
    zt = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    m_zs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]
    m_zt = [[2.0, -1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]
    method = make(feature="combo")
    set_centres(method, "pooled", M_S, M_T)
    set_centres(method, "logits", m_zs, m_zt)
    terms = method.losses(taps(S, zs), taps(T, zt), torch.tensor([0, 1]), progress=at_epoch(50))
    expected = 0.04 * (hand_kda(S, T, M_S, M_T) + hand_kda(zs, zt, m_zs, m_zt))
    assert terms["kda"].item() == pytest.approx(expected, rel=1e-5)
    logits_only = make(feature="logits")
    set_centres(logits_only, "logits", m_zs, m_zt)
    terms = logits_only.losses(taps(S, zs), taps(T, zt), torch.tensor([0, 1]), progress=at_epoch(50))
    assert terms["kda"].item() == pytest.approx(0.04 * hand_kda(zs, zt, m_zs, m_zt), rel=1e-5)


def test_unknown_feature_is_an_error():
    with pytest.raises(ConfigError):
        make(feature="middle")


def test_centres_lag_one_epoch():
    method = make()
    y = torch.tensor([0, 1, 0])
    # Epoch 0: two batches; class 2 never appears.
    b1 = ([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]], [[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    b2 = ([[0.0, 6.0]], [[2.0, 3.0, 1.0]])
    method.losses(taps(b1[0]), taps(b1[1]), y, progress=at_epoch(0))
    method.losses(taps(b2[0]), taps(b2[1]), torch.tensor([0]), progress=at_epoch(0))
    assert torch.all(method.centres_s_pooled == 0) and torch.all(method.centres_t_pooled == 0)
    method.on_epoch_end(0)
    # Class 0: rows (1,2), (5,4), (0,6) -> mean (2, 4); class 1: (3, 0). Teacher likewise.
    expected_s = [[2.0, 4.0], [3.0, 0.0], [0.0, 0.0]]
    expected_t = [[2.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert torch.allclose(method.centres_s_pooled, torch.tensor(expected_s))
    assert torch.allclose(method.centres_t_pooled, torch.tensor(expected_t))
    assert torch.all(method.counts == 0) and torch.all(method.sums_s_pooled == 0)

    # Epoch 1 uses epoch 0's centres throughout; evaluation-mode calls do not accumulate.
    before = method.losses(taps([[1.0, 1.0]]), taps([[1.0, 1.0, 1.0]]), torch.tensor([2]), progress=at_epoch(1))
    method.eval()
    method.losses(taps([[9.0, 9.0]]), taps([[9.0, 9.0, 9.0]]), torch.tensor([1]), progress=at_epoch(1))
    method.train()
    again = method.losses(taps([[1.0, 1.0]]), taps([[1.0, 1.0, 1.0]]), torch.tensor([2]), progress=at_epoch(1))
    assert torch.equal(before["kda"], again["kda"])
    method.on_epoch_end(1)
    # Only class 2 was seen in training mode during epoch 1; classes 0 and 1 keep their centres.
    assert torch.allclose(method.centres_s_pooled, torch.tensor([[2.0, 4.0], [3.0, 0.0], [1.0, 1.0]]))
    assert torch.allclose(method.centres_t_pooled,
                          torch.tensor([[2.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))


def test_centres_carry_no_gradient_and_student_features_are_detached():
    method = make()
    s = torch.tensor([[1.0, 2.0]], requires_grad=True)
    method.losses(Taps([], None, s, torch.zeros(1, L, requires_grad=True)), taps([[1.0, 0.0, 0.0]]),
                  torch.tensor([0]), progress=at_epoch(0))
    method.on_epoch_end(0)
    assert not any(b.requires_grad for b in method.buffers())
    terms = method.losses(Taps([], None, s, torch.zeros(1, L, requires_grad=True)),
                          taps([[1.0, 0.0, 0.0]]), torch.tensor([0]), progress=at_epoch(10))
    terms["kda"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("epochs,warmup", [(120, 5), (240, 10), (3, 1), (4, 1), (1, 1), (72, 3)])
def test_warmup_is_a_fraction_of_the_budget_and_at_least_one_epoch(epochs, warmup):
    method = make(epochs=epochs)
    assert method.record_extras()["warmup_epochs"] == warmup
    set_centres(method, "pooled", M_S, M_T)
    y = torch.tensor([0, 1])
    for epoch in range(epochs):
        kda = method.losses(taps(S), taps(T), y, at_epoch(epoch))["kda"].item()
        if epoch < warmup:
            assert kda == 0.0
        else:
            assert kda == pytest.approx(0.04 * hand_kda(S, T, M_S, M_T), rel=1e-5)


def test_warmup_fraction_zero_still_waits_for_the_first_centres():
    assert make(epochs=120, warmup_fraction=0.0).record_extras()["warmup_epochs"] == 1


def test_finite_at_epoch_zero_with_zero_centres():
    method = make()
    s = torch.tensor(S, requires_grad=True)
    terms = method.losses(Taps([], None, s, torch.zeros(2, L, requires_grad=True)), taps(T),
                          torch.tensor([0, 1]), progress=at_epoch(0))
    assert all(math.isfinite(v.item()) for v in terms.values()) and terms["kda"].item() == 0.0
    # Past the warm-up with centres never formed (P_T = 0, ‖P_T‖_F = 0): still finite, gradient too.
    terms = method.losses(Taps([], None, s, torch.zeros(2, L, requires_grad=True)), taps(T),
                          torch.tensor([0, 1]), progress=at_epoch(5))
    method.zero_grad()
    sum(terms.values()).backward()
    assert terms["kda"].item() == 0.0 and torch.isfinite(s.grad).all()


def test_state_round_trip_mid_epoch_gives_the_same_centres():
    a = make()
    a.losses(taps(S), taps(T), torch.tensor([0, 2]), progress=at_epoch(0))
    state = a.state_dict()
    assert {"centres_s_pooled", "centres_t_pooled", "sums_s_pooled", "sums_t_pooled", "counts"} <= set(state)
    b = make()
    b.load_state_dict(state)
    a.on_epoch_end(0)
    b.on_epoch_end(0)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_kernel_cost_benchmark_runs_the_plugin_through_its_api(capsys):
    from kdbench.cli import main

    assert main(["bench", "kernel-cost", "--batches", "8", "16", "32", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "nyström L=10 ms" in out and out.count("time ∝ B^k") == 2
