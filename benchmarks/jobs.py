"""One unit of work for any executor: a group (suite, seed, the cells still to run) that writes
its records into the shared results folder and returns them.

A job is plain data, small to pickle: the suite, the seed, the labels, and where the data and the
results are. The worker reads the dataset from the data folder itself and loads the teacher the
driver trained, re-checking its sha256 and accuracy, then runs its cells under their claims.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdbench.config import SuiteConfig


@dataclass(frozen=True)
class GroupJob:
    suite: SuiteConfig
    seed: int
    labels: tuple[str, ...]
    results_dir: str
    data_dir: str | None
    device: str  # as the user gave it (``auto`` resolves on the worker's machine)
    threads: int = 1
    lockstep: bool = True
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
    import torch

    from kdbench.progress import Progress, forward_logs
    from kdbench.runner import prepare, run_here

    torch.set_num_threads(job.threads)
    p = prepare(job.suite, None, [job.seed], job.device, job.data_dir, False, job.results_dir)
    p = replace(p, specs=[s for s in p.specs if s.entry.label in job.labels])

    def note(line: str) -> None:  # what deep code logs (a cache recomputed, a wait): always shown
        print(f"(seed {job.seed}) {line}", flush=True)

    bar = Progress(total=len(p.specs), enabled=False)
    with forward_logs(note):
        return run_here(p, bar, note if job.echo else (lambda line: None), job.lockstep)
