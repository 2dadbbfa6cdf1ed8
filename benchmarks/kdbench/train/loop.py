"""The training step and epoch loop: one data stream and one teacher pass feed every cell given.

A :class:`Cell` is one student being trained by one method. :func:`train_epoch` draws each batch
once, runs the teacher once with the union of the taps the live cells read (if any needs it), then
updates every live cell on that batch. Each cell steps under its own random state and its own
timer, and an exception in one cell ends that cell alone, so a cell's result and cost do not depend
on which cells share its stream.

The loop's own part of a step does not wait for the device (tests/test_no_sync.py, docs/speed.md): a
non-finite loss is noted on the device (the step, and its terms) and read once per cell at the
epoch's end, when the cell ends as ``diverged`` at the step it diverged.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from kdbench.api.errors import StorageError
from kdbench.api.method import Method, TrainingProgress, forward_taps_for
from kdbench.api.tapped import TappedModel
from kdbench.config.suite import OptimizerConfig, ScheduleConfig, TrainConfig
from kdbench.data.datasets import Dataset, Split, steps_per_epoch, test_batches, train_batches
from kdbench.train.environment import rng_state, set_rng_state
from kdbench.train.fast_path import autocast
from kdbench.train.isolation import check_terms
from kdbench.train.timing import Timer
from torch import nn


@dataclass
class Cell:
    """One (student, method) pair under training: its optimizer, running epoch sums, the random
    state its steps draw from, and the time they took."""

    student: TappedModel
    method: Method
    optimizer: torch.optim.Optimizer
    rng: dict[str, torch.Tensor]
    own: Timer
    status: str = "ok"  # "diverged" at the first non-finite loss, "failed" at an exception
    diverged_at: dict | None = None
    error: str | None = None
    traceback: str | None = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    precision: str = "fp32"
    watch: "NonFinite | None" = None  # this epoch's first non-finite loss, on the device

    def fail(self, exc: BaseException) -> None:
        if self.watch is not None and self.watch.read(self):  # an error caused by the NaNs before it
            return
        self.status = "failed"
        self.error, self.traceback = describe_failure(exc)


class NonFinite:
    """The first step of an epoch whose loss is not finite, and its terms, kept on the device."""

    def __init__(self, terms: dict[str, torch.Tensor], epoch: int) -> None:
        self.names, self.epoch = list(terms), epoch
        device = next(iter(terms.values())).device
        self.seen = torch.zeros((), dtype=torch.bool, device=device)
        self.step = torch.full((), -1, dtype=torch.int64, device=device)
        self.terms = torch.zeros(len(self.names), device=device)

    def update(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        first = bad & ~self.seen
        vec = torch.stack([terms[k].detach().float() for k in self.names])
        self.step = torch.where(first, step, self.step)
        self.terms = torch.where(first, vec, self.terms)
        self.seen = self.seen | bad

    def read(self, c: "Cell") -> bool:
        """Whether a loss was non-finite (a wait for the device); if so, ``c`` ends as diverged."""
        if not bool(self.seen):
            return False
        c.status = "diverged"
        c.diverged_at = {"epoch": self.epoch + 1, "step": int(self.step),
                         "terms": dict(zip(self.names, self.terms.tolist()))}
        return True


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """What a failed record says: the error in one line, and the traceback being handled."""
    return f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8)


class LabelsOnly(Method):
    """Cross-entropy on the labels: the harness's own objective for training a teacher, so the
    harness never depends on a plugin (the ``student_ce`` baseline computes the same loss)."""

    name = "labels_only"

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(s.logits, y)}


#: SGD updates all parameters with one multi-tensor kernel per operation instead of a Python loop
#: over them: the same arithmetic in the same order, so the same bits (a test checks it), for less
#: time per step on CPU, where torch does not choose it itself (docs/speed.md, "Bit-safe savings").
SGD_FOREACH = True


def build_optimizer(params: list[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0, foreach=SGD_FOREACH,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(opt: OptimizerConfig, sched: ScheduleConfig, epochs: int, epoch: int, progress: float) -> float:
    """Learning rate at ``epoch`` (from 0) plus ``progress`` ∈ [0, 1) through it."""
    if sched.name == "cosine":
        t = (epoch + progress) / epochs
        return opt.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if sched.name == "multistep":
        return opt.lr * sched.gamma ** sum(1 for m in sched.milestones if epoch >= m)
    return opt.lr


def make_cell(student: TappedModel, method: Method, cfg: OptimizerConfig, precision: str = "fp32") -> Cell:
    """The student and the method's extra modules share one optimizer; the teacher is never in it,
    nor is anything a method froze (an imported layer). The cell's random state starts as the
    global one is now."""
    params = [p for p in [*student.parameters(), *method.parameters()] if p.requires_grad]
    device = next(student.parameters()).device
    return Cell(student=student, method=method, optimizer=build_optimizer(params, cfg),
                rng=rng_state(device), own=Timer(device), precision=precision)


def run_as(c: Cell, fn: Callable[[], None], timer: Timer | None = None) -> None:
    """``fn()`` under the cell's random state, timed by ``timer`` (default: the cell's own training
    time); an exception fails the cell, not the caller, except a failed write (disk full), which
    would fail every cell after it: that stops the run."""
    device = c.own.device
    set_rng_state(c.rng, device)
    try:
        with (timer or c.own).region():
            fn()
    except StorageError:
        raise
    except Exception as exc:  # one cell's bug must not stop the cells that share its stream
        c.fail(exc)
    finally:
        c.rng = rng_state(device)


def train_epoch(
    cells: list[Cell],
    teacher: TappedModel | None,
    data: Dataset,
    train: TrainConfig,
    seed: int,
    epoch: int,
    on_step: Callable[[int], None] | None = None,
    precision: str = "fp32",
    check: Callable[[list[Cell], str], None] | None = None,
) -> float:
    """One epoch over the training set for every live cell, on the (seed, epoch) data stream, the
    teacher's pass in ``precision``. Returns the seconds the shared teacher pass took (0 when no
    live cell reads the teacher). ``check(cells, what)`` after the steps and after each cell's own
    ``on_epoch_end``: did what the cells share change (:mod:`kdbench.run.referee`)?"""
    live = [c for c in cells if c.status == "ok"]
    needs_teacher = teacher is not None and any(c.method.needs_teacher() for c in live)
    teacher_taps = frozenset().union(*(c.method.teacher_taps for c in live))
    teacher_time = Timer(data.train.images.device)
    steps = steps_per_epoch(len(data.train), train.batch_size)
    for c in live:
        c.student.train()
        c.method.train()
        c.sums, c.steps, c.watch = {}, 0, None
    for step, (x, y) in enumerate(train_batches(data.train, data.spec, train.batch_size, seed, epoch)):
        lr = lr_at(train.optimizer, train.schedule, train.epochs, epoch, step / steps)
        progress = TrainingProgress(epoch, step, steps, train.epochs)
        t_taps = None
        if needs_teacher and any(c.status == "ok" and c.method.needs_teacher() for c in live):
            with torch.no_grad(), teacher_time.region(), autocast(precision, x.device):
                t_taps = forward_taps_for(teacher, x, teacher_taps)
        for c in live:
            if c.status == "ok":
                run_as(c, lambda: _step(c, x, y, t_taps, progress, lr))
        if on_step is not None:
            on_step(step)
    if check is not None:
        check(live, f"epoch {epoch + 1}'s steps")
    for c in live:
        if c.status == "ok" and not (c.watch is not None and c.watch.read(c)):
            run_as(c, lambda: c.method.on_epoch_end(epoch))
            if check is not None and type(c.method).on_epoch_end is not Method.on_epoch_end:
                check([c], f"its on_epoch_end (epoch {epoch + 1})")
    return teacher_time.seconds()


def _step(c: Cell, x, y, t_taps, progress: TrainingProgress, lr: float) -> None:
    for group in c.optimizer.param_groups:
        group["lr"] = lr
    with autocast(c.precision, x.device):
        s_taps = forward_taps_for(c.student, x, c.method.student_taps)
        terms = c.method.losses(s_taps, t_taps, y, progress)
        check_terms(terms)
        loss = sum(terms.values())
    c.watch = c.watch or NonFinite(terms, progress.epoch)
    c.watch.update(loss, terms, progress.step)
    c.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    c.optimizer.step()
    for k, v in terms.items():
        d = v.detach()
        c.sums[k] = c.sums[k] + d if k in c.sums else d.clone()
    c.steps += 1


def epoch_losses(c: Cell) -> dict[str, float]:
    """Mean of each named loss term over the epoch's steps, plus their sum as ``total``."""
    means = {k: float(v) / max(c.steps, 1) for k, v in c.sums.items()}
    means["total"] = sum(means.values())
    return means


#: Test-time batch: small enough to stay in a CPU's caches (docs/speed.md).
EVAL_BATCH = 256


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH, precision: str = "fp32") -> float:
    """Top-1 accuracy in percent on ``split`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for x, y in test_batches(split, batch_size):
        with autocast(precision, x.device):
            logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
    model.train(was_training)
    return 100.0 * int(correct) / len(split)
