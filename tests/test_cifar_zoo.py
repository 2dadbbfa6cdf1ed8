"""The CIFAR zoo must be the CRD reference networks, with taps where methods expect them."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from kdbench.models import TappedModel, build_model, model_names
from torch import nn

NUM_CLASSES = 100

# Exact parameter counts at 100 classes and 3 input channels, from the RepDistiller definitions
# (models/resnet.py, wrn.py, vgg.py). They are reproduced below by `_formula_count`, which sums
# layer sizes from the reference's configuration tables without touching our model code, and were
# also checked once against the reference modules themselves (same parameter shapes in the same
# order, and identical outputs after copying weights across).
EXPECTED_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
}

# Sizes in millions as printed in the CRD paper's tables.
PUBLISHED_MILLIONS = {
    "resnet8": 0.08,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.24,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.97,
    "vgg13": 9.46,
}


def _conv(cin: int, cout: int, k: int = 3, bias: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _resnet_count(depth: int, widths: tuple[int, int, int, int]) -> int:
    n = (depth - 2) // 6
    total = _conv(3, widths[0]) + _bn(widths[0])
    cin = widths[0]
    for g, width in enumerate(widths[1:]):
        for j in range(n):
            total += _conv(cin, width) + _bn(width) + _conv(width, width) + _bn(width)
            if cin != width or (g > 0 and j == 0):  # projection shortcut: 1x1 conv + BN
                total += _conv(cin, width, k=1) + _bn(width)
            cin = width
    return total + widths[3] * NUM_CLASSES + NUM_CLASSES


def _wrn_count(depth: int, k: int) -> int:
    n = (depth - 4) // 6
    total = _conv(3, 16)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(cin) + _conv(cin, width) + _bn(width) + _conv(width, width)
            if cin != width:  # projection shortcut: bare 1x1 conv
                total += _conv(cin, width, k=1)
            cin = width
    return total + _bn(64 * k) + 64 * k * NUM_CLASSES + NUM_CLASSES


def _vgg_count(blocks: list[list[int]]) -> int:
    total, cin = 0, 3
    for block in blocks:
        for width in block:
            total += _conv(cin, width, bias=True) + _bn(width)
            cin = width
    return total + 512 * NUM_CLASSES + NUM_CLASSES


def _formula_count(name: str) -> int:
    narrow, x4 = (16, 16, 32, 64), (32, 64, 128, 256)
    vgg_cfg = {  # the reference's configurations S, A, B, D, E
        "vgg8": [[64], [128], [256], [512], [512]],
        "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
        "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
        "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
        "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
    }
    if name in vgg_cfg:
        return _vgg_count(vgg_cfg[name])
    if name.startswith("wrn_"):
        _, depth, k = name.split("_")
        return _wrn_count(int(depth), int(k))
    if name.endswith("x4"):
        return _resnet_count(int(name[len("resnet") : -2]), x4)
    return _resnet_count(int(name[len("resnet") :]), narrow)


@cache
def _model(name: str) -> TappedModel:
    """Each model is built once per test session; tests may switch its mode but not its weights."""
    torch.manual_seed(0)
    return build_model(name, num_classes=NUM_CLASSES)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_cifar_models_registered() -> None:
    assert set(EXPECTED_PARAMS) <= set(model_names())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_count_matches_reference(name: str) -> None:
    assert _formula_count(name) == EXPECTED_PARAMS[name]
    assert _n_params(_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_param_count_matches_published_size(name: str) -> None:
    assert abs(EXPECTED_PARAMS[name] / 1e6 - PUBLISHED_MILLIONS[name]) <= 0.01 + 1e-9


def _expected_layout(name: str) -> tuple[tuple[int, int, int], int]:
    """(pre-pool shape, number of stages) for a 3x32x32 input."""
    if name.startswith("vgg"):
        return (512, 4, 4), 5
    if name.startswith("wrn_"):
        return (64 * int(name.split("_")[2]), 8, 8), 3
    return ((256 if name.endswith("x4") else 64), 8, 8), 3


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_tap_shapes(name: str) -> None:
    shapes = _model(name).tap_shapes((3, 32, 32))
    prepool, n_stages = _expected_layout(name)
    assert shapes.prepool == prepool
    assert len(shapes.stages) == n_stages
    assert shapes.stages[-1] == prepool  # no layer between the last stage and pooling changes shape
    assert shapes.pooled == (prepool[0],)
    assert shapes.logits == (NUM_CLASSES,)


@pytest.mark.parametrize("name", ["wrn_16_1", "wrn_40_2"])
def test_wrn_prepool_is_the_activated_pooled_map(name: str) -> None:
    model = _model(name).eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.final.modules())
    with torch.no_grad():
        taps = model.forward_taps(torch.randn(2, 3, 32, 32))
    assert taps.prepool.min() >= 0
    assert taps.stages[-1].min() < 0  # the last stage ends without activation; final supplies it
    torch.testing.assert_close(taps.pooled, taps.prepool.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8"])
def test_single_channel_input(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=1)
    assert model.forward(torch.randn(2, 1, 32, 32)).shape == (2, 10)
