"""Running a planned matrix in this process: the shared teacher, then the cells group by group under
their claims, each group trained in lockstep to the end of its budget and each cell's record written
the moment it ends (the guarantees are in :mod:`kdbench.run.plan`)."""

from __future__ import annotations

import math
import time
from typing import Callable

from kdbench.api.errors import StorageError
from kdbench.config.hashing import stable_hash
from kdbench.run import claims
from kdbench.run.plan import Prepared, cell_config
from kdbench.run.progress import Progress
from kdbench.train import records
from kdbench.train.cell import CellRun, RunSpec, SharedRun
from kdbench.train.environment import peak_memory, reset_peak_memory, set_determinism
from kdbench.train.loop import train_epoch
from kdbench.train.teacher import get_teacher


def shared_run(p: Prepared, say: Callable[[str], None]) -> SharedRun:
    """The teacher (verified, or trained now under its lock) and what every cell shares."""
    deterministic = set_determinism(p.device, p.suite.fast_path.deterministic)
    teacher = None
    if any(c.method_cls.needs_teacher() for c in p.specs):
        teacher = get_teacher(p.suite, p.teacher_data, p.device, p.results_dir, deterministic, say,
                              checkpoint=p.teacher_state)
        info = teacher.info
        say(f"teacher {info.model}: {info.test_acc:.2f}% test, sha256 {info.sha256[:12]}…")
    return SharedRun(p.suite, p.data, p.device, deterministic, p.results_dir, teacher)


def cell_run(spec: RunSpec, shared: SharedRun) -> CellRun:
    config = cell_config(shared.suite, spec, shared.data, shared.teacher.info if shared.teacher else None)
    return CellRun(spec, config, stable_hash(config), shared)


def done_record(run: CellRun) -> dict | None:
    """The cell's record if it is done (``ok`` or ``diverged`` under the same config hash)."""
    old = records.read_record(run.path)
    if isinstance(old, dict) and old.get("config_hash") == run.config_hash and old.get("status") in ("ok", "diverged"):
        run.discard_checkpoint()  # left by a kill between the record's write and its removal
        return old
    return None


def run_here(p: Prepared, bar: Progress, say: Callable[[str], None]) -> list[dict]:
    """Every cell of ``p`` in this process, group by group (see :class:`ClaimedRounds`)."""
    lockstep = p.request.lockstep
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
            records.write_record(run.path, rec)
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
        teacher_s = train_epoch([r.cell for r in live], shared.teacher.net if shared.teacher else None, data, train, seed, epoch,
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
