"""One unit of work for any executor: a group (the run's request, a seed, the cells still to run, and
the phase: a tuned suite's trials, or the suite's cells) that writes its records into the shared
results folder and returns them.

A job is plain data, small to pickle: the request says where the data and the results are. The
worker reads the dataset from the data folder itself and loads the teacher the driver trained,
re-checking its sha256 and accuracy, then runs its cells under their claims.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from kdbench.run.plan import prepare
from kdbench.run.progress import Progress, forward_logs
from kdbench.run.request import RunRequest
from kdbench.run.rounds import final_specs, run_cells, shared_runs


@dataclass(frozen=True)
class GroupJob:
    request: RunRequest
    seed: int
    keys: tuple[tuple, ...]  # the cells still to run, by ``RunSpec.key``
    phase: str = "cells"  # "trials": a tuned suite's trials; "cells": the suite's cells (at the choice)
    threads: int = 1
    echo: bool = False  # print each cell's line (to a SLURM task's log); the driver prints them anyway

    def __call__(self) -> list[dict]:
        return run_job(self)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this when SLURM preempts the task or its time runs out: the same job is
        requeued, and its cells resume from their epoch checkpoints."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def run_job(job: GroupJob) -> list[dict]:
    """Run ``job``'s cells in this process (a worker); returns their records. The plan, and in a tuned
    suite the choice, are re-derived here: the same request and the same records on disk give the
    driver's."""
    torch.set_num_threads(job.threads)
    p = prepare(replace(job.request, download=False))

    def note(line: str) -> None:  # what deep code logs (a cache recomputed, a wait): always shown
        print(f"(seed {job.seed}) {line}", flush=True)

    def echo(line: str) -> None:  # the group's epoch lines (they name the seed), through the same output
        print(line, flush=True)

    bar = Progress(total=len(job.keys), enabled=False, tell=None if job.request.quiet else echo)
    with forward_logs(note):
        shared, trials = shared_runs(p, note)
        if job.phase == "trials":
            specs, on = p.trials, trials
        else:
            specs, on = final_specs(p, trials, lambda line: None), shared
        mine = [s for s in specs if s.key in job.keys]
        return run_cells(mine, on, p.request, bar, note if job.echo else (lambda line: None))
