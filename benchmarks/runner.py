"""The run matrix: every (method, seed) cell of a suite, each ending in one honest JSON record.

Guarantees:
- all input is validated before the first record is written (unknown method, bad hyperparameter,
  missing data, unavailable device): a bad invocation leaves ``results/`` untouched;
- paired runs: for a seed, every method's student starts from the same initialisation and sees the
  same batches in the same order with the same augmentation;
- lockstep: the pending cells of a seed train as one group on one data stream, the teacher running
  once per batch for all of them; a cell's record is bitwise what it would be trained alone
  (``lockstep=False``), and its cost is what it would cost alone;
- idempotent: a cell whose record exists with the same ``config_hash`` (and status ``ok`` or
  ``diverged``) is skipped; ``failed`` cells are retried;
- nothing lost: each epoch ends with a checkpoint per cell, and an interrupted group resumes every
  unfinished cell from its own; a NaN loss ends a cell as ``diverged``; an exception ends it as
  ``failed`` with the error, and the others go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from kdbench import records
from kdbench.cell import CellRun, RunSpec, SharedRun
from kdbench.config import PROTOCOL_VERSION, MethodEntry, SuiteConfig, check_seed, stable_hash
from kdbench.data import DATASETS, Dataset, head, load_dataset
from kdbench.environment import peak_memory, reset_peak_memory, resolve_device, set_determinism
from kdbench.errors import StorageError
from kdbench.locks import suite_lock
from kdbench.method import Task
from kdbench.models import build_model
from kdbench.paths import check_writable_folder
from kdbench.progress import Progress, forward_logs
from kdbench.registry import get_method, resolve_hyperparameters
from kdbench.sources import plugin_sources_sha256
from kdbench.teacher import TeacherInfo, get_teacher
from kdbench.trainer import train_epoch


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
        check_seed(s, "--seeds")
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
    lockstep: bool = True,
) -> list[dict]:
    """Run (or skip) every cell; returns the records, in plan order."""
    specs = plan(suite, methods, seeds)
    torch_device = resolve_device(device)
    build_model(suite.student_model, 10)  # unknown model names fail here, before any work
    build_model(suite.teacher.model, 10)
    full = load_dataset(suite.dataset, data_dir, torch_device, download)
    data = head(full, suite.train_size, suite.test_size, f"{suite.path}: ")
    teacher_data = head(full, suite.teacher.train_size, suite.test_size, f"{suite.path}: teacher.")
    results_dir = check_writable_folder(results_dir)  # the last check, and the first write
    lock = suite_lock(results_dir, suite.name)
    bar = Progress(total=len(specs), enabled=progress)
    say = log or bar.write
    try:
        with forward_logs(say):
            return _run(suite, specs, data, teacher_data, torch_device, results_dir, bar, say, lockstep)
    finally:
        bar.close()
        lock.release()


def _run(suite, specs, data, teacher_data, torch_device, results_dir, bar, say, lockstep) -> list[dict]:
    deterministic = set_determinism(torch_device)
    teacher, tinfo, teacher_test_features = None, None, None
    if any(c.method_cls.needs_teacher() for c in specs):
        teacher, tinfo, teacher_test_features = get_teacher(
            suite, teacher_data, torch_device, results_dir, deterministic, say
        )
        say(f"teacher {tinfo.model}: {tinfo.test_acc:.2f}% test, sha256 {tinfo.sha256[:12]}…")
    shared = SharedRun(suite, data, torch_device, deterministic, results_dir, teacher, tinfo,
                       teacher_test_features)

    out: dict[tuple[str, int], dict] = {}
    n = len(specs)
    for group in groups(specs, lockstep):
        pending = []
        for spec in group:
            config = cell_config(suite, spec, data, tinfo)
            run = CellRun(spec, config, stable_hash(config), shared)
            old = records.read_record(run.path)
            if _done_before(old, run.config_hash):
                run.discard_checkpoint()  # left by a kill between the record's write and its removal
                out[(spec.entry.label, spec.seed)] = old
                say(f"[{len(out)}/{n}] {spec.entry.label} seed {spec.seed}: done before ({old['status']}), skipped")
                bar.advance()
                continue
            pending.append(run)

        def done(run: CellRun, rec: dict) -> None:
            records.write_json_atomic(run.path, rec)
            run.discard_checkpoint()  # only now: a kill before the write resumes from it
            out[(rec["label"], rec["seed"])] = rec
            say(f"[{len(out)}/{n}] {summary_line(rec)}")
            bar.advance()

        try:
            run_group(pending, shared, bar, done, lockstep)
        except StorageError as exc:
            raise StorageError(f"{exc}; {len(out)} of {n} cells are recorded, and rerunning the same "
                               "command resumes the rest from their checkpoints") from None
    return [out[(s.entry.label, s.seed)] for s in specs]


def _done_before(old: dict | None, config_hash: str) -> bool:
    return isinstance(old, dict) and old.get("config_hash") == config_hash and old.get("status") in ("ok", "diverged")


def groups(specs: list[RunSpec], lockstep: bool) -> list[list[RunSpec]]:
    """Lockstep: one group per seed (the cells that share a data stream), in plan order; else one
    group per cell."""
    if not lockstep:
        return [[s] for s in specs]
    by_seed: dict[int, list[RunSpec]] = {}
    for s in specs:
        by_seed.setdefault(s.seed, []).append(s)
    return list(by_seed.values())


def run_group(
    runs: list[CellRun], shared: SharedRun, bar: Progress, done: Callable[[CellRun, dict], None],
    lockstep: bool,
) -> None:
    """Train ``runs`` together to the end of the budget; ``done(run, record)`` as each cell ends (a
    cell that fails or diverges ends at once, the others at the budget's end)."""
    if not runs:
        return
    train, data = shared.suite.train, shared.data
    seed = runs[0].spec.seed
    t0 = time.perf_counter()
    reset_peak_memory(shared.device)

    ended: set[int] = set()

    def end(stopped_only: bool) -> None:
        for i, run in enumerate(runs):
            if i not in ended and (run.status != "ok" or not stopped_only):
                ended.add(i)
                group = {"lockstep": lockstep, "size": len(runs), "wall_s": time.perf_counter() - t0}
                done(run, run.finish(group, peak_memory(shared.device)))

    for run in runs:
        run.start()
    end(stopped_only=True)
    steps = math.ceil(len(data.train) / train.batch_size)
    for epoch in range(train.epochs):
        live = [r for r in runs if r.training and r.next_epoch == epoch]  # a resumed cell may be ahead
        if not live:
            continue
        names = live[0].spec.entry.label if len(live) == 1 else f"{len(live)} cells"
        bar.start_epoch(f"seed {seed} {names} ep {epoch + 1}/{train.epochs}", steps)
        teacher_s = train_epoch([r.cell for r in live], shared.teacher, data, train, seed, epoch,
                                on_step=lambda _: bar.step())
        for run in live:
            run.end_epoch(epoch, teacher_s)
        end(stopped_only=True)
    end(stopped_only=False)


def summary_line(rec: dict) -> str:
    head_ = f"{rec['label']} seed {rec['seed']}: {rec['status']}"
    if rec["status"] == "failed":
        return f"{head_} ({rec['error']})"
    acc = "" if rec["final_acc"] is None else f"  final {rec['final_acc']:.2f}%  best {rec['best_acc']:.2f}%"
    return f"{head_}{acc}  ({rec['cost_s']:.1f} s alone, {rec['images_per_s']:.0f} img/s)"
