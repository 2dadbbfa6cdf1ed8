"""What the cells of a group share, kept the same for all of them.

A group's cells share the teacher's network and the data (its training and test splits). A plugin
is handed the teacher (in its context and in ``prepare``) and the data (in ``prepare``), and torch
has no read-only tensor to hand it instead (an in-place write to a tensor that needs no gradient
always succeeds; a view made in inference mode refuses no such write; inference tensors would refuse
it, but cannot be saved for backward, which a loss on them needs). So the guard checks instead:
:class:`InputGuard` takes a checksum of each shared part once, and a caller compares it again after
each piece of plugin code, so that a change is found before any other cell uses it and is blamed on
the cell whose code ran last. The teacher is restored from a copy taken with the checksum; the data
are not (a copy would double the run's largest memory), so a change to them ends every cell still
running in this process.

The checksum of a tensor is two matrix-vector products with fixed weights (rows, then columns): one
pass over memory, about as fast as reading it, sensitive to any change of a value or of the order
of rows, and the same on every call on one machine (the same memory, the same kernels).
"""

from __future__ import annotations

import torch
from kdbench.data.datasets import Dataset
from torch import nn


class IsolationError(RuntimeError):
    """A cell changed what the cells of its group share (the teacher, the data)."""


def check_terms(terms: object) -> None:
    """A method's losses are named scalar tensors. Anything else fails its cell at the step that
    returned it (metadata only: no wait for the device), before it reaches the state the cell's
    steps keep (a vector there would break the end-of-epoch check of the loss, and the run with it)."""
    if not isinstance(terms, dict) or not terms:
        raise IsolationError(f"losses() must return a non-empty dict of scalar tensors, got {type(terms).__name__}")
    for name, value in terms.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
            what = (f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
                    if isinstance(value, torch.Tensor) else type(value).__name__)
            raise IsolationError(f"losses() term {name!r} must be a scalar floating-point tensor, got {what}")


_WEIGHTS: dict[tuple, torch.Tensor] = {}


def _weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``n`` fixed weights in [0.5, 1.5): every position counts, and each differently."""
    key = (n, dtype, device)
    if key not in _WEIGHTS:
        g = torch.Generator().manual_seed(n)
        _WEIGHTS[key] = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).to(device=device, dtype=dtype)
    return _WEIGHTS[key]


@torch.no_grad()
def checksum(t: torch.Tensor) -> torch.Tensor:
    """One float64 number for ``t``, on its device (no wait for it)."""
    x = t.detach()
    x = x if x.is_floating_point() and x.dtype != torch.float16 else x.double()
    x = x.reshape(x.shape[0] if x.dim() > 1 else 1, -1)
    rows = x @ _weights(x.shape[1], x.dtype, x.device)
    return rows.double() @ _weights(x.shape[0], torch.float64, x.device)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise, NaN included (the host waits for the device here: never inside a step)."""
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.int64), b[k].view(torch.int64)) for k in a)


class InputGuard:
    """The checksums of what a run's cells share, taken when it is built; a copy of the teacher's
    weights to restore them from; and, once shared data have changed in this process, what
    changed them (``spoiled``: every later cell fails with it)."""

    def __init__(self, teacher: nn.Module | None, data: Dataset) -> None:
        self.teacher, self.data = teacher, data
        self.pristine = None if teacher is None else {k: v.detach().to("cpu", copy=True)
                                                      for k, v in teacher.state_dict().items()}
        self.base = self._sums()
        self.spoiled: str | None = None

    def _parts(self) -> dict[str, dict[str, torch.Tensor]]:
        d = self.data
        parts = {"the teacher's weights": dict(self.teacher.state_dict()) if self.teacher is not None else {},
                 "the training images": {"": d.train.images}, "the training labels": {"": d.train.labels},
                 "the test images": {"": d.test.images}, "the test labels": {"": d.test.labels}}
        return {part: tensors for part, tensors in parts.items() if tensors}

    def _sums(self) -> dict[str, dict[str, torch.Tensor]]:
        return {part: {k: checksum(v) for k, v in tensors.items()} for part, tensors in self._parts().items()}

    def changed(self) -> list[str]:
        """The shared parts whose checksum is not what it was (and the teacher's mode, if a module
        of it was put in training mode, where its batch norms would follow each batch)."""
        now = self._sums()
        parts = [part for part in self.base if not _same(self.base[part], now.get(part, {}))]
        if self.teacher is not None and any(m.training for m in self.teacher.modules()):
            parts.append("the teacher's mode (eval)")
        return parts

    def restore(self) -> bool:
        """Put the teacher's weights and mode back; False when what changed cannot be undone (the
        data, or a teacher whose structure was changed)."""
        if self.teacher is not None:
            self.teacher.eval()
            try:
                self.teacher.load_state_dict(self.pristine)
            except Exception:  # a key removed or reshaped: nothing to copy into
                return False
        return not self.changed()
