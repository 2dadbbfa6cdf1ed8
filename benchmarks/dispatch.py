"""The driver of a run on an executor other than ``local``: the teacher first, once, here; then
one job per group still to run, dispatched, waited for, and reported cell by cell."""

from __future__ import annotations

from typing import Callable

from kdbench.errors import GroupsCrashed
from kdbench.executors import ExecutorConfig, dispatch
from kdbench.jobs import GroupJob
from kdbench.paths import under
from kdbench.progress import Progress
from kdbench.runner import Prepared, cell_run, done_record, groups, shared_run, summary_line


def run_dispatched(
    p: Prepared, executor: ExecutorConfig, data_dir: str | None, device: str | None, bar: Progress,
    say: Callable[[str], None], lockstep: bool = True,
) -> list[dict]:
    shared = shared_run(p, say)  # trained or verified before any worker starts
    out: dict[tuple[str, int], dict] = {}

    def finished(rec: dict, line: str) -> None:
        out[(rec["label"], rec["seed"])] = rec
        say(f"[{len(out)}/{len(p.specs)}] {line}")
        bar.advance()

    jobs = []
    for group in groups(p.specs, lockstep):  # without lockstep, a job per cell
        pending = []
        for spec in group:
            rec = done_record(cell_run(spec, shared))
            if rec is None:
                pending.append(spec.entry.label)
            else:
                finished(rec, f"{spec.entry.label} seed {spec.seed}: done before ({rec['status']}), skipped")
        if pending:
            jobs.append(GroupJob(p.suite, group[0].seed, tuple(pending), str(p.results_dir), data_dir,
                                 device or "auto", lockstep=lockstep))
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
