"""The one model shape every zoo network follows, so methods can read features without editing models.

A distillation method needs named intermediate tensors (each stage's output, the exact map that is
pooled, the pooled feature, the logits) and sometimes the classifier module. RepDistiller threads an
``is_feat`` flag through every model and several public zoos expose a different tensor from the one
they pool; here the taps are computed by one shared ``forward_taps`` from a fixed layout, so the
pre-pool tap *is* the tensor that is pooled, by construction.

Layout: ``stem -> stages[0..G-1] -> final -> (prepool) -> GAP -> (pooled) -> classifier -> (logits)``.

``injections`` is the seam for methods that change the student itself (a KD layer that stays at
inference): a module registered under a tap point is applied to the tensor at that point, and
everything downstream sees its output. Tap points are ``"stage{g}"`` (output of stage g),
``"stage{g}.block{j}"`` (output of block j inside stage g) and ``"prepool"``. Injected modules are
part of the student: they are trained, saved and counted at inference with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Taps:
    """What one forward pass exposes; ``stages[g]`` is stage g's output (after any injection)."""

    stages: list[torch.Tensor]
    prepool: torch.Tensor
    pooled: torch.Tensor
    logits: torch.Tensor
    blocks: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class TapShapes:
    """Per-sample shapes of the taps (no batch dimension), for sizing connectors and adapters."""

    stages: tuple[tuple[int, ...], ...]
    prepool: tuple[int, ...]
    pooled: tuple[int, ...]
    logits: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]


class TappedModel(nn.Module):
    """Base class of every zoo model.

    Subclasses set ``stem`` (module), ``stages`` (``nn.ModuleList`` of ``nn.Sequential`` of blocks),
    ``final`` (module applied after the last stage and before pooling, e.g. the last BN+ReLU of a
    pre-activation network; ``nn.Identity()`` when there is none) and ``classifier`` (``nn.Linear``).
    """

    stem: nn.Module
    stages: nn.ModuleList
    final: nn.Module
    classifier: nn.Linear

    def __init__(self) -> None:
        super().__init__()
        self.injections = nn.ModuleDict()

    def _inject(self, point: str, x: torch.Tensor) -> torch.Tensor:
        # ModuleDict keys cannot contain '.', so block points are stored with '_' instead.
        key = point.replace(".", "_")
        return self.injections[key](x) if key in self.injections else x

    def inject(self, point: str, module: nn.Module) -> None:
        """Insert ``module`` at tap ``point``; it stays in the network at inference."""
        if not self._valid_point(point):
            raise ValueError(f"unknown tap point {point!r} for {type(self).__name__}")
        key = point.replace(".", "_")
        if key in self.injections:
            raise ValueError(f"tap point {point!r} already has an injected module")
        self.injections[key] = module

    def _valid_point(self, point: str) -> bool:
        if point == "prepool":
            return True
        parts = point.split(".")
        if not parts[0].startswith("stage") or not parts[0][5:].isdigit():
            return False
        g = int(parts[0][5:])
        if g >= len(self.stages):
            return False
        if len(parts) == 1:
            return True
        return len(parts) == 2 and parts[1].startswith("block") and parts[1][5:].isdigit() and int(
            parts[1][5:]
        ) < len(self.stages[g])

    def forward_taps(self, x: torch.Tensor) -> Taps:
        x = self.stem(x)
        stage_outputs = []
        blocks: dict[str, torch.Tensor] = {}
        for g, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                x = block(x)
                point = f"stage{g}.block{j}"
                x = self._inject(point, x)
                blocks[point] = x
            x = self._inject(f"stage{g}", x)
            stage_outputs.append(x)
        x = self.final(x)
        prepool = self._inject("prepool", x)
        pooled = prepool.mean(dim=(2, 3))  # GAP over the actual map, whatever its size
        logits = self.classifier(pooled)
        return Taps(stages=stage_outputs, prepool=prepool, pooled=pooled, logits=logits, blocks=blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x).logits

    @torch.no_grad()
    def tap_shapes(self, input_shape: tuple[int, ...]) -> TapShapes:
        """Shapes of every tap for one input of ``input_shape`` (C, H, W), found by a dry run."""
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            taps = self.forward_taps(torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype))
        finally:
            self.train(was_training)
        return TapShapes(
            stages=tuple(tuple(s.shape[1:]) for s in taps.stages),
            prepool=tuple(taps.prepool.shape[1:]),
            pooled=tuple(taps.pooled.shape[1:]),
            logits=tuple(taps.logits.shape[1:]),
            blocks_per_stage=tuple(len(s) for s in self.stages),
        )
