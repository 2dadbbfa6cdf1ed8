"""One cell's life, from its seeds to its record: start, end of each epoch, finish.

A cell is built from generators seeded by its own seed (the student's weights are the same for
every method of a seed), draws every training-time random number from its own state, and saves that
state with each epoch's checkpoint. So its record is bitwise the same trained alone, in any group,
in any order, and after a kill and a resume (CPU, at a fixed thread count). An exception in any
phase ends this cell as ``failed``; a non-finite loss ends it as ``diverged``; nothing it does
stops the cells it shares a data stream with, except a change to the data they share, which no cell
may train on (:mod:`kdbench.run.referee`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from kdbench.api.atomic import save_atomic
from kdbench.api.errors import StorageError
from kdbench.api.method import Method, MethodContext, TeacherData
from kdbench.api.paths import under
from kdbench.config.hashing import stable_hash
from kdbench.config.suite import MethodEntry, SuiteConfig
from kdbench.data.datasets import Dataset, images_per_epoch, steps_per_epoch
from kdbench.models import to_device
from kdbench.models.pair import build_student
from kdbench.train import records
from kdbench.train.cost import inference_flops, parameter_counts
from kdbench.train.diagnostics import kernel_gap, pooled_features, test_pass
from kdbench.train.environment import environment, seed_everything
from kdbench.train.fast_path import compile_forward, compile_note, eager
from kdbench.train.isolation import InputGuard
from kdbench.train.loop import Cell, describe_failure, epoch_losses, evaluate, make_cell, run_as
from kdbench.train.teacher import Teacher, TeacherInfo
from kdbench.train.timing import Timer

# Offsets that give the method's own modules and the training-time RNG streams of their own, so a
# method that builds a connector does not shift the student's initialisation or another method's draws.
METHOD_INIT_STREAM = 1_000_003
TRAIN_RNG_STREAM = 2_000_003


@dataclass(frozen=True)
class RunSpec:
    """One planned cell of the matrix: a method entry of the suite, resolved, at one seed."""

    entry: MethodEntry
    method_cls: type[Method]
    hyperparameters: dict[str, Any]
    seed: int
    trial: dict | None = None  # a tuning trial: its record's ``trial`` (index, of, sampler, validation)
    tuning: dict | None = None  # a tuned suite's final cell: its record's ``tuning`` (the trial chosen)

    @property
    def stem(self) -> str:
        """The cell's name in its record's, checkpoint's and claim's file names."""
        trial = f"__trial{self.trial['index']}" if self.trial else ""
        return f"{self.entry.label}{trial}__seed{self.seed}"

    @property
    def key(self) -> tuple[str, int, int | None]:
        """The cell among a run's cells, as :func:`kdbench.train.records.cell_key` reads it from a record."""
        return self.entry.label, self.seed, self.trial["index"] if self.trial else None


@dataclass(frozen=True)
class SharedRun:
    """What every cell of one ``kdbench run`` shares: the suite, the data, the teacher, the device."""

    suite: SuiteConfig
    data: Dataset
    device: torch.device
    deterministic: bool
    results_dir: Path
    teacher: Teacher | None  # None when no cell of the run reads one
    folder: Path | None = None  # its cells' runs/, checkpoints/ and claims/ (default: results_dir/<suite>)
    guard: InputGuard = field(init=False, repr=False, compare=False)  # the checksums of the teacher and data

    def __post_init__(self) -> None:
        if self.folder is None:
            object.__setattr__(self, "folder", under(self.results_dir, self.suite.name))
        object.__setattr__(self, "guard", InputGuard(self.teacher.net if self.teacher else None, self.data))


def checkpoint_file(folder: Path, stem: str) -> Path:
    return under(folder, "checkpoints", f"{stem}.pt")


def checkpoint_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return checkpoint_file(under(results_dir, suite), f"{label}__seed{seed}")


#: The costs a checkpoint carries, so a resumed cell's record counts every epoch it holds (the
#: part of an epoch lost to a kill is not counted: it was trained again).
CARRIED = ("train_own_s", "teacher_s", "eval_s", "wall_s")


class CellRun:
    """A cell under way. ``start()``, then ``end_epoch()`` after each epoch it trained, then
    ``finish()`` for its record; ``cell`` is the trainer's state while it trains."""

    def __init__(self, spec: RunSpec, config: dict, config_hash: str, shared: SharedRun) -> None:
        self.spec, self.shared, self.config_hash = spec, shared, config_hash
        self.uses_teacher = spec.method_cls.needs_teacher()
        self.path = records.record_file(shared.folder, spec.stem)
        self.ckpt = checkpoint_file(shared.folder, spec.stem)
        self.rec = self._new_record(config)
        self.cell: Cell | None = None
        self.method: Method | None = None
        self.status, self.next_epoch = "ok", 0
        self.ended = False  # its record is built
        self.setup = Timer(shared.device)  # build, prepare, resume
        self.eval = Timer(shared.device)
        self.teacher_s = 0.0
        self.own_s_before = 0.0  # the cell's own training seconds at the last epoch's end
        self.test_features: torch.Tensor | None = None  # the pooled tap from the last epoch's evaluation
        self.carried = dict.fromkeys(CARRIED, 0.0)  # from the checkpoint resumed, if any
        self.t0 = time.perf_counter()

    @property
    def training(self) -> bool:
        return self.status == "ok" and self.next_epoch < self.shared.suite.train.epochs

    # -- start ---------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            with self.setup.region():
                self._build()
        except StorageError:  # an offline cache that cannot be written: the run stops, as for any write
            raise
        except Exception as exc:  # a broken constructor or prepare fails this cell alone
            self._fail(*describe_failure(exc))

    def _build(self) -> None:
        shared, spec, data = self.shared, self.spec, self.shared.data
        input_shape = tuple(data.train.images.shape[1:])
        seed_everything(spec.seed)  # first draw after this: the student's weights, same for every method
        fast = shared.suite.fast_path
        student = to_device(build_student(shared.suite, data.spec), shared.device, fast.channels_last)
        teacher = shared.teacher.net if self.uses_teacher else None
        seed_everything(spec.seed + METHOD_INIT_STREAM)
        ctx = MethodContext(
            student=student, teacher=teacher, student_shapes=student.tap_shapes(input_shape),
            teacher_shapes=teacher.tap_shapes(input_shape) if teacher is not None else None,
            num_classes=data.spec.num_classes, epochs=shared.suite.train.epochs,
            steps_per_epoch=steps_per_epoch(len(data.train), shared.suite.train.batch_size),
        )
        self.method = spec.method_cls(spec.hyperparameters, ctx).to(shared.device)
        if teacher is not None:
            tinfo = shared.teacher.info
            self.rec["prepare"] = self.method.prepare(TeacherData(
                teacher=teacher, train_images=data.train.images, train_labels=data.train.labels,
                cache_dir=self._cache_dir(), seed=shared.suite.teacher.seed,
                teacher_sha256=tinfo.sha256, test_images=data.test.images, test_labels=data.test.labels,
            ))
        if resolved := resolved_hyperparameters(spec, self.method, self.rec.get("prepare")):
            self.rec["hyperparameters_resolved"] = resolved
        if fast.compile:
            compile_forward(student)
        seed_everything(spec.seed + TRAIN_RNG_STREAM)
        self.cell = make_cell(student, self.method, shared.suite.train.optimizer, fast.precision)
        self.next_epoch = self._resume()

    def _cache_dir(self) -> Path:
        """Where the method caches offline targets: beside the teacher; a trial's in a folder of its
        validation split (of these training images), since its training images are another set."""
        folder = Path(self.shared.teacher.info.folder) / "offline"
        if self.spec.trial is None:
            return folder
        data = self.shared.data
        split = {**self.spec.trial["validation"], "images": len(data.train) + len(data.test)}
        return folder / f"validation-{stable_hash(split)[:12]}"

    def _resume(self) -> int:
        """Restore an interrupted cell from its last epoch checkpoint; returns the epoch to start at.
        A checkpoint that does not load (truncated; a pickle asking for code, which ``weights_only``
        refuses) or was saved for another configuration is removed, and the cell starts afresh. One
        that loads is trusted (see docs/guarantees.md), so the record names it by its sha256."""
        if not self.ckpt.is_file():
            return 0
        try:
            raw = self.ckpt.read_bytes()  # hashed and loaded from the same bytes
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("config_hash") != self.config_hash:
                raise ValueError("it was saved for another configuration")
        except Exception as exc:
            self.ckpt.unlink()
            self.rec["checkpoint_discarded"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return 0
        try:
            self._restore(state)
        except Exception as exc:  # loaded halfway: this cell's state is mixed, so it fails this time
            self.ckpt.unlink()
            raise RuntimeError(f"checkpoint {self.ckpt} could not be restored ({exc}); it was removed, "
                               "so a rerun starts this cell afresh") from None
        self.rec["resumed_from_epoch"] = state["epochs_done"]
        self.rec["resumed_from_sha256"] = hashlib.sha256(raw).hexdigest()
        return int(state["epochs_done"])

    def _restore(self, state: dict) -> None:
        c = self.cell
        c.student.load_state_dict(state["student"])
        c.method.load_state_dict(state["method"])
        c.optimizer.load_state_dict(state["optimizer"])
        c.rng = state["rng"]
        self.rec["epochs"] = list(state["history"])
        self.carried = {k: float(state["carried"][k]) for k in CARRIED}
        self.teacher_s = self.carried["teacher_s"]

    # -- end of an epoch -----------------------------------------------------------------------------

    def end_epoch(self, epoch: int, teacher_s: float) -> None:
        """After ``train_epoch`` has run this cell through ``epoch``: evaluate, record, checkpoint."""
        c = self.cell
        teacher_s = teacher_s if self.uses_teacher else 0.0
        self.teacher_s += teacher_s
        own_s = c.own.seconds()
        epoch_s = {"train_own_s": own_s - self.own_s_before, "teacher_s": teacher_s}
        self.own_s_before = own_s
        self.next_epoch = epoch + 1
        if c.status == "diverged":
            self.status = "diverged"
            at = c.diverged_at
            self.rec["error"] = f"non-finite loss at epoch {at['epoch']}, step {at['step']}: {at['terms']}"
            self.rec["diverged_at"] = at
            return
        if c.status == "ok":
            run_as(c, lambda: self._evaluate(epoch, epoch_s), self.eval)
        if c.status == "ok":  # saved after the evaluation, so it holds the state training resumes from
            run_as(c, lambda: self._save_checkpoint(epoch + 1), self.eval)
        if c.status == "failed":
            self._fail(c.error, c.traceback)

    def _evaluate(self, epoch: int, epoch_s: dict[str, float]) -> None:
        c, suite = self.cell, self.shared.suite
        model, precision = self.method.eval_model(c.student), suite.fast_path.precision
        if epoch + 1 == suite.train.epochs and model is c.student and not suite.fast_path.compile:
            # The last evaluation's pass also gives the kernel gap's features: one test pass, not two.
            acc, self.test_features = test_pass(c.student, self.shared.data.test, precision=precision)
        else:
            acc = evaluate(model, self.shared.data.test, precision=precision)
        self.rec["epochs"].append({
            "epoch": epoch + 1,
            "lr_end": float(c.optimizer.param_groups[0]["lr"]),  # learning rate at the epoch's last step
            "loss": epoch_losses(c),
            "test_acc": acc,
            **epoch_s,
        })

    def _save_checkpoint(self, epochs_done: int) -> None:
        c = self.cell
        save_atomic({
            "config_hash": self.config_hash,
            "epochs_done": epochs_done,
            "student": c.student.state_dict(),
            "method": c.method.state_dict(),
            "optimizer": c.optimizer.state_dict(),
            "rng": c.rng,
            "history": self.rec["epochs"],
            "carried": self._spent(),
        }, self.ckpt)

    def _spent(self) -> dict[str, float]:
        """The carried costs up to now: what a checkpoint saved now would carry."""
        c, carried = self.cell, self.carried
        return {
            "train_own_s": carried["train_own_s"] + (c.own.seconds() if c is not None else 0.0),
            "teacher_s": self.teacher_s,
            "eval_s": carried["eval_s"] + self.eval.seconds(),
            "wall_s": carried["wall_s"] + time.perf_counter() - self.t0,
        }

    # -- finish --------------------------------------------------------------------------------------

    def finish(self, group: dict, peak: tuple[float, str]) -> dict:
        """The record: results, costs, diagnostics. ``group`` says who shared the stream and how long
        it took; ``peak`` is the group's peak memory."""
        if self.status in ("ok", "diverged"):
            run_as(self.cell, self._final_facts, self.eval)
            if self.cell.status == "failed":
                self._fail(self.cell.error, self.cell.traceback)
        rec, self.ended = self.rec, True
        rec["status"] = self.status
        accs = [e["test_acc"] for e in rec["epochs"]]
        if accs:
            rec["best_acc"] = max(accs)
            rec["best_epoch"] = accs.index(rec["best_acc"]) + 1
            if self.status == "ok":
                rec["final_acc"] = accs[-1]
        rec.update(self._costs(group, peak))
        rec["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return rec

    def discard_checkpoint(self) -> None:
        """After the record is written (a kill before that resumes from the checkpoint): an ``ok`` or
        ``diverged`` cell is final; a ``failed`` one keeps its checkpoint for the retry."""
        if self.status in ("ok", "diverged"):
            self.ckpt.unlink(missing_ok=True)

    def _final_facts(self) -> None:
        c, shared, rec = self.cell, self.shared, self.rec
        input_shape = tuple(shared.data.train.images.shape[1:])
        eval_model = self.method.eval_model(c.student)
        rec["params"] = parameter_counts(c.student, self.method, eval_model)
        with eager(c.student):
            rec["inference_flops"] = inference_flops(eval_model, input_shape, shared.device)
        if note := compile_note(c.student, *([shared.teacher.net] if shared.teacher else [])):
            rec["fast_path"] = {**rec["fast_path"], "compile_note": note}
        rec["extras"] = self.method.record_extras()
        precision = shared.suite.fast_path.precision
        student_features = None
        if self.status == "ok":
            student_features = self.test_features
            if student_features is None:  # a compiled or replaced eval model, or resumed after the last epoch
                student_features = pooled_features(c.student, shared.data.test, precision)
        if student_features is not None and shared.teacher is not None:
            rec["diagnostics"]["kernel_gap_test"] = kernel_gap(student_features, shared.teacher.test_features)

    def _costs(self, group: dict, peak: tuple[float, str]) -> dict:
        """What this method costs alone (its own time plus the teacher passes it read) beside what
        the group it ran in took; see docs/records.md."""
        spent, setup = self._spent(), self.setup.seconds()
        own_train, evaluation = spent["train_own_s"], spent["eval_s"]
        train_s = own_train + self.teacher_s
        images = len(self.rec["epochs"]) * images_per_epoch(len(self.shared.data.train), self.shared.suite.train.batch_size)
        return {
            "cost_s": setup + train_s + evaluation,
            "time_split": {"setup_s": setup, "train_own_s": own_train, "teacher_s": self.teacher_s,
                           "eval_s": evaluation},
            "train_s": train_s,
            "images_per_s": images / train_s if train_s > 0 else 0.0,
            "wall_s": spent["wall_s"],
            "group": group,
            "peak_memory_mb": peak[0],
            "peak_memory_kind": peak[1],
            "peak_memory_scope": "group",
        }

    # -- the record ----------------------------------------------------------------------------------

    def stop(self, error: str) -> None:
        """Fail this cell from outside it (what its group shares was changed, by it or by another)."""
        self._fail(error, "")
        if self.ended:  # found after its finish: the record being written says so
            self.rec["status"], self.rec["final_acc"] = "failed", None
        if self.cell is not None:
            self.cell.status, self.cell.error, self.cell.traceback = "failed", error, ""

    def _fail(self, error: str, traceback: str) -> None:
        self.status = "failed"
        self.rec["error"], self.rec["traceback"] = error, traceback

    def _new_record(self, config: dict) -> dict[str, Any]:
        shared, spec, data = self.shared, self.spec, self.shared.data
        return {
            "schema": records.SCHEMA_VERSION,
            "suite": shared.suite.name,
            "label": spec.entry.label,
            "method": spec.entry.method,
            "paper": spec.method_cls.paper,
            "reconstructed": spec.method_cls.reconstructed,
            "hyperparameters": spec.hyperparameters,
            "seed": spec.seed,
            **({"trial": spec.trial, "evaluated_on": "validation"} if spec.trial else {}),
            **({"tuning": spec.tuning} if spec.tuning else {}),
            "status": "ok",
            "error": None,
            "config_hash": self.config_hash,
            "config": config,
            "dataset": {"name": data.spec.name, "source": data.source, "sha256": data.sha256,
                        "n_train": len(data.train), "n_test": len(data.test),
                        "mean": list(data.spec.mean), "std": list(data.spec.std),
                        **({"classes": list(data.classes)} if data.classes is not None else {})},
            "student_model": shared.suite.student_model,
            "teacher_model": shared.suite.teacher.model,
            **teacher_fields(shared.teacher.info if shared.teacher else None),
            "environment": environment(shared.device, shared.deterministic),
            "fast_path": asdict(shared.suite.fast_path),
            "budget_epochs": shared.suite.train.epochs,
            "steps_per_epoch": steps_per_epoch(len(data.train), shared.suite.train.batch_size),
            "epochs": [],
            "final_acc": None,
            "best_acc": None,
            "best_epoch": None,
            "diagnostics": {"kernel_gap_test": None},
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def resolved_hyperparameters(spec: RunSpec, method: Method, prepared: Any) -> dict[str, Any]:
    """The values the plugin chose for hyperparameters the suite left to it, by name: what its
    ``resolved_hyperparameters()`` says, a plain value it put in ``self.hp`` in place of the one
    asked, or, for one asked as a word where its default is a number (``k: auto``), the number its
    ``prepare()`` reported under the hyperparameter's name (``bregman_pca`` reports its ``k`` so)."""
    asked, defaults = spec.hyperparameters, spec.method_cls.defaults
    prepared = prepared if isinstance(prepared, dict) else {}
    out = {}
    for key, value in asked.items():
        now = method.hp.get(key, value)
        if isinstance(now, PLAIN) and (type(now) is not type(value) or now != value):
            out[key] = now
        elif isinstance(value, str) and not isinstance(defaults.get(key), str) and _is_number(prepared.get(key)):
            out[key] = prepared[key]
    out.update({k: v for k, v in method.resolved_hyperparameters().items() if k in asked})
    json.dumps(out)  # a value a record cannot hold fails this cell now, not its record's write
    return out


PLAIN = (bool, int, float, str)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def teacher_fields(info: TeacherInfo | None) -> dict[str, Any]:
    """The teacher's part of a record: all None for a run without one; a checkpoint teacher (trained
    outside the suite: no training-set size) also names its file."""
    if info is None:
        return {"teacher_sha256": None, "teacher_acc": None, "teacher_n_train": None}
    return {"teacher_sha256": info.sha256, "teacher_acc": info.test_acc, "teacher_n_train": info.n_train,
            **({"teacher_checkpoint": info.path} if info.n_train is None else {})}
