"""The run matrix: every (method, seed) cell of a suite, each ending in one honest JSON record.

Guarantees:
- all input is validated before the first record is written (unknown method, bad hyperparameter,
  missing data, unavailable device): a bad invocation leaves ``results/`` untouched;
- paired runs: for a seed, every method's student starts from the same initialisation and sees the
  same batches in the same order with the same augmentation;
- idempotent: a cell whose record exists with the same ``config_hash`` (and status ``ok`` or
  ``diverged``) is skipped; ``failed`` cells are retried;
- nothing lost: each epoch ends with a checkpoint, and an interrupted cell resumes from it with the
  data stream it would have seen; a NaN loss ends the cell as ``diverged``; an exception ends it as
  ``failed`` with the error, and the suite goes on.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from kdbench import records
from kdbench.config import PROTOCOL_VERSION, MethodEntry, SuiteConfig, stable_hash
from kdbench.cost import inference_flops, parameter_counts
from kdbench.data import DATASETS, Dataset, head, load_dataset
from kdbench.diagnostics import kernel_gap, pooled_features
from kdbench.environment import (
    environment, peak_memory, reset_peak_memory, resolve_device, seed_everything, set_determinism,
)
from kdbench.errors import ConfigError
from kdbench.method import Method, MethodContext, Task, TeacherData
from kdbench.models import build_model
from kdbench.models.tapped import TappedModel
from kdbench.progress import Progress
from kdbench.registry import get_method, resolve_hyperparameters
from kdbench.sources import plugin_sources_sha256
from kdbench.teacher import TeacherInfo, get_teacher
from kdbench.trainer import epoch_losses, evaluate, make_cell, train_epoch

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


def plan(suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None) -> list[RunSpec]:
    """The cells to run, validated: every method registered, every hyperparameter known."""
    entries = list(suite.methods)
    if methods:
        known = {e.label for e in entries} | {e.method for e in entries}
        for m in methods:
            if m not in known:
                get_method(m)  # neither a suite label nor registered: ConfigError naming the registered
                entries.append(MethodEntry(m, m))
        entries = [e for e in entries if e.label in methods or e.method in methods]
    spec = DATASETS[suite.dataset]
    task = Task(spec.num_classes, (spec.in_channels, spec.image_size, spec.image_size))
    resolved = {e.label: resolve_hyperparameters(e.method, e.overrides, task) for e in entries}
    for s in seeds or []:
        if s < 0:
            raise ConfigError(f"seeds must be non-negative, got {s}")
    seed_list = list(seeds) if seeds else list(suite.seeds)
    return [
        RunSpec(e, get_method(e.method), resolved[e.label], s) for s in seed_list for e in entries
    ]


def cell_config(suite: SuiteConfig, cell: RunSpec, data: Dataset, teacher: TeacherInfo | None) -> dict:
    """Everything that determines a cell's result; its hash is the record's ``config_hash``."""
    return {
        "protocol": PROTOCOL_VERSION,
        "dataset": data.spec.name,
        "data_sha256": data.sha256,
        "train_size": len(data.train),
        "test_size": len(data.test),
        "student_model": suite.student_model,
        "train": asdict(suite.train),
        "method": cell.entry.method,
        "hyperparameters": cell.hyperparameters,
        "method_sources_sha256": plugin_sources_sha256(cell.method_cls),
        "seed": cell.seed,
        "teacher_sha256": teacher.sha256 if (teacher and cell.method_cls.needs_teacher()) else None,
    }


def run_suite(
    suite: SuiteConfig,
    *,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    device: str | None = "auto",
    data_dir: str | None = None,
    download: bool = False,
    results_dir: str | Path = "results",
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run (or skip) every cell; returns the records, in plan order."""
    cells = plan(suite, methods, seeds)
    torch_device = resolve_device(device)
    build_model(suite.student_model, 10)  # unknown model names fail here, before any work
    build_model(suite.teacher.model, 10)
    full = load_dataset(suite.dataset, data_dir, torch_device, download)
    data = head(full, suite.train_size, suite.test_size)
    deterministic = set_determinism(torch_device)
    results_dir = Path(results_dir)
    bar = Progress(total=len(cells), enabled=progress)
    say = log or bar.write

    teacher, tinfo, teacher_test_features = None, None, None
    if any(c.method_cls.needs_teacher() for c in cells):
        teacher_data = head(full, suite.teacher.train_size, suite.test_size)
        teacher, tinfo = get_teacher(suite, teacher_data, torch_device, results_dir, deterministic, say)
        teacher_test_features = pooled_features(teacher, data.test)
        say(f"teacher {tinfo.model}: {tinfo.test_acc:.2f}% test, sha256 {tinfo.sha256[:12]}…")

    out = []
    for i, cell in enumerate(cells, 1):
        config = cell_config(suite, cell, data, tinfo)
        h = stable_hash(config)
        path = records.record_path(results_dir, suite.name, cell.entry.label, cell.seed)
        old = records.read_record(path)
        if old is not None and old.get("config_hash") == h and old.get("status") in ("ok", "diverged"):
            say(f"[{i}/{len(cells)}] {cell.entry.label} seed {cell.seed}: done before ({old['status']}), skipped")
            out.append(old)
            bar.advance()
            continue
        rec = run_cell(
            suite, cell, config, h, data, teacher, tinfo, teacher_test_features, torch_device,
            deterministic, results_dir, bar,
        )
        records.write_json_atomic(path, rec)
        say(f"[{i}/{len(cells)}] {summary_line(rec)}")
        out.append(rec)
        bar.advance()
    bar.close()
    return out


def summary_line(rec: dict) -> str:
    head_ = f"{rec['label']} seed {rec['seed']}: {rec['status']}"
    if rec["status"] == "failed":
        return f"{head_} ({rec['error']})"
    acc = "" if rec["final_acc"] is None else f"  final {rec['final_acc']:.2f}%  best {rec['best_acc']:.2f}%"
    return f"{head_}{acc}  ({rec['wall_s']:.1f} s, {rec['images_per_s']:.0f} img/s)"


def checkpoint_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return Path(results_dir) / suite / "checkpoints" / f"{label}__seed{seed}.pt"


def run_cell(
    suite: SuiteConfig, cell: RunSpec, config: dict, config_hash: str, data: Dataset,
    teacher: TappedModel | None, tinfo: TeacherInfo | None, teacher_test_features: torch.Tensor | None,
    device: torch.device, deterministic: bool, results_dir: Path, bar: Progress,
) -> dict:
    """Train one cell to the end of its budget and return its record (never raises for a run error)."""
    train = suite.train
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {
        "schema": records.SCHEMA_VERSION,
        "suite": suite.name,
        "label": cell.entry.label,
        "method": cell.entry.method,
        "paper": cell.method_cls.paper,
        "reconstructed": cell.method_cls.reconstructed,
        "hyperparameters": cell.hyperparameters,
        "seed": cell.seed,
        "status": "ok",
        "error": None,
        "config_hash": config_hash,
        "config": config,
        "dataset": {"name": data.spec.name, "source": data.source, "sha256": data.sha256,
                    "n_train": len(data.train), "n_test": len(data.test)},
        "student_model": suite.student_model,
        "teacher_model": suite.teacher.model,
        "teacher_sha256": tinfo.sha256 if tinfo else None,
        "teacher_acc": tinfo.test_acc if tinfo else None,
        "teacher_n_train": tinfo.n_train if tinfo else None,
        "environment": environment(device, deterministic),
        "budget_epochs": train.epochs,
        "epochs": [],
        "final_acc": None,
        "best_acc": None,
        "best_epoch": None,
        "diagnostics": {"kernel_gap_test": None},
    }
    ckpt = checkpoint_path(results_dir, suite.name, cell.entry.label, cell.seed)
    train_s = 0.0
    images = 0
    reset_peak_memory(device)
    try:
        seed_everything(cell.seed)  # first draw after this: the student's weights, same for every method
        student = build_model(suite.student_model, data.spec.num_classes, data.spec.in_channels).to(device)
        input_shape = tuple(data.train.images.shape[1:])
        seed_everything(cell.seed + METHOD_INIT_STREAM)
        ctx = MethodContext(
            student=student,
            teacher=teacher if cell.method_cls.needs_teacher() else None,
            student_shapes=student.tap_shapes(input_shape),
            teacher_shapes=teacher.tap_shapes(input_shape) if cell.method_cls.needs_teacher() else None,
            num_classes=data.spec.num_classes,
            epochs=train.epochs,
            steps_per_epoch=math.ceil(len(data.train) / train.batch_size),
        )
        method = cell.method_cls(cell.hyperparameters, ctx).to(device)
        if cell.method_cls.needs_teacher():
            rec["prepare"] = method.prepare(TeacherData(
                teacher=teacher, train_images=data.train.images, train_labels=data.train.labels,
                cache_dir=Path(tinfo.path).parent / "offline", seed=suite.teacher.seed,
                teacher_sha256=tinfo.sha256, test_images=data.test.images, test_labels=data.test.labels,
            ))
        tcell = make_cell(student, method, train.optimizer)
        seed_everything(cell.seed + TRAIN_RNG_STREAM)
        start_epoch = _resume(ckpt, config_hash, tcell, rec)
        steps = ctx.steps_per_epoch
        for epoch in range(start_epoch, train.epochs):
            bar.start_epoch(f"{cell.entry.label} s{cell.seed} ep {epoch + 1}/{train.epochs}", steps)
            _sync(device)
            te = time.perf_counter()
            train_epoch([tcell], teacher, data, train, cell.seed, epoch, on_step=lambda _: bar.step())
            _sync(device)
            epoch_s = time.perf_counter() - te
            train_s += epoch_s
            images += len(data.train)
            if tcell.status != "ok":
                rec["status"] = "diverged"
                rec["error"] = f"non-finite loss at epoch {epoch + 1}: {tcell.diverged_at['terms']}"
                break
            acc = evaluate(method.eval_model(student), data.test)
            rec["epochs"].append({
                "epoch": epoch + 1,
                "lr_end": _lr_of(tcell),  # learning rate at the epoch's last step
                "loss": epoch_losses(tcell),
                "test_acc": acc,
                "train_s": epoch_s,
            })
            _save_checkpoint(ckpt, config_hash, tcell, rec, epoch + 1)
        eval_model = method.eval_model(student)
        rec["params"] = parameter_counts(student, method, eval_model)
        rec["inference_flops"] = inference_flops(eval_model, input_shape, device)
        rec["extras"] = method.record_extras()
        if rec["status"] == "ok" and teacher_test_features is not None:
            rec["diagnostics"]["kernel_gap_test"] = kernel_gap(
                pooled_features(student, data.test), teacher_test_features
            )
    except Exception as exc:  # one run's failure is recorded; the suite goes on
        rec["status"] = "failed"
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc(limit=8)
    accs = [e["test_acc"] for e in rec["epochs"]]
    if accs:
        rec["best_acc"] = max(accs)
        rec["best_epoch"] = accs.index(rec["best_acc"]) + 1
        if rec["status"] == "ok":
            rec["final_acc"] = accs[-1]
    rec["wall_s"] = time.perf_counter() - t0
    rec["train_s"] = train_s
    rec["images_per_s"] = images / train_s if train_s > 0 else 0.0
    rec["peak_memory_mb"], rec["peak_memory_kind"] = peak_memory(device)
    rec["started_at"] = started.isoformat(timespec="seconds")
    rec["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if rec["status"] == "ok" and ckpt.exists():
        ckpt.unlink()
    return rec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _lr_of(tcell) -> float:
    return float(tcell.optimizer.param_groups[0]["lr"])


def _save_checkpoint(path: Path, config_hash: str, tcell, rec: dict, epochs_done: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "config_hash": config_hash,
        "epochs_done": epochs_done,
        "student": tcell.student.state_dict(),
        "method": tcell.method.state_dict(),
        "optimizer": tcell.optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "history": rec["epochs"],
    }, tmp)
    tmp.replace(path)


def _resume(path: Path, config_hash: str, tcell, rec: dict) -> int:
    """Restore an interrupted cell from its last epoch checkpoint; returns the epoch to start at."""
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        path.unlink()
        return 0
    if state.get("config_hash") != config_hash:
        path.unlink()
        return 0
    tcell.student.load_state_dict(state["student"])
    tcell.method.load_state_dict(state["method"])
    tcell.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    rec["epochs"] = list(state["history"])
    rec["resumed_from_epoch"] = state["epochs_done"]
    return int(state["epochs_done"])
