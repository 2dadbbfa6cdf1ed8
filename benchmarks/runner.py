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
  ``failed`` with the error, and the others go on;
- shareable: a cell runs under its claim, so processes sharing a results folder (two runs, or the
  workers of an executor, see ``dispatch.py``) never run one twice.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from kdbench import claims, records
from kdbench.cell import CellRun, RunSpec, SharedRun
from kdbench.config import PROTOCOL_VERSION, MethodEntry, SuiteConfig, check_seed, stable_hash
from kdbench.data import DATASETS, Dataset, DatasetSpec, head, load_dataset
from kdbench.environment import peak_memory, reset_peak_memory, resolve_device, set_determinism
from kdbench.errors import StorageError
from kdbench.executors import ExecutorConfig
from kdbench.method import Task
from kdbench.paths import check_writable_folder
from kdbench.progress import Progress, forward_logs
from kdbench.registry import get_method, resolve_hyperparameters
from kdbench.sources import plugin_sources_sha256
from kdbench.suite_models import build_student, build_teacher, check_taps, model_identity
from kdbench.teacher import TeacherInfo, checkpoint_state, get_teacher, load_checkpoint
from kdbench.trainer import train_epoch


def plan(
    suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None, spec: DatasetSpec | None = None,
) -> list[RunSpec]:
    """The cells to run, validated: every method registered, every hyperparameter known (for the
    dataset ``spec``; default: the suite's built-in dataset)."""
    entries = list(suite.methods)
    if methods:
        known = {e.label for e in entries} | {e.method for e in entries}
        for m in methods:
            if m not in known:
                get_method(m)  # neither a suite label nor registered: ConfigError naming the registered
                entries.append(MethodEntry(m, m))
        entries = [e for e in entries if e.label in methods or e.method in methods]
    if spec is None and isinstance(suite.dataset, str):
        spec = DATASETS[suite.dataset]
    if spec is None:
        raise ValueError("plan() needs the spec of the user's dataset, known once it is loaded")
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
    student = model_identity(suite.student_model, suite.student_taps, suite)
    return {
        "protocol": PROTOCOL_VERSION,
        **data.identity(),
        "data_sha256": data.sha256,
        "train_size": len(data.train),
        "test_size": len(data.test),
        "student_model": suite.student_model,
        **({"student_identity": student} if student else {}),
        "train": asdict(suite.train),
        "method": cell.entry.method,
        "hyperparameters": cell.hyperparameters,
        "method_sources_sha256": plugin_sources_sha256(cell.method_cls),
        "seed": cell.seed,
        "teacher_sha256": teacher.sha256 if (teacher and cell.method_cls.needs_teacher()) else None,
        **suite.fast_path.hashed(),
    }


@dataclass(frozen=True)
class Prepared:
    """A run validated and ready: its cells, device, data and results folder (and the user's teacher
    checkpoint, read once while it was verified)."""

    suite: SuiteConfig
    specs: list[RunSpec]
    device: torch.device
    data: Dataset
    teacher_data: Dataset
    results_dir: Path
    teacher_state: dict | None = None


def prepare(
    suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None, device: str | None,
    data_dir: str | None, download: bool, results_dir: str | Path,
) -> Prepared:
    """Every check a run makes before its first write, in order; the last is the results folder.
    A built-in dataset's cells and models are checked before its data is read; the user's data
    is read first, since its classes and image size are what they are checked against."""
    builtin = DATASETS.get(suite.dataset) if isinstance(suite.dataset, str) else None
    checked = checked_plan(suite, methods, seeds, builtin) if builtin else None
    torch_device = resolve_device(device)
    full = load_dataset(suite.dataset, data_dir, torch_device, download)
    specs, state = checked or checked_plan(suite, methods, seeds, full.spec)
    data = head(full, suite.train_size, suite.test_size, f"{suite.path}: ")
    teacher_data = head(full, suite.teacher.train_size, suite.test_size, f"{suite.path}: teacher.")
    return Prepared(suite, specs, torch_device, data, teacher_data, check_writable_folder(results_dir), state)


def checked_plan(
    suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None, spec: DatasetSpec,
) -> tuple[list[RunSpec], dict | None]:
    """:func:`plan`, then the networks built (unknown references and bad taps fail here), each
    method's taps checked against them, and the user's teacher checkpoint verified; returns the
    cells and that checkpoint's state dict (None without one)."""
    specs = plan(suite, methods, seeds, spec)
    student = build_student(suite, spec)
    teacher = build_teacher(suite, spec) if any(c.method_cls.needs_teacher() for c in specs) else None
    check_taps(specs, suite, student, teacher)
    state = None
    if teacher is not None and suite.teacher.checkpoint:
        state = checkpoint_state(suite)
        load_checkpoint(teacher, state, suite)
    return specs, state


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
    executor: ExecutorConfig | None = None,
) -> list[dict]:
    """Run (or skip) every cell, here or through ``executor``; returns the records, in plan order."""
    executor = executor or ExecutorConfig()
    executor.check_available()
    p = prepare(suite, methods, seeds, device, data_dir, download, results_dir)
    bar = Progress(total=len(p.specs), enabled=progress)
    say = log or bar.write
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(executor.threads or threads)  # this process's cells, and the teacher
        with forward_logs(say):
            if executor.kind == "local":
                return run_here(p, bar, say, lockstep)
            from kdbench.dispatch import run_dispatched  # it builds on this module


            return run_dispatched(p, executor, data_dir, device, bar, say, lockstep)
    finally:
        torch.set_num_threads(threads)
        bar.close()


def shared_run(p: Prepared, say: Callable[[str], None]) -> SharedRun:
    """The teacher (verified, or trained now under its lock) and what every cell shares."""
    deterministic = set_determinism(p.device, p.suite.fast_path.deterministic)
    teacher, tinfo, features = None, None, None
    if any(c.method_cls.needs_teacher() for c in p.specs):
        teacher, tinfo, features = get_teacher(p.suite, p.teacher_data, p.device, p.results_dir, deterministic, say,
                                               checkpoint=p.teacher_state)
        say(f"teacher {tinfo.model}: {tinfo.test_acc:.2f}% test, sha256 {tinfo.sha256[:12]}…")
    return SharedRun(p.suite, p.data, p.device, deterministic, p.results_dir, teacher, tinfo, features)


def cell_run(spec: RunSpec, shared: SharedRun) -> CellRun:
    config = cell_config(shared.suite, spec, shared.data, shared.tinfo)
    return CellRun(spec, config, stable_hash(config), shared)


def done_record(run: CellRun) -> dict | None:
    """The cell's record if it is done (``ok`` or ``diverged`` under the same config hash)."""
    old = records.read_record(run.path)
    if isinstance(old, dict) and old.get("config_hash") == run.config_hash and old.get("status") in ("ok", "diverged"):
        run.discard_checkpoint()  # left by a kill between the record's write and its removal
        return old
    return None


def run_here(p: Prepared, bar: Progress, say: Callable[[str], None], lockstep: bool) -> list[dict]:
    """Every cell of ``p`` in this process, group by group (see :class:`ClaimedRounds`)."""
    rounds = ClaimedRounds(shared_run(p, say), len(p.specs), bar, say, lockstep)
    todo = groups(p.specs, lockstep)
    how_done = "done before"
    while todo:
        todo = rounds.run_round(todo, how_done)
        how_done = "done by another process"
    return [rounds.out[(s.entry.label, s.seed)] for s in p.specs]


class ClaimedRounds:
    """Cells run under their claims, so processes sharing a results folder never run one twice.

    Each round skips the cells already done, runs the ones this process can claim (a group's
    claimable cells together), and leaves the rest, held by another live process, for the next
    round; a round that could claim nothing first waits for one claim to free. A cell whose holder
    died is claimed and run here then; one whose holder finished is done by the next round."""

    def __init__(self, shared: SharedRun, n: int, bar: Progress, say: Callable[[str], None], lockstep: bool):
        self.shared, self.n, self.bar, self.say, self.lockstep = shared, n, bar, say, lockstep
        self.out: dict[tuple[str, int], dict] = {}

    def run_round(self, todo: list[list[RunSpec]], how_done: str) -> list[list[RunSpec]]:
        left, ran = [], False
        folder, suite = self.shared.results_dir, self.shared.suite.name
        for group in todo:
            runs = [cell_run(s, self.shared) for s in group]
            pending = [r for r in runs if not self._skip_if_done(r, how_done)]
            held = claims.take(folder, suite, [r.spec for r in pending])
            mine = [r for r in pending if claims.key(r.spec) in held]
            try:
                self._run(mine)
            finally:
                claims.release(held)
            ran = ran or bool(mine)
            if rest := [r.spec for r in pending if claims.key(r.spec) not in held]:
                left.append(rest)
        if left and not ran:
            claims.wait_for(folder, suite, left[0][0])
        return left

    def _skip_if_done(self, run: CellRun, how: str) -> bool:
        rec = done_record(run)
        if rec is not None:
            self._finished(rec, f"{run.spec.entry.label} seed {run.spec.seed}: {how} ({rec['status']}), skipped")
        return rec is not None

    def _run(self, runs: list[CellRun]) -> None:
        def done(run: CellRun, rec: dict) -> None:
            records.write_json_atomic(run.path, rec)
            run.discard_checkpoint()  # only now: a kill before the write resumes from it
            self._finished(rec, summary_line(rec))

        try:
            run_group(runs, self.shared, self.bar, done, self.lockstep)
        except StorageError as exc:
            raise StorageError(f"{exc}; {len(self.out)} of {self.n} cells are recorded, and rerunning the "
                               "same command resumes the rest from their checkpoints") from None

    def _finished(self, rec: dict, line: str) -> None:
        self.out[(rec["label"], rec["seed"])] = rec
        self.say(f"[{len(self.out)}/{self.n}] {line}")
        self.bar.advance()


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
                                on_step=lambda _: bar.step(), precision=shared.suite.fast_path.precision)
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
