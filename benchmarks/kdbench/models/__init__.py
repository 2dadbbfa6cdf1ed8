"""Models by reference: the zoo's :class:`TappedModel` networks by name, and any other network
(torchvision, timm, the user's constructor, an entry point) adapted by hooks to the same taps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kdbench.api.errors import ConfigError
from kdbench.api.tapped import TappedModel, Taps, TapShapes
from kdbench.models.references import build_reference, entry_points, kind
from kdbench.models.tap_rules import adapt, check_output
from kdbench.models.zoo import ZOO


def model_names() -> list[str]:
    return sorted(ZOO)


def build_model(
    name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None,
    taps: dict[str, Any] | None = None, search: Path | None = None,
) -> TappedModel:
    """A freshly initialised network for the reference ``name`` (:mod:`kdbench.models.references`).
    A network that is not a :class:`TappedModel` is adapted (:mod:`kdbench.models.tap_rules`), which
    needs ``image_size`` for its dry run; ``taps`` declares its tap modules. With ``image_size``, a
    dry run checks every non-zoo network's output is ``num_classes`` logits."""
    if name in ZOO:
        if taps:
            raise ConfigError(f"model {name!r} is a zoo model: its taps are built in, declare none")
        return ZOO[name](num_classes=num_classes, in_channels=in_channels)
    if kind(name) == "name" and name not in entry_points():
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(model_names())}, any "
                          "torchvision:NAME or timm:NAME, or package.module:callable")
    net = build_reference(name, num_classes, in_channels, search)
    if image_size is None:
        if isinstance(net, TappedModel) and not taps:
            return net
        raise ConfigError(f"model {name!r} needs the input size to find its taps")
    if isinstance(net, TappedModel) and not taps:
        check_output(net, (in_channels, image_size, image_size), num_classes, name)
        return net
    return adapt(net, (in_channels, image_size, image_size), taps, name, num_classes)


def to_device(model: TappedModel, device: torch.device | str, channels_last: bool = True) -> TappedModel:
    """The model on ``device``, its 4-D weights channels-last by default: convolutions read and write
    NHWC, which is faster on CPUs (docs/speed.md, "Channels-last against NCHW"). Part of the protocol:
    it changes the bits."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=fmt)


__all__ = ["TappedModel", "Taps", "TapShapes", "build_model", "model_names", "to_device"]
