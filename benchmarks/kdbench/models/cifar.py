"""CIFAR networks of the CRD benchmark (RepDistiller ``models/resnet.py``, ``wrn.py``, ``vgg.py``).

Architectures, parameter counts and initialisations match the CRD reference so that results are
comparable with the published tables; only the layout is ours (see :mod:`kdbench.api.tapped`),
which fixes which tensors are exposed as taps:

* ResNet (post-activation): stem = conv+BN+ReLU; stages = the reference's ``layer1..3``; each block
  ends with its ReLU. Every depth uses the basic block, as the reference does.
* WRN (pre-activation): stem = a bare conv; stages = ``block1..3``; ``final`` = the last BN+ReLU, so
  the pre-pool tap is the activated map that is actually pooled.
* VGG (always with BatchNorm, the reference's ``vgg*_bn``): stem is empty; stage g = ``block g``,
  one element per conv+BN+ReLU unit, and the max-pool that precedes a block in the reference is the
  first layer of that block's first unit. Stage outputs are therefore the reference's post-ReLU
  feature maps before pooling. Inputs are 32x32: the reference pools before ``block4`` only for
  64x64 inputs, so here ``block4`` always runs at 4x4 and the pre-pool map is 512x4x4.
"""

from __future__ import annotations

from kdbench.api.tapped import TappedModel
from torch import Tensor, nn


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _init_conv_bn(model: nn.Module) -> None:
    """The reference's shared init: He-normal over fan-out for convs, BN as identity.

    RepDistiller writes it as ``normal_(0, sqrt(2 / (k*k*out_channels)))`` in WRN and VGG and as
    ``kaiming_normal_(mode='fan_out')`` in ResNet; the two are the same distribution.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- ResNet -------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Post-activation basic block; a 1x1 conv+BN shortcut wherever the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        self.out_act = nn.ReLU()  # a module, so the pre-activation tap can find it
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return self.out_act(out + self.shortcut(x))


class CifarResNet(TappedModel):
    """ResNet-(6n+2) for 32x32 inputs; ``widths`` = stem width, then the three stage widths."""

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            _conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        channels = widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [_BasicBlock(channels, width, stride)]
            blocks += [_BasicBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)
        _init_conv_bn(self)  # the reference leaves the classifier at PyTorch's default init


# --- Wide ResNet --------------------------------------------------------------------------------


class _PreActBlock(nn.Module):
    """Pre-activation WRN block.

    When the shape changes, the 1x1 shortcut reads the *activated* input, as in the reference;
    otherwise the raw input is added back.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False
            )

    def forward(self, x: Tensor) -> Tensor:
        act = self.bn1(x).relu()
        out = self.conv2(self.bn2(self.conv1(act)).relu())
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(TappedModel):
    """WRN-depth-k for 32x32 inputs (depth = 6n+4), without dropout as in CRD."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.stem = _conv3x3(in_channels, 16)
        stages = []
        channels = 16
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        for width, stride in zip(widths, (1, 2, 2)):
            blocks = [_PreActBlock(channels, width, stride)]
            blocks += [_PreActBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(channels, num_classes)
        _init_conv_bn(self)
        nn.init.zeros_(self.classifier.bias)  # weight keeps PyTorch's default, as in the reference


# --- VGG ----------------------------------------------------------------------------------------

# Conv widths per block, the reference's configurations S (vgg8), A, B, D and E.
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _vgg_unit(in_channels: int, out_channels: int, pool_first: bool) -> nn.Sequential:
    """One conv layer of VGG (conv with bias, BN, ReLU), optionally preceded by a 2x2 max-pool."""
    layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if pool_first else []
    layers += [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers)


class CifarVGG(TappedModel):
    """VGG with BatchNorm and no FC stack: five conv blocks, GAP, one Linear(512, classes).

    Max-pools sit before blocks 1-3 only (the reference skips the one before block 4 at 32x32).
    """

    def __init__(
        self, config: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.stem = nn.Identity()  # the reference has no stem: its first conv belongs to block0
        stages = []
        channels = in_channels
        for g, widths in enumerate(config):
            units = []
            for j, width in enumerate(widths):
                units.append(_vgg_unit(channels, width, pool_first=(j == 0 and g in (1, 2, 3))))
                channels = width
            stages.append(nn.Sequential(*units))
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)
        _init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)
