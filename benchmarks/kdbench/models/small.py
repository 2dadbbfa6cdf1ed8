"""The Fashion-MNIST default pair: small VGG-style CNNs sized for a 2-core CPU.

Both networks share one layout, so every method's taps exist on both: a full-resolution stem, then
stage 0 at 14×14, stage 1 at 7×7 (each opened by a max-pool) and stage 2 at 7×7, a 7×7 pre-pool map,
a pooled feature and logits. Pooling right after the stem keeps the costly convolutions off the
28×28 grid: about 6× faster on a CPU than a first stage at full resolution. The student has the
teacher's shape at a quarter of its width: 6.9k against 103k parameters (15× smaller).
"""

from __future__ import annotations

from kdbench.api.tapped import TappedModel
from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class SmallCNN(TappedModel):
    """stem: conv(in→w0) at full size; stage g: [max-pool if g < 2] + ``depth`` conv units at width w_g."""

    def __init__(self, widths: tuple[int, int, int], depth: int, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages = []
        c = widths[0]
        for g, w in enumerate(widths):
            units: list[nn.Module] = [nn.MaxPool2d(2)] if g < 2 else []
            for _ in range(depth):
                units.append(conv_bn_relu(c, w))
                c = w
            stages.append(nn.Sequential(*units))
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
