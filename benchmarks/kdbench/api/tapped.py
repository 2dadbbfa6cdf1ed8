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
``"stage{g}.block{j}"`` (output of block j inside stage g), ``"prepool"`` and ``"logits"`` (applied
to the classifier's output: a frozen layer a method imports after a replaced head). Injected modules
are part of the student: they are trained, saved and counted at inference with it.

Pre-activation taps (``forward_taps(x, preact=True)``) are the maps *before* each block's closing
activation, which a post-activation network (ResNet, VGG) never materialises as a stage output; hint
methods that model a channel distribution want them, since the ReLU has flattened every negative
channel to one value. A block declares its closing activation as a module (the last element of an
``nn.Sequential`` block, or an ``out_act`` attribute); a forward pre-hook copies that module's input.
A block that ends without an activation (a pre-activation WRN block, a pooling step) is already
pre-activation: its output is its pre-activation tap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: Every tap a zoo model gives; a model adapted by hooks (:mod:`kdbench.models.hooked`) may give fewer.
TAP_NAMES = frozenset({"stages", "blocks", "preact", "prepool", "pooled", "logits"})


@dataclass
class Taps:
    """What one forward pass exposes; ``stages[g]`` is stage g's output (after any injection).
    A tap the model does not give is empty (``[]``, ``{}``) or ``None``."""

    stages: list[torch.Tensor]
    prepool: torch.Tensor | None
    pooled: torch.Tensor | None
    logits: torch.Tensor
    blocks: dict[str, torch.Tensor] = field(default_factory=dict)
    #: only with ``preact=True``: each block's map before its closing activation, and per stage the
    #: last block's (same shapes as ``blocks`` and ``stages``; injections are applied after these)
    preact_blocks: dict[str, torch.Tensor] = field(default_factory=dict)
    preact_stages: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class TapShapes:
    """Per-sample shapes of the taps (no batch dimension), for sizing connectors and adapters."""

    stages: tuple[tuple[int, ...], ...]
    prepool: tuple[int, ...]
    pooled: tuple[int, ...]
    logits: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]
    #: per block tap point (``"stage{g}.block{j}"``); a stage's first block may differ from its stage
    blocks: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False)

    def at(self, point: str) -> tuple[int, ...]:
        """Shape at a tap point: ``"stage{g}"``, ``"stage{g}.block{j}"`` or ``"prepool"``."""
        if point == "prepool":
            return self.prepool
        if "." in point:
            return self.blocks[point]
        return self.stages[int(point[len("stage"):])]


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
    gives: frozenset[str] = TAP_NAMES

    def __init__(self) -> None:
        super().__init__()
        self.injections = nn.ModuleDict()

    def weights_module(self) -> nn.Module:
        """The module a checkpoint of this network is a state dict of (an adapter's wrapped net)."""
        return self

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
        if point in ("prepool", "logits"):
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

    def block_activation(self, g: int, j: int) -> nn.Module | None:
        """The activation module that closes block j of stage g, or None when the block has none."""
        block = self.stages[g][j]
        if isinstance(block, nn.Sequential):
            last = block[-1] if len(block) else None
        else:
            last = getattr(block, "out_act", None)
        return last if isinstance(last, (nn.ReLU, nn.LeakyReLU)) else None

    def forward_taps(self, x: torch.Tensor, preact: bool = False) -> Taps:
        captured: dict[str, torch.Tensor] = {}
        hooks = self._capture_preactivations(captured) if preact else []
        try:
            x = self.stem(x)
            stage_outputs = []
            blocks: dict[str, torch.Tensor] = {}
            preact_blocks: dict[str, torch.Tensor] = {}
            preact_stages: list[torch.Tensor] = []
            for g, stage in enumerate(self.stages):
                for j, block in enumerate(stage):
                    x = block(x)
                    point = f"stage{g}.block{j}"
                    if preact:
                        preact_blocks[point] = captured.pop(point, x)
                    x = self._inject(point, x)
                    blocks[point] = x
                if preact:
                    preact_stages.append(preact_blocks[f"stage{g}.block{len(stage) - 1}"])
                x = self._inject(f"stage{g}", x)
                stage_outputs.append(x)
        finally:
            for h in hooks:
                h.remove()
        x = self.final(x)
        prepool = self._inject("prepool", x)
        pooled = prepool.mean(dim=(2, 3))  # GAP over the actual map, whatever its size
        logits = self._inject("logits", self.classifier(pooled))
        return Taps(stages=stage_outputs, prepool=prepool, pooled=pooled, logits=logits, blocks=blocks,
                    preact_blocks=preact_blocks, preact_stages=preact_stages)

    def _capture_preactivations(self, captured: dict[str, torch.Tensor]) -> list:
        """Forward pre-hooks copying each closing activation's input into ``captured`` (a copy,
        because the activation may run in place). A module called twice in a block leaves its
        last call's input, which is the closing one."""
        hooks = []
        for g, stage in enumerate(self.stages):
            for j in range(len(stage)):
                act = self.block_activation(g, j)
                if act is not None:
                    def grab(_module, inputs, point=f"stage{g}.block{j}"):
                        captured[point] = inputs[0].clone()
                    hooks.append(act.register_forward_pre_hook(grab))
        return hooks

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
            prepool=() if taps.prepool is None else tuple(taps.prepool.shape[1:]),
            pooled=() if taps.pooled is None else tuple(taps.pooled.shape[1:]),
            logits=tuple(taps.logits.shape[1:]),
            blocks_per_stage=tuple(len(s) for s in self.stages),
            blocks={k: tuple(v.shape[1:]) for k, v in taps.blocks.items()},
        )
