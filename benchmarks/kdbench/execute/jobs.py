"""One unit of work for any executor: a group (the run's request, a seed, the cells still to run)
that writes its records into the shared results folder and returns them.

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
from kdbench.run.rounds import run_here


@dataclass(frozen=True)
class GroupJob:
    request: RunRequest
    seed: int
    labels: tuple[str, ...]
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
    """Run ``job``'s cells in this process (a worker); returns their records."""
    torch.set_num_threads(job.threads)
    p = prepare(replace(job.request, methods=None, seeds=(job.seed,), download=False))
    p = replace(p, specs=[s for s in p.specs if s.entry.label in job.labels])

    def note(line: str) -> None:  # what deep code logs (a cache recomputed, a wait): always shown
        print(f"(seed {job.seed}) {line}", flush=True)

    bar = Progress(total=len(p.specs), enabled=False)
    with forward_logs(note):
        return run_here(p, bar, note if job.echo else (lambda line: None))
