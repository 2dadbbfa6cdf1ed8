"""Model references a suite may name, resolved to a freshly initialised ``nn.Module``.

- a built-in zoo name (``fmnist_teacher``; :func:`kdbench.models.model_names`);
- ``torchvision:<name>``: a torchvision classification model without weights, built for the
  dataset's classes, its first convolution rebuilt for the dataset's channels;
- ``timm:<name>``: the same through timm, when the ``models`` extra is installed;
- ``package.module:callable``: the user's constructor, called as ``callable(num_classes=...,
  in_channels=...)``; the suite's folder is searched first, so a file beside the suite imports;
- a name registered by an installed package under the entry-point group ``kdbench.models`` (a
  constructor with the same signature).

Every failure is a one-line :class:`ConfigError` naming the reference, including a user's module
that calls ``sys.exit()`` while it is imported or called: that would otherwise end the whole run, with
its status, before anything was done.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import inspect
import sys
from pathlib import Path
from typing import Callable

from kdbench.api.errors import ConfigError, first_line
from kdbench.models.hooked import set_submodule
from torch import nn

ENTRY_POINT_GROUP = "kdbench.models"
EXTRA_HINT = "pip install 'kdbench[models]'"


def kind(ref: str) -> str:
    """``torchvision``, ``timm``, ``callable`` or ``name`` (a zoo or entry-point name)."""
    if ref.startswith(("torchvision:", "timm:")):
        return ref.split(":", 1)[0]
    return "callable" if ":" in ref else "name"


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def build_reference(ref: str, num_classes: int, in_channels: int, search: Path | None = None) -> nn.Module:
    """The module ``ref`` names, for ``num_classes`` classes and ``in_channels`` input channels
    (zoo names are built by :func:`kdbench.models.build_model`, not here)."""
    how = kind(ref)
    if how == "torchvision":
        return _torchvision(ref.split(":", 1)[1], num_classes, in_channels)
    if how == "timm":
        return _timm(ref.split(":", 1)[1], num_classes, in_channels)
    if how == "callable":
        return _call(ref, _import_callable(ref, search), num_classes, in_channels)
    ep = entry_points().get(ref)
    if ep is None:
        raise ConfigError(f"unknown model {ref!r}")
    try:
        builder = ep.load()
    except (Exception, SystemExit) as exc:  # a broken third-party package
        raise ConfigError(f"model {ref!r} (entry point {ep.value}) does not load: {_why(exc)}") from None
    return _call(ref, builder, num_classes, in_channels)


def fingerprint(ref: str, search: Path | None = None) -> str | None:
    """What identifies the code behind ``ref`` beyond its name, for config hashes: the sha256 of a
    user's module file, or an entry point's distribution and version; None for zoo, torchvision and
    timm names (the protocol version and the environment stand for those)."""
    how = kind(ref)
    if how == "callable":
        _import_callable(ref, search)
        path = inspect.getsourcefile(sys.modules[ref.partition(":")[0]])
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    ep = entry_points().get(ref) if how == "name" else None
    if ep is not None and ep.dist is not None:
        return f"{ep.dist.name}=={ep.dist.version}"
    return None


def _call(ref: str, builder: Callable, num_classes: int, in_channels: int) -> nn.Module:
    if not callable(builder):
        raise ConfigError(f"model {ref!r}: {builder!r} is not callable")
    try:
        net = builder(num_classes=num_classes, in_channels=in_channels)
    except (Exception, SystemExit) as exc:
        raise ConfigError(f"model {ref!r}: calling it with num_classes={num_classes}, "
                          f"in_channels={in_channels} failed: {_why(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model {ref!r} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def _why(exc: BaseException) -> str:
    """The user's code's failure in a few words; ``sys.exit(code)`` named as such."""
    if isinstance(exc, SystemExit):
        return f"it calls sys.exit({exc.code!r})"
    return first_line(exc)


def _import_callable(ref: str, search: Path | None) -> Callable:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {ref!r}: expected package.module:callable")
    if search is not None and str(search) not in sys.path:
        sys.path.insert(0, str(search))
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # ImportError, or the module itself raising or exiting
        raise ConfigError(f"model {ref!r}: module {module_name!r} does not import: {_why(exc)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model {ref!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision import models

    known = models.list_models(module=models)  # classification models only
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known))}"
        raise ConfigError(f"unknown torchvision model {name!r}{hint}")
    net = models.get_model(name, weights=None, num_classes=num_classes)
    return _first_conv_for(net, in_channels, f"torchvision:{name}")


def _timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model 'timm:{name}' needs timm, which is not installed: {EXTRA_HINT}") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown timm model {name!r}{hint}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def _first_conv_for(net: nn.Module, in_channels: int, ref: str) -> nn.Module:
    """``net`` with its first convolution rebuilt for ``in_channels`` (same kernel, stride, padding)."""
    path, conv = next(((p, m) for p, m in net.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return net
    if conv.groups != 1:
        raise ConfigError(f"model {ref!r}: its first convolution is grouped; it cannot take {in_channels} channels")
    set_submodule(net, path, nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ))
    return net
