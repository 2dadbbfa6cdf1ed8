"""Model zoo: every network is a :class:`TappedModel`, built by name through one registry."""

from __future__ import annotations

from typing import Callable

import torch

from kdbench.errors import ConfigError
from kdbench.models.tapped import TappedModel, Taps, TapShapes

ModelBuilder = Callable[..., TappedModel]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``builder(num_classes, in_channels) -> TappedModel`` under ``name``."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return wrap


def model_names() -> list[str]:
    _load_zoo()
    return sorted(_BUILDERS)


def build_model(name: str, num_classes: int, in_channels: int = 3) -> TappedModel:
    _load_zoo()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels)


def to_device(model: TappedModel, device: torch.device | str) -> TappedModel:
    """The model on ``device`` with its 4-D weights channels-last: convolutions read and write NHWC,
    which is faster on CPUs (README, "Speed"). Part of the protocol: it changes the bits."""
    return model.to(device=device, memory_format=torch.channels_last)


def _load_zoo() -> None:
    # Imported for their @register_model side effects; kept lazy to avoid import cycles.
    from kdbench.models import cifar, small  # noqa: F401


__all__ = ["TappedModel", "Taps", "TapShapes", "build_model", "model_names", "register_model", "to_device"]
