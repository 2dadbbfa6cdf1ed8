"""Any ``nn.Module`` seen as a :class:`TappedModel`, its taps read by forward hooks at module paths.

Users bring networks written for classification, not for distillation. Rather than asking them to
rewrite ``forward()``, the adapter hooks the modules that produce each tap: each stage module's
output, the pre-pool map's module, and the classifier (an ``nn.Linear``), whose input is the pooled
feature and whose output must be the network's output, the logits. The hooks are registered for
one forward pass and removed after it, so a method that replaces the classifier (``bregman_pca``)
is hooked like the original.

A stage that is an ``nn.Sequential`` has its children as blocks; any other stage is one block.
Injections (:meth:`TappedModel.inject`) work as in the zoo: the hook returns the injected module's
output in place of the tap, and everything downstream sees it. In-place activations are switched
off, so a tap keeps the value it had when it was read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kdbench.api.tapped import TappedModel, Taps
from torch import nn


@dataclass(frozen=True)
class TapPaths:
    """Module paths (``net.get_submodule`` names) of the taps; an empty one is a tap not given."""

    stages: tuple[str, ...] = ()
    prepool: str | None = None
    classifier: str | None = None

    def gives(self) -> frozenset[str]:
        given = {"logits"}
        if self.stages:
            given |= {"stages", "blocks", "preact"}
        if self.prepool:
            given.add("prepool")
        if self.classifier:
            given.add("pooled")
        return frozenset(given)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, module)


class HookedModel(TappedModel):
    """``net`` with taps at ``paths``; ``gives`` is what it can expose (the zoo gives everything)."""

    def __init__(self, net: nn.Module, paths: TapPaths) -> None:
        super().__init__()
        self.net = net
        self.paths = paths
        for m in net.modules():
            if getattr(m, "inplace", False) is True:
                m.inplace = False

    @property
    def gives(self) -> frozenset[str]:  # type: ignore[override]
        return self.paths.gives()

    @property
    def stages(self) -> list[list[nn.Module]]:  # type: ignore[override]
        """Per stage, its blocks (not registered twice: they live in ``net``)."""
        found = [self.net.get_submodule(p) for p in self.paths.stages]
        return [list(s) if isinstance(s, nn.Sequential) and len(s) else [s] for s in found]

    @property
    def classifier(self) -> nn.Module:  # type: ignore[override]
        if not self.paths.classifier:
            raise AttributeError(f"{type(self.net).__name__} has no classifier tap")
        return self.net.get_submodule(self.paths.classifier)

    def __setattr__(self, name: str, value) -> None:
        if name == "classifier" and "net" in self._modules:
            if not self.paths.classifier:
                raise AttributeError(f"{type(self.net).__name__} has no classifier tap to replace")
            set_submodule(self.net, self.paths.classifier, value)
        else:
            super().__setattr__(name, value)

    def weights_module(self) -> nn.Module:
        return self.net

    def block_activation(self, g: int, j: int) -> nn.Module | None:
        block = self.stages[g][j]
        if isinstance(block, (nn.ReLU, nn.LeakyReLU)):
            return block  # a stage that is its closing activation (a VGG ReLU before a pool)
        relu = getattr(block, "relu", None)  # torchvision's residual blocks call it last
        return relu if isinstance(relu, (nn.ReLU, nn.LeakyReLU)) else super().block_activation(g, j)

    def forward_taps(self, x: torch.Tensor, preact: bool = False) -> Taps:
        got: dict = {"stages": {}, "blocks": {}, "preact_blocks": {}, "preact_stages": {}}
        handles = self._capture_preactivations(got["preact_blocks"]) if preact else []
        try:
            handles += self._register(got, preact)
            out = self.net(x)
        finally:
            for h in handles:
                h.remove()
        if self.paths.classifier:
            if got.get("logits") is not out:
                raise RuntimeError(f"the classifier {self.paths.classifier!r} does not produce the "
                                   f"output of {type(self.net).__name__}")
            logits = out
        else:
            logits = self._inject("logits", out)
        n = len(self.paths.stages)
        if len(got["stages"]) < n:
            missed = next(p for g, p in enumerate(self.paths.stages) if g not in got["stages"])
            raise RuntimeError(f"the stage module {missed!r} did not run in the forward pass")
        return Taps(stages=[got["stages"][g] for g in range(n)], prepool=got.get("prepool"),
                    pooled=got.get("pooled"), logits=logits, blocks=got["blocks"],
                    preact_blocks=got["preact_blocks"] if preact else {},
                    preact_stages=[got["preact_stages"][g] for g in range(n)] if preact else [])

    def _register(self, got: dict, preact: bool) -> list:
        handles = []
        for g, blocks in enumerate(self.stages):
            for j, block in enumerate(blocks):
                handles.append(block.register_forward_hook(self._block_hook(got, f"stage{g}.block{j}", preact)))
            stage = self.net.get_submodule(self.paths.stages[g])
            handles.append(stage.register_forward_hook(self._stage_hook(got, g, len(blocks), preact)))
        if self.paths.prepool:
            def at_prepool(_m, _i, out):
                got["prepool"] = self._inject("prepool", out)
                return got["prepool"]
            handles.append(self.net.get_submodule(self.paths.prepool).register_forward_hook(at_prepool))
        if self.paths.classifier:
            def before_classifier(_m, inputs):
                got["pooled"] = inputs[0]

            def after_classifier(_m, _i, out):
                got["logits"] = self._inject("logits", out)
                return got["logits"]
            handles.append(self.classifier.register_forward_pre_hook(before_classifier))
            handles.append(self.classifier.register_forward_hook(after_classifier))
        return handles

    def _block_hook(self, got: dict, point: str, preact: bool):
        def hook(_m, _i, out):
            if preact:
                got["preact_blocks"][point] = got["preact_blocks"].pop(point, out)
            got["blocks"][point] = self._inject(point, out)
            return got["blocks"][point]
        return hook

    def _stage_hook(self, got: dict, g: int, n_blocks: int, preact: bool):
        def hook(_m, _i, out):
            if preact:
                got["preact_stages"][g] = got["preact_blocks"][f"stage{g}.block{n_blocks - 1}"]
            got["stages"][g] = self._inject(f"stage{g}", out)
            return got["stages"][g]
        return hook


__all__ = ["HookedModel", "TapPaths", "set_submodule"]
