"""Running a planned matrix in this process: the shared teacher, then the cells group by group under
their claims, each group trained in lockstep to the end of its budget and each cell's record written
the moment it ends (the guarantees are in :mod:`kdbench.run.plan`).

A tuned suite runs in two phases: its trials (ordinary cells, with their own data, folder and claims),
then the suite's cells at the hyperparameters the trials chose (:mod:`kdbench.run.tuning`)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from kdbench.api.errors import StorageError
from kdbench.api.paths import under
from kdbench.config.hashing import stable_hash
from kdbench.data.datasets import steps_per_epoch
from kdbench.run import claims
from kdbench.run.plan import Prepared, cell_config
from kdbench.run.progress import EpochClock, Progress
from kdbench.run.referee import Referee
from kdbench.run.request import RunRequest
from kdbench.run.tuning import choice_line, tuned_specs
from kdbench.train import records
from kdbench.train.cell import CellRun, RunSpec, SharedRun
from kdbench.train.diagnostics import pooled_features
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


def trial_run(shared: SharedRun, p: Prepared) -> SharedRun:
    """What the trials share: the data without its test split (``test`` is the validation split),
    their own folder ``<suite>/tuning``, and the teacher's kernel-gap features on the validation split."""
    teacher = shared.teacher
    if teacher is not None:
        features = pooled_features(teacher.net, p.trial_data.test, p.suite.fast_path.precision)
        teacher = replace(teacher, test_features=features)
    return replace(shared, data=p.trial_data, teacher=teacher, folder=under(shared.folder, "tuning"))


def shared_runs(p: Prepared, say: Callable[[str], None]) -> tuple[SharedRun, SharedRun | None]:
    """The suite's cells' shared run, and its trials' (None for a suite without tuning)."""
    shared = shared_run(p, say)
    return shared, trial_run(shared, p) if p.trials else None


def final_specs(p: Prepared, trials: SharedRun | None, say: Callable[[str], None],
                trial_records: list[dict] | None = None) -> list[RunSpec]:
    """The suite's cells: as planned, or at the hyperparameters the trials chose, from
    ``trial_records`` or (a worker) from the trial records on disk."""
    if not p.trials:
        return p.specs
    if trial_records is None:
        trial_records = [r for r in (recorded(cell_run(t, trials)) for t in p.trials) if r is not None]
    specs = tuned_specs(p.specs, p.trials, trial_records, p.suite.tuning.seeds)
    for s in specs:
        if s.seed == specs[0].seed:
            say(choice_line(s))
    return specs


def cell_run(spec: RunSpec, shared: SharedRun) -> CellRun:
    config = cell_config(shared.suite, spec, shared.data, shared.teacher.info if shared.teacher else None)
    return CellRun(spec, config, stable_hash(config), shared)


def recorded(run: CellRun) -> dict | None:
    """The cell's record under the same config hash, whatever its status, or None."""
    old = records.read_record(run.path)
    return old if isinstance(old, dict) and old.get("config_hash") == run.config_hash else None


def done_record(run: CellRun) -> dict | None:
    """The cell's record if it is done (``ok`` or ``diverged`` under the same config hash)."""
    old = recorded(run)
    if old is not None and old.get("status") in ("ok", "diverged"):
        run.discard_checkpoint()  # left by a kill between the record's write and its removal
        return old
    return None


def run_here(p: Prepared, bar: Progress, say: Callable[[str], None]) -> list[dict]:
    """Every cell of ``p`` in this process (a tuned suite's trials first); returns the suite's records."""
    return run_planned(p, shared_runs(p, say), bar, say)


def run_planned(p: Prepared, runs: tuple[SharedRun, SharedRun | None], bar: Progress,
                say: Callable[[str], None]) -> list[dict]:
    """:func:`run_here` once the teacher is ready: ``runs`` is what :func:`shared_runs` returned."""
    shared, trials = runs
    trial_records = run_cells(p.trials, trials, p.request, bar, say) if trials else None
    return run_cells(final_specs(p, trials, say, trial_records), shared, p.request, bar, say)


def run_cells(specs: list[RunSpec], shared: SharedRun, request: RunRequest, bar: Progress,
              say: Callable[[str], None]) -> list[dict]:
    """``specs`` in this process, group by group (see :class:`ClaimedRounds`); their records in order."""
    rounds = ClaimedRounds(shared, len(specs), bar, say, request.lockstep)
    todo = groups(specs, request.lockstep, request.max_group)
    how_done = "done before"
    while todo:
        todo = rounds.run_round(todo, how_done)
        how_done = "done by another process"
    return [rounds.out[s.key] for s in specs]


class ClaimedRounds:
    """Cells run under their claims, so processes sharing a results folder never run one twice.

    Each round skips the cells already done, runs the ones this process can claim (a group's
    claimable cells together), and leaves the rest, held by another live process, for the next
    round; a round that could claim nothing first waits for one claim to free. A cell whose holder
    died is claimed and run here then; one whose holder finished is done by the next round."""

    def __init__(self, shared: SharedRun, n: int, bar: Progress, say: Callable[[str], None], lockstep: bool):
        self.shared, self.n, self.bar, self.say, self.lockstep = shared, n, bar, say, lockstep
        self.out: dict[tuple, dict] = {}

    def run_round(self, todo: list[list[RunSpec]], how_done: str) -> list[list[RunSpec]]:
        left, ran = [], False
        folder = self.shared.folder
        for group in todo:
            runs = [cell_run(s, self.shared) for s in group]
            pending = [r for r in runs if not self._skip_if_done(r, how_done)]
            held = claims.take(folder, [r.spec for r in pending])
            # checked again under the claim: another process may have finished the cell in between
            mine = [r for r in pending if r.spec.key in held and not self._skip_if_done(r, "done by another process")]
            try:
                self._run(mine)
            finally:
                claims.release(held)
            ran = ran or bool(mine)
            if rest := [r.spec for r in pending if r.spec.key not in held]:
                left.append(rest)
        if left and not ran:
            claims.wait_for(folder, left[0][0])
        return left

    def _skip_if_done(self, run: CellRun, how: str) -> bool:
        rec = done_record(run)
        if rec is not None:
            self._finished(rec, f"{cell_name(*run.spec.key)}: {how} ({rec['status']}), skipped")
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
        self.out[records.cell_key(rec)] = rec
        self.say(f"[{len(self.out)}/{self.n}] {line}")
        self.bar.advance()


def groups(specs: list[RunSpec], lockstep: bool, max_group: int | None = None) -> list[list[RunSpec]]:
    """Lockstep: one group per seed (the cells that share a data stream), in plan order, cut into
    groups of at most ``max_group`` cells; else one group per cell."""
    if not lockstep:
        return [[s] for s in specs]
    by_seed: dict[int, list[RunSpec]] = {}
    for s in specs:
        by_seed.setdefault(s.seed, []).append(s)
    size = max_group or max(len(specs), 1)
    return [group[i : i + size] for group in by_seed.values() for i in range(0, len(group), size)]


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

    referee = Referee(shared.guard, runs)

    def end(stopped_only: bool) -> None:
        for run in runs:
            if not run.ended and (run.status != "ok" or not stopped_only):
                group = {"lockstep": lockstep, "size": len(runs), "wall_s": time.perf_counter() - t0}
                rec = run.finish(group, peak_memory(shared.device))
                referee.check([run], "its finish (final facts, record extras)")
                done(run, rec)

    referee.at_start()
    for run in [r for r in runs if r.status == "ok"]:
        run.start()
        referee.check([run], "its start (constructor, prepare)")
    end(stopped_only=True)
    steps = steps_per_epoch(len(data.train), train.batch_size)
    clock = EpochClock(group_name(runs), train.epochs)
    for epoch in range(train.epochs):
        live = [r for r in runs if r.training and r.next_epoch == epoch]  # a resumed cell may be ahead
        if not live:
            continue
        names = live[0].spec.entry.label if len(live) == 1 else f"{len(live)} cells"
        bar.start_epoch(f"seed {seed} {names} ep {epoch + 1}/{train.epochs}", steps)
        of = {id(r.cell): r for r in live}
        teacher_s = train_epoch([r.cell for r in live], shared.teacher.net if shared.teacher else None, data, train,
                                seed, epoch, on_step=lambda _: bar.step(), precision=shared.suite.fast_path.precision,
                                check=lambda cells, what: referee.check([of[id(c)] for c in cells], what))
        for run in live:
            run.end_epoch(epoch, teacher_s)
            referee.check([run], f"its end of epoch {epoch + 1} (evaluation, checkpoint)")
        end(stopped_only=True)
        bar.epoch_ended(clock.line(epoch, sum(r.training for r in runs)))
    end(stopped_only=False)


def group_name(runs: list[CellRun]) -> str:
    """A group in the run's log: ``seed 0 (5 cells)``, ``trials, seed 1000 (3 cells)``."""
    spec = runs[0].spec
    trials = "trials, " if spec.trial is not None else ""
    return f"{trials}seed {spec.seed} ({len(runs)} cell{'s' if len(runs) > 1 else ''})"


def cell_name(label: str, seed: int, trial: int | None) -> str:
    """A cell in the run's log: ``vanilla_kd seed 0``, a trial ``vanilla_kd trial 3 seed 1000``."""
    return f"{label} seed {seed}" if trial is None else f"{label} trial {trial} seed {seed}"


def summary_line(rec: dict) -> str:
    head_ = f"{cell_name(*records.cell_key(rec))}: {rec['status']}"
    if rec["status"] == "failed":
        return f"{head_} ({rec['error']})"
    on = " validation" if rec.get("evaluated_on") == "validation" else ""
    acc = "" if rec["final_acc"] is None else f"  final{on} {rec['final_acc']:.2f}%  best {rec['best_acc']:.2f}%"
    return f"{head_}{acc}  ({rec['cost_s']:.1f} s alone, {rec['images_per_s']:.0f} img/s)"
