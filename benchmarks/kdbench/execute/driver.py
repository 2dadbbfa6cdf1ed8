"""The driver of a run: checks, then the cells here (executor ``local``) or on another executor. For
the others, the teacher is trained or verified first, once, here; then one job per group still to
run is dispatched, waited for, and reported cell by cell."""

from __future__ import annotations

from typing import Callable

import torch

from kdbench.api.errors import GroupsCrashed
from kdbench.api.paths import under
from kdbench.execute.executors import dispatch
from kdbench.execute.jobs import GroupJob
from kdbench.run.plan import Prepared, prepare
from kdbench.run.progress import Progress, forward_logs
from kdbench.run.request import RunRequest
from kdbench.run.rounds import cell_run, done_record, groups, run_here, shared_run, summary_line


def run_suite(request: RunRequest, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or skip) every cell of ``request``, here or through its executor; returns the records,
    in plan order. ``log`` takes the progress lines (default: above the progress bars)."""
    request.executor.check_available()
    p = prepare(request)
    bar = Progress(total=len(p.specs), enabled=request.progress)
    say = log or bar.write
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


def run_dispatched(p: Prepared, bar: Progress, say: Callable[[str], None]) -> list[dict]:
    executor = p.request.executor
    shared = shared_run(p, say)  # trained or verified before any worker starts
    out: dict[tuple[str, int], dict] = {}

    def finished(rec: dict, line: str) -> None:
        out[(rec["label"], rec["seed"])] = rec
        say(f"[{len(out)}/{len(p.specs)}] {line}")
        bar.advance()

    jobs = []
    for group in groups(p.specs, p.request.lockstep):  # without lockstep, a job per cell
        pending = []
        for spec in group:
            rec = done_record(cell_run(spec, shared))
            if rec is None:
                pending.append(spec.entry.label)
            else:
                finished(rec, f"{spec.entry.label} seed {spec.seed}: done before ({rec['status']}), skipped")
        if pending:
            jobs.append(GroupJob(p.request, group[0].seed, tuple(pending)))
    if jobs:
        say(f"{len(jobs)} group(s) to {executor.describe()}")
    crashed = []
    for job, outcome in dispatch(jobs, executor, under(p.results_dir, p.suite.name, "executor-logs")):
        if isinstance(outcome, BaseException):
            crashed.append(f"seed {job.seed}: {type(outcome).__name__}: {str(outcome).strip()[:200]}")
            say(f"group of seed {job.seed} crashed ({crashed[-1]})")
            continue
        for rec in outcome:
            if (rec["label"], rec["seed"]) not in out:
                finished(rec, summary_line(rec))
    if crashed:
        raise GroupsCrashed(
            f"{len(crashed)} of {len(jobs)} group(s) crashed ({'; '.join(crashed)}); "
            f"{len(out)} of {len(p.specs)} cells are recorded, and rerunning the same command resumes the rest"
        )
    return [out[(s.entry.label, s.seed)] for s in p.specs]
