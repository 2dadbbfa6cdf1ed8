"""The contract every distillation method plugin fulfils.

Shape taken from mdistiller's distiller: a method knows nothing about the training loop; it receives
the student's taps and the teacher's (computed once per batch by the trainer, so one teacher pass can
feed several students) and returns a dict of *named* loss tensors, which the trainer sums and logs.

A plugin is one file in ``methods/`` (or a third-party package exposing the entry-point group
``kdbench.methods``) holding a subclass decorated with :func:`kdbench.register`; what each built-in
computes, and why, is in ``docs/methods.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from kdbench.api.domains import Domain
from kdbench.api.search import Space
from kdbench.api.tapped import TAP_NAMES, TappedModel, Taps, TapShapes  # noqa: F401 (TAP_NAMES: re-exported)
from torch import nn

# TAP_NAMES: the taps a method may ask for, on either network. ``preact`` asks for the
# pre-activation maps (``Taps.preact_stages`` / ``preact_blocks``), computed only when asked for.


def forward_taps_for(model: TappedModel, x: torch.Tensor, taps: frozenset[str]) -> Taps:
    """One forward pass exposing what ``taps`` (a method's declared taps, or their union over the
    methods a pass feeds) asks for."""
    return model.forward_taps(x, preact="preact" in taps)


@dataclass(frozen=True)
class Task:
    """What is known of a run before anything is built: enough to check a hyperparameter whose bound
    depends on the data (a code length below the number of classes) or on the training budget (a
    warm-up longer than the run would silently make a method its baseline). ``epochs`` and
    ``steps_per_epoch`` are the budget a cell trains for (a tuning trial's, on its smaller training
    split); None only where a caller checks hyperparameters without a suite."""

    num_classes: int
    input_shape: tuple[int, ...]
    epochs: int | None = None
    steps_per_epoch: int | None = None


@dataclass(frozen=True)
class TrainingProgress:
    """Where training stands at the batch a method computes its losses for, so a warm-up or a
    ramp can depend on the step as well as the epoch. Counting starts at 0 (records number epochs
    from 1)."""

    epoch: int
    step: int
    steps_per_epoch: int
    epochs: int

    @property
    def fraction(self) -> float:
        """Share of the budget done before this step, in [0, 1)."""
        return (self.epoch + self.step / self.steps_per_epoch) / self.epochs


@dataclass
class MethodContext:
    """What a method may look at when it is built.

    ``teacher`` is frozen (eval mode, ``requires_grad=False``) and is *not* registered as a submodule
    of the method, so it can never reach the optimizer or the method's ``state_dict``. ``student`` is
    the network being trained; a method may :meth:`TappedModel.inject` modules into it, or replace its
    ``classifier`` (they then stay at inference and count as the student's parameters; parameters a
    method freezes with ``requires_grad=False`` are counted at inference but never trained).
    """

    student: TappedModel
    teacher: TappedModel | None
    student_shapes: TapShapes
    teacher_shapes: TapShapes | None
    num_classes: int
    epochs: int
    steps_per_epoch: int


@dataclass
class TeacherData:
    """What :meth:`Method.prepare` gets: the teacher, the un-augmented training set and a cache folder.

    ``cache_dir`` sits beside the teacher's checkpoint; name cached files by ``teacher_sha256`` (and
    the hyperparameters they depend on) so a retrained teacher never reuses stale targets. The test
    split is there for facts a method records about its offline targets (e.g. the teacher's accuracy
    through a compressed layer), never for training.
    """

    teacher: TappedModel
    train_images: torch.Tensor
    train_labels: torch.Tensor
    cache_dir: Path
    seed: int
    teacher_sha256: str
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


class Method(nn.Module):
    """Base class of a distillation method.

    Class attributes a plugin declares:
      name          registry name
      paper         citation shown by ``kdbench methods`` and in the report
      defaults      hyperparameters and their default values; a suite may override any of them, and
                    an unknown key is an error
      domains       what each hyperparameter may be (:mod:`kdbench.api.domains`), checked with its type
      search_space  the range each hyperparameter worth tuning is tuned over (:mod:`kdbench.api.search`),
                    the same for every suite; empty: the method runs at its settings only
      student_taps  taps of the student the losses read (subset of TAP_NAMES)
      teacher_taps  taps of the teacher the losses read; empty means the method needs no teacher
      reconstructed True when the method is a reconstruction not confirmed by released code

    Submodules created in ``__init__`` (connectors, heads) are the method's *extra trainable*
    modules: the trainer puts them in the student's optimizer and counts them as extra parameters.
    State that must survive an interrupted run (running class centres, say) belongs in buffers: the
    runner checkpoints and restores ``state_dict()`` at epoch boundaries, nothing else.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    domains: ClassVar[dict[str, Domain]] = {}
    search_space: ClassVar[dict[str, Space]] = {}
    student_taps: ClassVar[frozenset[str]] = frozenset({"logits"})
    teacher_taps: ClassVar[frozenset[str]] = frozenset()
    reconstructed: ClassVar[bool] = False

    def __init__(self, hp: dict[str, Any], ctx: MethodContext) -> None:
        super().__init__()
        self.hp = dict(hp)
        self.ctx = ctx  # a plain dataclass: its modules are not registered as ours

    @classmethod
    def needs_teacher(cls) -> bool:
        return bool(cls.teacher_taps)

    @classmethod
    def taps_needed(cls, hp: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
        """The taps (student's, teacher's) a run with ``hp`` reads, injects at or sizes modules
        from; checked against what each network gives before anything runs. Default: the
        declared ``student_taps`` and ``teacher_taps``."""
        return cls.student_taps, cls.teacher_taps

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any], task: Task) -> None:
        """Raise :class:`~kdbench.api.errors.ConfigError` for what ``domains`` cannot say (types and
        domains are already checked), against the data and the budget in ``task``. Called before any
        run, so a bad suite writes nothing."""

    def prepare(self, data: TeacherData) -> dict[str, Any]:
        """Once per run, before training: compute offline targets from the teacher (cache them in
        ``data.cache_dir``). Returns facts to record in the run record (e.g. time spent)."""
        return {}

    def losses(
        self, s: Taps, t: Taps | None, y: torch.Tensor, progress: TrainingProgress
    ) -> dict[str, torch.Tensor]:
        """Named scalar loss terms for one batch; the trainer sums them."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        """Hook at the end of each training epoch (e.g. refresh class centres)."""

    def eval_model(self, student: TappedModel) -> nn.Module:
        """The network evaluated at test time and counted at inference. Default: the student."""
        return student

    def record_extras(self) -> dict[str, Any]:
        """Method-specific facts to add to the run record at the end of a run."""
        return {}

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """The value this run used for each hyperparameter the plugin chose itself (``warmup: auto``),
        once built and prepared; the record keeps it in ``hyperparameters_resolved``, beside what the
        suite asked for. Default: none beyond what the harness finds (a hyperparameter whose value in
        ``self.hp`` the plugin replaced, or a word such as ``auto`` that ``prepare`` reported a value
        for under the hyperparameter's name)."""
        return {}
