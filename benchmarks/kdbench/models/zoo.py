"""The built-in networks by name: one row each, the class and its arguments.

The CIFAR rows are the CRD benchmark's (RepDistiller's names and shapes); the Fashion-MNIST pair is
the default suite's. ``build(name, num_classes, in_channels)`` makes a fresh, initialised network.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from kdbench.api.tapped import TappedModel
from kdbench.models.cifar import VGG_CONFIGS, CifarResNet, CifarVGG, WideResNet
from kdbench.models.small import SmallCNN

NARROW = (16, 16, 32, 64)  # CIFAR ResNets: stem and stage widths
WIDE_X4 = (32, 64, 128, 256)

#: name -> a builder taking ``num_classes, in_channels``
ZOO: dict[str, Callable[[int, int], TappedModel]] = {
    **{f"resnet{d}": partial(CifarResNet, d, NARROW) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": partial(CifarResNet, 8, WIDE_X4),
    "resnet32x4": partial(CifarResNet, 32, WIDE_X4),
    **{f"wrn_{d}_{k}": partial(WideResNet, d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{name: partial(CifarVGG, VGG_CONFIGS[name]) for name in ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")},
    "fmnist_teacher": partial(SmallCNN, (32, 64, 128), 1),
    "fmnist_student": partial(SmallCNN, (8, 16, 32), 1),
}
