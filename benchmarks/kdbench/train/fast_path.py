"""The fast path at run time: autocast for ``precision``, and ``torch.compile`` with an eager fallback
(the options themselves are declared in :mod:`kdbench.config.fast_path`).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from kdbench.api.errors import first_line
from kdbench.config.fast_path import PRECISIONS


def autocast(precision: str, device: torch.device | str):
    """The context forward passes run in: bf16 autocast, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class CompiledOrEager:
    """A compiled function that falls back to the eager one, for good, at its first failure;
    ``note`` holds the reason (one line) once that has happened."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.compiled, self.note = fn, torch.compile(fn), None

    def __call__(self, *args, **kwargs):
        if self.note is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # an unsupported op, no compiler on this machine, ...
                self.note = f"{type(exc).__name__}: {first_line(exc)}"[:300]
        return self.fn(*args, **kwargs)


def compile_forward(model: torch.nn.Module) -> CompiledOrEager:
    """Compile ``model.forward_taps`` in place (the instance attribute shadows the method)."""
    wrapped = CompiledOrEager(model.forward_taps)
    model.forward_taps = wrapped
    return wrapped


@contextlib.contextmanager
def eager(model: torch.nn.Module):
    """``model`` with its own forward pass while inside (FLOP counting traces the eager ops)."""
    wrapped = model.__dict__.pop("forward_taps", None)
    try:
        yield model
    finally:
        if wrapped is not None:
            model.forward_taps = wrapped


def compile_note(*models: torch.nn.Module) -> str | None:
    """Why a compiled network of ``models`` runs eagerly, if one does."""
    for m in models:
        wrapped = getattr(m, "forward_taps", None)
        if isinstance(wrapped, CompiledOrEager) and wrapped.note:
            return wrapped.note
    return None
