"""How a suite's networks are computed: precision, memory layout, compilation, determinism.

These options change the bits a run produces, so they are declared in the suite (``fast_path:``),
recorded in every record and hashed with the cell's configuration (left out of the hash when all of
them are at their defaults, so records made before they existed stay valid):

- ``precision``: ``fp32``, or ``bf16`` (autocast around every forward pass and loss, the teacher's
  included; backward and the optimizer stay in fp32, bf16 needs no loss scaling);
- ``channels_last``: NHWC weights, which CPUs and tensor cores both prefer (the default);
- ``compile``: ``torch.compile`` of each network's forward pass; a network that fails to compile
  runs eagerly, and the record says why;
- ``deterministic``: deterministic kernels; ``false`` lets cuDNN benchmark and pick the fastest.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from kdbench.errors import first_line

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastPath:
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = True

    def hashed(self) -> dict[str, Any]:
        """What a config hash adds: nothing at the defaults."""
        return {} if self == FastPath() else {"fast_path": asdict(self)}


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
