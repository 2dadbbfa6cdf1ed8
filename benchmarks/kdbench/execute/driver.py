"""The driver of a run: checks, then the cells here (executor ``local``) or on another executor. For
the others, the teacher is trained or verified first, once, here; then one job per group still to
run is dispatched (for ``processes:N``, groups cut so that the workers end together:
:mod:`kdbench.execute.balance`), waited for, and reported cell by cell (a tuned suite's trials first,
then, once they have all ended, its cells at the hyperparameters chosen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from kdbench.api.errors import GroupsCrashed, first_line
from kdbench.api.paths import under
from kdbench.execute.balance import balanced
from kdbench.execute.executors import dispatch
from kdbench.execute.jobs import GroupJob
from kdbench.run.plan import Prepared, prepare
from kdbench.run.progress import Progress, above_bars, forward_logs
from kdbench.run.request import RunRequest
from kdbench.run.rounds import (cell_name, cell_run, done_record, final_specs, groups, run_here, shared_runs,
                                summary_line)
from kdbench.train.cell import RunSpec, SharedRun
from kdbench.train.records import cell_key


def run_suite(request: RunRequest, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or skip) every cell of ``request``, here or through its executor; returns the records,
    in plan order. ``log`` takes the progress lines (default: above the progress bars)."""
    request.executor.check_available()
    p = prepare(request)
    say = log or above_bars
    bar = Progress(total=len(p.trials) + len(p.specs), enabled=False if request.quiet else request.progress,
                   tell=None if request.quiet else say)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(request.executor.threads or threads)  # this process's cells, and the teacher
        with forward_logs(say):
            if request.executor.kind == "local":
                return run_here(p, bar, say)
            return run_dispatched(p, bar, say)
    finally:
        torch.set_num_threads(threads)
        bar.close()


@dataclass(frozen=True)
class Phase:
    """One phase of a dispatched run: its cells, what they share, and the name its jobs carry."""

    name: str  # "trials" or "cells"
    specs: list[RunSpec]
    shared: SharedRun


def run_dispatched(p: Prepared, bar: Progress, say: Callable[[str], None],
                   runs: tuple[SharedRun, SharedRun | None] | None = None) -> list[dict]:
    """The cells through the request's executor; ``runs``: what :func:`shared_runs` returned, if the
    caller has already trained or verified the teacher (as ``kdbench bench suite`` does, to time it)."""
    shared, trials = runs or shared_runs(p, say)  # the teacher trained or verified before any worker starts
    trial_records = run_phase(Phase("trials", p.trials, trials), p, bar, say) if trials else None
    return run_phase(Phase("cells", final_specs(p, trials, say, trial_records), shared), p, bar, say)


def run_phase(phase: Phase, p: Prepared, bar: Progress, say: Callable[[str], None]) -> list[dict]:
    """Dispatch a job per group of ``phase`` still to run, wait for them all; the records in order."""
    executor, specs = p.request.executor, phase.specs
    out: dict[tuple, dict] = {}

    def finished(rec: dict, line: str) -> None:
        out[cell_key(rec)] = rec
        say(f"[{len(out)}/{len(specs)}] {line}")
        bar.advance()

    todo = []
    for group in groups(specs, p.request.lockstep, p.request.max_group):  # without lockstep, a job per cell
        pending = []
        for spec in group:
            rec = done_record(cell_run(spec, phase.shared))
            if rec is None:
                pending.append(spec)
            else:
                finished(rec, f"{cell_name(*spec.key)}: done before ({rec['status']}), skipped")
        if pending:
            todo.append(pending)
    if executor.kind == "processes" and p.request.lockstep:
        todo = balanced(todo, executor.n_workers())
    jobs = [GroupJob(p.request, group[0].seed, tuple(s.key for s in group), phase=phase.name) for group in todo]
    if jobs:
        say(f"{len(jobs)} group(s){' of trials' if phase.name == 'trials' else ''} to {executor.describe()}")
    crashed = []
    for job, outcome in dispatch(jobs, executor, under(p.results_dir, p.suite.name, "executor-logs")):
        if isinstance(outcome, BaseException):  # said once, in the error at the end; the others go on
            crashed.append(f"seed {job.seed}: {type(outcome).__name__}: {first_line(outcome)[:200]}")
            continue
        for rec in outcome:
            if cell_key(rec) not in out:
                finished(rec, summary_line(rec))
    if crashed:
        raise GroupsCrashed(
            f"{len(crashed)} of {len(jobs)} group(s) crashed ({'; '.join(crashed)}); "
            f"{len(out)} of {len(specs)} {phase.name} are recorded, and rerunning the same command resumes the rest"
        )
    return [out[s.key] for s in specs]
