"""vanilla_kd's loss on fixed logits against values derived by hand."""

import math

import pytest
import torch
from kdbench.api.registry import get_method
from kdbench.api.tapped import Taps
from kdbench.methods.vanilla_kd import kd_loss

from tests.contract import at_epoch


def test_kd_term_matches_hand_derivation():
    # Row 1: z_t/T = [ln 3, 0] -> p_t = [3/4, 1/4]; z_s = 0 -> p_s = [1/2, 1/2].
    #   KL(p_t || p_s) = 3/4 ln(3/2) + 1/4 ln(1/2).
    # Row 2: both uniform -> KL = 0. batchmean halves the sum; T^2 = 4 multiplies it.
    T = 2.0
    z_t = torch.tensor([[2 * math.log(3.0), 0.0], [0.0, 0.0]])
    z_s = torch.zeros(2, 2)
    kl_row1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl_row1 == pytest.approx(0.1308120, abs=1e-6)
    expected = T * T * (kl_row1 + 0.0) / 2
    assert kd_loss(z_s, z_t, T).item() == pytest.approx(expected, rel=1e-6)


def test_vanilla_kd_total_with_crd_defaults():
    # gamma * CE + alpha * T^2 * KL, with CE([0,0], y=0) = ln 2.
    cls = get_method("vanilla_kd")
    assert cls.defaults == {"T": 4.0, "gamma": 0.1, "alpha": 0.9}
    T = 4.0
    z_t = torch.tensor([[T * math.log(3.0), 0.0]])
    z_s = torch.zeros(1, 2)
    y = torch.tensor([0])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expected = {"ce": 0.1 * math.log(2.0), "kd": 0.9 * T * T * kl}

    def taps(logits):
        return Taps(stages=[], prepool=None, pooled=None, logits=logits)

    method = cls(dict(cls.defaults), ctx=None)  # the loss reads only hyperparameters and logits
    terms = method.losses(taps(z_s), taps(z_t), y, progress=at_epoch(0))
    assert set(terms) == {"ce", "kd"}
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v, rel=1e-6)


def test_kd_gradient_is_softened_difference():
    # d/dz_s [T^2 KL(p_t || softmax(z_s/T))] = T (p_s - p_t) per row, divided by batch size.
    T = 3.0
    z_s = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    z_t = torch.tensor([[0.3, 0.1, -1.0]])
    kd_loss(z_s, z_t, T).backward()
    p_s = torch.softmax(z_s.detach() / T, 1)
    p_t = torch.softmax(z_t / T, 1)
    assert torch.allclose(z_s.grad, T * (p_s - p_t), atol=1e-6)
