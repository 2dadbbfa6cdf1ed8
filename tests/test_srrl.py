"""srrl: losses on fixed tensors against a hand computation, connector shapes on the CIFAR zoo pairs,
the released code's init, and a teacher head that gradients pass through but never reach."""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from kdbench.api.method import MethodContext
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.api.tapped import Taps, TapShapes
from kdbench.models import build_model
from torch import nn

from tests.contract import FMNIST_TASK, at_epoch

SRRL = get_method("srrl")


def shapes(prepool: tuple[int, int, int], classes: int) -> TapShapes:
    return TapShapes(stages=(), prepool=prepool, pooled=prepool[:1], logits=(classes,), blocks_per_stage=())


def make(prepool_s, prepool_t, classes, head: nn.Linear, **hp) -> SRRL:
    ctx = MethodContext(
        student=None, teacher=SimpleNamespace(classifier=head),
        student_shapes=shapes(prepool_s, classes), teacher_shapes=shapes(prepool_t, classes),
        num_classes=classes, epochs=3, steps_per_epoch=1,
    )
    return SRRL(resolve_hyperparameters("srrl", hp, FMNIST_TASK), ctx)


def taps(prepool=None, pooled=None, logits=None) -> Taps:
    return Taps(stages=[], prepool=prepool, pooled=pooled, logits=logits)


def test_defaults_are_the_official_recipe():
    assert SRRL.defaults == {"fm_weight": 1.0, "sr_weight": 1.0, "kd_weight": 0.0, "T": 4.0}
    assert not SRRL.reconstructed


def test_connector_init_as_released_code():
    torch.manual_seed(0)
    head = nn.Linear(256, 10)
    method = make((64, 8, 8), (256, 8, 8), 10, head)
    conv, bn, relu = method.connector
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert conv.weight.shape == (256, 64, 1, 1)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=0.01)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    assert isinstance(bn, nn.BatchNorm2d) and torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert isinstance(relu, nn.ReLU)
    assert [n for n, _ in method.named_parameters()] == ["connector.0.weight", "connector.1.weight",
                                                          "connector.1.bias"]


def test_losses_match_hand_computation():
    # Student map B=2, C_s=2, 2x2; connector to C_t=3; the teacher head maps 3 -> 2 classes.
    xs = [
        [[[1.0, 2.0], [0.0, -1.0]], [[0.5, 0.5], [1.5, -2.0]]],
        [[[-1.0, 0.0], [3.0, 1.0]], [[2.0, -0.5], [0.0, 1.0]]],
    ]
    wc = [[1.0, -1.0], [0.5, 2.0], [-1.5, 0.25]]  # conv: C_t x C_s
    wt = [[0.2, -0.4, 1.0], [-0.3, 0.6, 0.5]]
    bt = [0.1, -0.2]
    t_pooled = [[0.3, 0.1, 0.7], [1.2, 0.0, 0.4]]
    t_logits = [[1.0, -0.5], [0.2, 0.8]]
    s_logits = [[0.5, -0.5], [2.0, 1.0]]
    y = [0, 1]
    B, C_s, C_t, H, W, K = 2, 2, 3, 2, 2, 2

    u = [[[[sum(wc[c][k] * xs[b][k][h][w] for k in range(C_s)) for w in range(W)] for h in range(H)]
          for c in range(C_t)] for b in range(B)]
    g = [[0.0] * C_t for _ in range(B)]
    for c in range(C_t):  # BatchNorm in train mode: batch statistics over (b, h, w), biased variance
        vals = [u[b][c][h][w] for b in range(B) for h in range(H) for w in range(W)]
        mu = sum(vals) / len(vals)
        var = sum((v - mu) ** 2 for v in vals) / len(vals)
        for b in range(B):
            act = [max((u[b][c][h][w] - mu) / math.sqrt(var + 1e-5), 0.0) for h in range(H) for w in range(W)]
            g[b][c] = sum(act) / (H * W)
    fm = sum((g[b][c] - t_pooled[b][c]) ** 2 for b in range(B) for c in range(C_t)) / (B * C_t)
    z = [[sum(wt[k][c] * g[b][c] for c in range(C_t)) + bt[k] for k in range(K)] for b in range(B)]
    sr = sum((z[b][k] - t_logits[b][k]) ** 2 for b in range(B) for k in range(K)) / (B * K)
    ce = sum(math.log(sum(math.exp(v) for v in s_logits[b])) - s_logits[b][y[b]] for b in range(B)) / B

    head = nn.Linear(C_t, K)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(wt))
        head.bias.copy_(torch.tensor(bt))
    method = make((C_s, H, W), (C_t, 4, 4), K, head)
    with torch.no_grad():
        method.connector[0].weight.copy_(torch.tensor(wc)[:, :, None, None])
    method.train()
    terms = method.losses(
        taps(prepool=torch.tensor(xs), logits=torch.tensor(s_logits)),
        taps(pooled=torch.tensor(t_pooled), logits=torch.tensor(t_logits)),
        torch.tensor(y), progress=at_epoch(0),
    )
    assert set(terms) == {"ce", "fm", "sr"}
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["fm"].item() == pytest.approx(fm, rel=1e-5)
    assert terms["sr"].item() == pytest.approx(sr, rel=1e-5)


def test_optional_kd_term():
    # z_t / T = [ln 3, 0], z_s = 0: T^2 * KL([3/4, 1/4] || [1/2, 1/2]), one row.
    T = 4.0
    head = nn.Linear(3, 2)
    method = make((2, 2, 2), (3, 2, 2), 2, head, kd_weight=0.5)
    method.train()
    z_t = torch.tensor([[T * math.log(3.0), 0.0], [T * math.log(3.0), 0.0]])
    terms = method.losses(
        taps(prepool=torch.randn(2, 2, 2, 2), logits=torch.zeros(2, 2)),
        taps(pooled=torch.rand(2, 3), logits=z_t), torch.tensor([0, 1]), progress=at_epoch(0),
    )
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert terms["kd"].item() == pytest.approx(0.5 * T * T * kl, rel=1e-5)


@cache
def zoo_shapes(name: str) -> tuple[TapShapes, nn.Linear]:
    torch.manual_seed(0)
    model = build_model(name, 100)
    return model.tap_shapes((3, 32, 32)), model.classifier


@pytest.mark.parametrize("teacher,student", [
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
    ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"),
])
def test_connector_shapes_on_cifar_pairs(teacher, student):
    t_shapes, head = zoo_shapes(teacher)
    s_shapes, _ = zoo_shapes(student)
    ctx = MethodContext(
        student=None, teacher=SimpleNamespace(classifier=head), student_shapes=s_shapes,
        teacher_shapes=t_shapes, num_classes=100, epochs=240, steps_per_epoch=1,
    )
    method = SRRL(resolve_hyperparameters("srrl", None, FMNIST_TASK), ctx)
    c_s, h_s, w_s = s_shapes.prepool
    out = method.connector(torch.randn(4, c_s, h_s, w_s))
    assert out.shape == (4, t_shapes.prepool[0], h_s, w_s)
    assert out.mean(dim=(2, 3)).shape[1:] == t_shapes.pooled
    terms = method.losses(
        taps(prepool=torch.randn(4, *s_shapes.prepool), logits=torch.randn(4, 100)),
        taps(pooled=torch.rand(4, *t_shapes.pooled), logits=torch.randn(4, 100)),
        torch.arange(4), progress=at_epoch(0),
    )
    assert all(torch.isfinite(v) for v in terms.values())


def test_gradient_passes_through_the_teacher_head_but_never_into_it():
    # The head is deliberately left trainable: the method must still not touch its weights.
    torch.manual_seed(0)
    head = nn.Linear(6, 5)
    method = make((4, 3, 3), (6, 2, 2), 5, head)
    method.train()
    prepool = torch.randn(8, 4, 3, 3, requires_grad=True)
    terms = method.losses(
        taps(prepool=prepool, logits=torch.randn(8, 5, requires_grad=True)),
        taps(pooled=torch.rand(8, 6), logits=torch.randn(8, 5)), torch.arange(8) % 5, progress=at_epoch(0),
    )
    terms["sr"].backward()
    assert head.weight.grad is None and head.bias.grad is None
    assert prepool.grad is not None and prepool.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert not {id(p) for p in head.parameters()} & {id(p) for p in method.parameters()}
    assert not any("classifier" in k for k in method.state_dict())
