"""Where a run's groups execute: in this process (``local``), in local worker processes
(``processes[:N]``), as SLURM jobs through submitit (``slurm``; ``slurm-local`` runs the very same job
objects as local subprocesses, through submitit's local executor), or as Ray tasks (``ray``).

These are the engines our users already schedule with; kdbench only hands each a group
(:class:`~kdbench.execute.jobs.GroupJob`) and collects its records. Every worker writes into the one shared
results folder, under the cells' claims, so executors can be mixed and runs can be resumed by any.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from kdbench.config.executor import ExecutorConfig, cores
from kdbench.execute.jobs import run_job
from kdbench.execute.workers import run_in_workers

# ----------------------------------------------------------------------------------------- dispatch


def dispatch(jobs: list, cfg: ExecutorConfig, log_dir: Path) -> Iterator[tuple[Any, Any]]:
    """Run every job on ``cfg``'s engine; yields ``(job, records)``, or ``(job, exception)`` for a
    job that crashed, in the order they end."""
    jobs = [replace(j, threads=cfg.threads_per_cell(), echo=cfg.kind.startswith("slurm")) for j in jobs]
    if cfg.kind == "processes":
        yield from _processes(jobs, cfg)
    elif cfg.kind in ("slurm", "slurm-local"):
        yield from _submitit(jobs, cfg, log_dir)
    elif cfg.kind == "ray":
        yield from _ray(jobs, cfg)
    else:
        raise ValueError(f"dispatch is for executors other than local, not {cfg.kind!r}")


def _processes(jobs: list, cfg: ExecutorConfig) -> Iterator[tuple[Any, Any]]:
    """A process per group, N at once (:mod:`kdbench.execute.workers`: one dying ends its group alone,
    and none outlives the driver)."""
    yield from run_in_workers(run_job, jobs, cfg.n_workers())


def _submitit(jobs: list, cfg: ExecutorConfig, log_dir: Path) -> Iterator[tuple[Any, Any]]:
    """One array of tasks, a group each; submitit pickles the job objects and, on preemption or
    timeout, requeues them (``GroupJob.checkpoint``), and the cells resume from their checkpoints."""
    import submitit

    if cfg.kind == "slurm":
        executor = submitit.AutoExecutor(folder=str(log_dir / "%j"), cluster="slurm")
        params = {"timeout_min": cfg.time_min, "slurm_partition": cfg.partition,
                  "gpus_per_node": int(cfg.gpus_per_task) or None, "cpus_per_task": cfg.threads_per_cell(),
                  "slurm_array_parallelism": cfg.array_parallelism, "name": "kdbench"}
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    else:
        executor = submitit.LocalExecutor(folder=str(log_dir / "%j"))
        executor.update_parameters(timeout_min=cfg.time_min, gpus_per_node=int(cfg.gpus_per_task))
    with executor.batch():
        submitted = [(job, executor.submit(job)) for job in jobs]
    while submitted:
        ended = [(job, s) for job, s in submitted if s.done()]
        for job, s in ended:
            submitted.remove((job, s))
            yield job, s.exception() or s.result()
        if not ended:
            time.sleep(0.5)


def _ray(jobs: list, cfg: ExecutorConfig) -> Iterator[tuple[Any, Any]]:
    """Ray Core tasks with explicit resources: Ray's defaults would oversubscribe the CPUs. Each task
    reads the data from the data folder itself (the job carries its path, not the tensors)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.address, num_cpus=None if cfg.address else (cfg.cpus or cores()),
                 include_dashboard=False, logging_level="ERROR", configure_logging=True)
    try:
        task = ray.remote(run_job).options(num_cpus=cfg.cpus_per_task or cfg.threads_per_cell(),
                                           num_gpus=cfg.gpus_per_task, max_retries=0)
        refs = {task.remote(job): job for job in jobs}
        pending = list(refs)
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            try:
                yield refs[ref], ray.get(ref)
            except Exception as exc:  # the task's own error, or its worker's death
                yield refs[ref], exc
    finally:
        if started:
            ray.shutdown()
