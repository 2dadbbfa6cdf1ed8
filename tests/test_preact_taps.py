"""Pre-activation taps: the map before each block's closing activation, on every zoo family."""

from __future__ import annotations

import pytest
import torch
from kdbench.models import build_model
from torch import nn


def taps(model_name: str, shape, preact=True, grad=False):
    torch.manual_seed(0)
    model = build_model(model_name, 10, shape[0]).train()
    x = torch.randn(4, *shape)
    if grad:
        return model, model.forward_taps(x, preact=preact)
    with torch.no_grad():
        return model, model.forward_taps(x, preact=preact)


@pytest.mark.parametrize("model_name, shape", [
    ("fmnist_student", (1, 28, 28)),  # Sequential units closing with an in-place ReLU
    ("resnet8x4", (3, 32, 32)),       # basic blocks closing with out_act
    ("vgg8", (3, 32, 32)),
])
def test_post_activation_stage_is_relu_of_its_preactivation(model_name, shape):
    _, t = taps(model_name, shape)
    assert len(t.preact_stages) == len(t.stages)
    for pre, out in zip(t.preact_stages, t.stages):
        assert pre.shape == out.shape
        assert (pre < 0).any(), "a pre-activation map keeps its negative values"
        torch.testing.assert_close(pre.relu(), out, rtol=0, atol=0)


def test_preact_is_a_copy_the_in_place_relu_cannot_overwrite():
    _, t = taps("fmnist_teacher", (1, 28, 28))
    assert t.preact_stages[0].min() < 0 <= t.stages[0].min()


def test_preactivation_network_stage_output_is_its_own_preactivation():
    _, t = taps("wrn_16_1", (3, 32, 32))
    for pre, out in zip(t.preact_stages, t.stages):
        assert torch.equal(pre, out)
        assert (out < 0).any()


def test_blocks_without_activation_pass_their_output():
    model, t = taps("fmnist_student", (1, 28, 28))
    assert model.block_activation(0, 0) is None  # stage 0 opens with its max-pool
    assert torch.equal(t.preact_blocks["stage0.block0"], t.blocks["stage0.block0"])
    assert set(t.preact_blocks) == set(t.blocks)


def test_off_by_default_and_hooks_removed():
    model, t = taps("resnet8x4", (3, 32, 32), preact=False)
    assert t.preact_stages == [] and t.preact_blocks == {}
    assert all(not m._forward_pre_hooks for m in model.modules())
    model(torch.randn(2, 3, 32, 32))
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_gradient_flows_through_the_preactivation_tap():
    model, t = taps("fmnist_student", (1, 28, 28), grad=True)
    t.preact_stages[1].square().mean().backward()
    conv = model.stages[1][1][0]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


class AddOne(nn.Module):
    def forward(self, z):
        return z + 1.0


def test_logits_injection_point_applies_after_the_classifier():
    torch.manual_seed(0)
    model = build_model("fmnist_student", 10, 1)
    x = torch.randn(2, 1, 28, 28)
    before = model(x)
    model.inject("logits", AddOne())
    torch.testing.assert_close(model(x), before + 1.0)
    assert torch.equal(model.forward_taps(x).logits, model(x))
