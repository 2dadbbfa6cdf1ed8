"""Where a plain network's taps are: declared in the suite (``taps:``), or found for common families.

Found automatically:
- the classifier: the last ``nn.Linear`` of the network, if its output is the network's output;
- stages and the pre-pool map: torchvision's ResNet (``layer1..4``), ShuffleNetV2 (``stage2..4``,
  ``conv5``) and RegNet (``trunk_output``'s blocks); timm models from their ``feature_info`` (past the stem, at
  reduction 2); and
  any network whose ``features`` is an ``nn.Sequential`` (VGG, MobileNet, EfficientNet, ConvNeXt,
  DenseNet): a stage ends at the last child of each run of children with one output resolution.

Every tap is checked by a dry run, which also checks that the output is a batch of logits with one
column per class (a constructor that ignores ``num_classes`` would otherwise train against the wrong
classes, or fail every cell at run time): stages and the pre-pool map must be maps (B×C×H×W), and the
pre-pool map is a tap only when the classifier's input is its spatial mean, as methods reading both
assume (a VGG pools to 7×7 and runs an MLP, so it has no pre-pool tap). A found tap that fails its
check is left out; a declared one is an error.
"""

from __future__ import annotations

from typing import Any

import torch
from kdbench.api.errors import ConfigError, first_line
from kdbench.models.hooked import HookedModel, TapPaths
from torch import nn

TAP_KEYS = ("stages", "prepool", "classifier")


def adapt(net: nn.Module, input_shape: tuple[int, ...], declared: dict[str, Any] | None, ref: str,
          num_classes: int) -> HookedModel:
    """``net`` wrapped with its taps: the declared ones checked, the others found, its output
    checked to be ``num_classes`` logits."""
    declared = _declared(net, declared or {}, ref)
    stages, prepools = _found(net, input_shape)
    check_output(net, input_shape, num_classes, ref)
    if "prepool" in declared:
        prepools = (declared["prepool"],)
    paths = TapPaths(declared.get("stages", stages), None, declared.get("classifier", _last_linear(net)))
    return HookedModel(net, _checked(net, paths, prepools, input_shape, declared, ref))


def _declared(net: nn.Module, raw: dict[str, Any], ref: str) -> dict[str, Any]:
    unknown = set(raw) - set(TAP_KEYS)
    if unknown:
        raise ConfigError(f"{ref}: unknown taps key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(TAP_KEYS)}")
    out: dict[str, Any] = {}
    if "stages" in raw:
        stages = raw["stages"]
        if not isinstance(stages, list) or not stages or not all(isinstance(p, str) for p in stages):
            raise ConfigError(f"{ref}: taps.stages must be a non-empty list of module paths")
        out["stages"] = tuple(_module_path(net, p, "stages", ref) for p in stages)
    for key in ("prepool", "classifier"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{ref}: taps.{key} must be a module path, got {raw[key]!r}")
            out[key] = _module_path(net, raw[key], key, ref)
    if "classifier" in out and not isinstance(net.get_submodule(out["classifier"]), nn.Linear):
        raise ConfigError(f"{ref}: taps.classifier {out['classifier']!r} is a "
                          f"{type(net.get_submodule(out['classifier'])).__name__}, not an nn.Linear")
    return out


def _module_path(net: nn.Module, path: str, key: str, ref: str) -> str:
    try:
        net.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"{ref}: taps.{key}: {type(net).__name__} has no module {path!r}") from None
    return path


def _last_linear(net: nn.Module) -> str | None:
    return next((p for p, m in reversed(list(net.named_modules())) if isinstance(m, nn.Linear)), None)


def _found(net: nn.Module, input_shape: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Stages, and the candidates for the pre-pool map in order (the first that checks is taken)."""
    from torchvision import models

    if isinstance(net, models.ResNet):
        return ("layer1", "layer2", "layer3", "layer4"), ("layer4",)
    if isinstance(net, models.ShuffleNetV2):
        return ("stage2", "stage3", "stage4"), ("conv5",)
    if isinstance(net, models.RegNet):
        return tuple(f"trunk_output.{n}" for n, _ in net.trunk_output.named_children()), ("trunk_output",)
    info = getattr(net, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(i, dict) and "module" in i for i in info):  # timm
        stages = tuple(i["module"] for i in info if i.get("reduction", 4) > 2) or tuple(i["module"] for i in info)
        names = dict(net.named_modules())
        return stages, (stages[-1], *(n for n in ("bn2", "conv_head", "norm") if n in names))
    if isinstance(getattr(net, "features", None), nn.Sequential):
        return _resolution_runs(net, "features", input_shape), ("features",)
    return (), ()


@torch.no_grad()
def _resolution_runs(net: nn.Module, trunk: str, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The last child of ``trunk`` at each output resolution, in order."""
    sizes: dict[str, tuple[int, ...]] = {}
    handles = [child.register_forward_hook(lambda _m, _i, out, n=name: sizes.__setitem__(n, tuple(out.shape[2:])))
               for name, child in net.get_submodule(trunk).named_children()]
    try:
        _dry_run(net, input_shape)
    except Exception:
        return ()  # the check in _checked reports why the network cannot run
    finally:
        for h in handles:
            h.remove()
    names = list(sizes)
    return tuple(f"{trunk}.{n}" for i, n in enumerate(names)
                 if len(sizes[n]) == 2 and (i + 1 == len(names) or sizes[names[i + 1]] != sizes[n]))


def _dry_run(model: nn.Module, input_shape: tuple[int, ...], forward=None):
    """One eval-mode pass on a fixed random input (its own generator: global draws stay untouched)."""
    p = next(model.parameters(), None)
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    if p is not None:
        x = x.to(device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        return (forward or model)(x)
    finally:
        model.train(was_training)


@torch.no_grad()
def _checked(net: nn.Module, paths: TapPaths, prepools: tuple[str, ...], input_shape: tuple[int, ...],
             declared: dict, ref: str) -> TapPaths:
    """``paths`` with the first pre-pool candidate that checks, less the found taps that fail their
    check; a declared tap that fails is an error."""
    if paths.classifier and not _is_output(net, paths.classifier, input_shape):
        _refuse(declared, "classifier", f"{ref}: taps.classifier {paths.classifier!r} does not produce the network's output")
        paths = TapPaths(paths.stages, paths.prepool, None)
    model = HookedModel(net, paths)
    try:
        taps = _dry_run(model, input_shape, model.forward_taps)
    except RuntimeError as exc:
        raise ConfigError(f"{ref}: its taps cannot be read: {first_line(exc)}") from None
    bad = [p for p, t in zip(paths.stages, taps.stages) if t.dim() != 4]
    if bad:
        _refuse(declared, "stages", f"{ref}: taps.stages {bad[0]!r} is not a map (B×C×H×W)")
        paths = TapPaths((), None, paths.classifier)
    for candidate in prepools:
        trial = TapPaths(paths.stages, candidate, paths.classifier)
        model = HookedModel(net, trial)
        if _pools_to_classifier_input(_dry_run(model, input_shape, model.forward_taps)):
            return trial
        _refuse(declared, "prepool", f"{ref}: taps.prepool {candidate!r} is not a map whose spatial mean "
                                     "is the classifier's input")
    return paths


@torch.no_grad()
def check_output(net: nn.Module, input_shape: tuple[int, ...], num_classes: int, ref: str) -> None:
    """Refuse a network that cannot run on the data's inputs, or whose output is not B×``num_classes``."""
    try:
        out = _dry_run(net, input_shape)
    except Exception as exc:
        raise ConfigError(f"{ref} cannot run on {'×'.join(map(str, input_shape))} inputs: {first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(f"{ref} must return a batch of logits (B×classes), got "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[1] != num_classes:
        raise ConfigError(f"{ref} returns {out.shape[1]:,} logits per image, but the data has {num_classes:,} "
                          f"classes; build its classifier for num_classes")


def _is_output(net: nn.Module, path: str, input_shape: tuple[int, ...]) -> bool:
    seen = {}
    handle = net.get_submodule(path).register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    try:
        out = _dry_run(net, input_shape)
    finally:
        handle.remove()
    return seen.get("out") is out


def _pools_to_classifier_input(taps) -> bool:
    if taps.prepool is None or taps.prepool.dim() != 4 or taps.pooled is None:
        return False
    mean = taps.prepool.mean(dim=(2, 3))
    return mean.shape == taps.pooled.shape and torch.allclose(mean, taps.pooled, rtol=1e-4, atol=1e-5)


def _refuse(declared: dict, key: str, message: str) -> None:
    if key in declared:
        raise ConfigError(message)
