"""A guard that fails any operation making the host wait for the device inside a training step.

On a GPU a step queues its kernels and returns; any operation that needs a result on the host first
waits for every queued kernel. Two kinds do: reading a tensor's value into Python (``.item()``, an
``if`` on a tensor), and operations whose output size depends on the values (``s[mask]``,
``nonzero``, ``unique``...), because the size must be known on the host to allocate the output.
The guard catches both on a CPU, where nothing actually waits, so the test needs no GPU.

Armed while a batch is drawn, while the teacher's taps are computed, and during each cell's step
(student forward, the plugin's losses, backward, optimizer step), through two mechanisms:

- the value reads are patched on ``torch.Tensor``, so they are caught wherever they are called from,
  inside torch's own Python code included;
- every other operation is matched by name in a ``TorchFunctionMode``, which sees each torch call
  made by the harness or a plugin (``torch.f``, ``Tensor.f``, ``from torch import f``) but not the
  calls torch's Python functions make internally.
"""

from __future__ import annotations

import collections
import contextlib

import torch
from kdbench.train import loop as trainer
from torch.overrides import TorchFunctionMode

#: Tensor methods that hand a tensor's value to Python (patched, caught wherever called from).
#: ``.numpy()`` is not one: it never waits, since a GPU tensor refuses it (kr_sparse uses it for a
#: CPU-only selection of its support).
VALUE_READS = ("__bool__", "item", "tolist", "__float__", "__int__", "__index__", "__complex__")
#: Calls that return a Python value computed from the tensors, or copy them to the host.
HOST_RESULTS = frozenset({"equal", "allclose", "is_nonzero", "cpu"})
#: Calls whose output's size depends on the tensors' values.
SIZE_FROM_VALUES = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
                              "_unique", "_unique2", "unique_dim", "bincount"})


def _is_mask(index) -> bool:
    if isinstance(index, (tuple, list)):
        return any(_is_mask(i) for i in index)
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _repeats(args, kwargs):
    if "repeats" in kwargs:
        return kwargs["repeats"]
    return args[1] if len(args) > 1 else args[0]  # torch.repeat_interleave(repeats) is the one-argument form


def sync_in(name: str, args: tuple, kwargs: dict) -> str | None:
    """Why the call ``name(*args, **kwargs)`` makes the host wait for the device, or None."""
    if name in HOST_RESULTS:
        return f"{name} brings its result to the host"
    if name in SIZE_FROM_VALUES:
        return f"{name}'s output size depends on values"
    if name in ("__getitem__", "__setitem__") and _is_mask(args[1]):
        return "indexing with a boolean mask"
    if name in ("index_put", "index_put_") and _is_mask(args[1] if len(args) > 1 else kwargs.get("indices")):
        return f"{name} with a boolean mask"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "torch.where(condition) (the nonzero form)"
    if name == "repeat_interleave" and kwargs.get("output_size") is None and isinstance(_repeats(args, kwargs), torch.Tensor):
        return "repeat_interleave with tensor repeats and no output_size"
    return None


class _Calls(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = sync_in(getattr(func, "__name__", ""), args, kwargs)
        if why is not None:
            raise AssertionError(f"{why} in a training step: a host sync")
        return func(*args, **kwargs)


class NoSync:
    """Installed on a test's ``monkeypatch``; ``steps`` counts the guarded cell steps, ``regions``
    every guarded region by kind (step, teacher, batch)."""

    armed, steps, regions = False, 0, collections.Counter()

    def __init__(self, monkeypatch) -> None:
        NoSync.armed, NoSync.steps, NoSync.regions = False, 0, collections.Counter()
        for name in VALUE_READS:
            monkeypatch.setattr(torch.Tensor, name, _guarded_read(name, getattr(torch.Tensor, name)))
        real_step, real_taps, real_batches = trainer._step, trainer.forward_taps_for, trainer.train_batches

        def step(*args, **kw):
            NoSync.steps += 1
            with armed("step"):
                return real_step(*args, **kw)

        def taps(*args, **kw):
            with armed("taps"):
                return real_taps(*args, **kw)

        def batches(*args, **kw):
            stream = real_batches(*args, **kw)
            while True:
                with armed("batch"):
                    batch = next(stream, None)
                if batch is None:
                    return
                yield batch
        monkeypatch.setattr(trainer, "_step", step)
        monkeypatch.setattr(trainer, "forward_taps_for", taps)
        monkeypatch.setattr(trainer, "train_batches", batches)


def _guarded_read(name: str, real):
    def guarded(self_, *a, **kw):
        if NoSync.armed:
            raise AssertionError(f"Tensor.{name} in a training step: a host sync")
        return real(self_, *a, **kw)
    return guarded


@contextlib.contextmanager
def armed(kind: str):
    """The guard on, for the ``with`` block (nested blocks share the outermost's mode)."""
    NoSync.regions[kind] += 1
    if NoSync.armed:
        yield
        return
    NoSync.armed = True
    try:
        with _Calls():
            yield
    finally:
        NoSync.armed = False
