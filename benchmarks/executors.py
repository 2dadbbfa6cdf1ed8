"""Where a run's groups execute: in this process (``local``), in local worker processes
(``processes[:N]``), as SLURM jobs through submitit (``slurm``; ``slurm-local`` runs the very same job
objects as local subprocesses, through submitit's local executor), or as Ray tasks (``ray``).

These are the engines our users already schedule with; kdbench only hands each a group
(:class:`~kdbench.jobs.GroupJob`) and collects its records. Every worker writes into the one shared
results folder, under the cells' claims, so executors can be mixed and runs can be resumed by any.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from kdbench.errors import ConfigError

KINDS = ("local", "processes", "slurm", "slurm-local", "ray")
_SLURM = {"threads", "partition", "time_min", "gpus_per_task", "cpus_per_task", "array_parallelism"}
OPTIONS = {
    "local": {"threads"},
    "processes": {"threads", "workers"},
    "slurm": _SLURM,
    "slurm-local": _SLURM,
    "ray": {"threads", "address", "cpus", "cpus_per_task", "gpus_per_task"},
}
CLUSTER_EXTRA = "pip install 'kdbench[cluster]'"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ExecutorConfig:
    """An executor and its options, from ``--executor`` and its flags or a suite's ``executor:``."""

    kind: str = "local"
    threads: int | None = None  # per cell's process; CPU results are bitwise equal at equal threads
    workers: int | None = None  # processes: how many at once (default: cores // threads)
    partition: str | None = None  # slurm
    time_min: int = 24 * 60  # slurm: a task's time limit, minutes
    gpus_per_task: float = 0  # slurm (whole GPUs), ray
    cpus_per_task: int | None = None  # slurm, ray (default: threads, else 1)
    array_parallelism: int | None = None  # slurm: array tasks running at once
    address: str | None = None  # ray: an existing cluster (default: start a local one)
    cpus: int | None = None  # ray: the local cluster's CPUs (default: this machine's)

    def threads_per_cell(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.kind == "processes":
            return max(1, cores() // (self.workers or cores()))
        if self.kind == "local":
            import torch

            return torch.get_num_threads()
        return self.cpus_per_task or 1

    def n_workers(self) -> int:
        return self.workers or max(1, cores() // self.threads_per_cell())

    def describe(self) -> str:
        where = {"processes": f"processes:{self.n_workers()}", "ray": f"ray ({self.address or 'local cluster'})"}
        return f"{where.get(self.kind, self.kind)}, {self.threads_per_cell()} thread(s) per cell"

    def check_available(self) -> None:
        """A one-line error, before any work, for an executor this machine cannot run."""
        if self.kind == "processes" and self.n_workers() * self.threads_per_cell() > cores():
            raise ConfigError(f"processes:{self.n_workers()} with {self.threads_per_cell()} thread(s) each needs "
                              f"{self.n_workers() * self.threads_per_cell():,} cores; this machine has {cores()}")
        module = {"slurm": "submitit", "slurm-local": "submitit", "ray": "ray"}.get(self.kind)
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(f"--executor {self.kind} needs {module}: {CLUSTER_EXTRA}") from None
        if self.kind == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs SLURM, and sbatch is not on this machine's PATH; "
                              "--executor slurm-local runs the same jobs as local processes")


def executor_config(spec: str | None, options: dict[str, Any], section: dict | None, where: str) -> ExecutorConfig:
    """The suite's ``executor:`` section, overridden by the command line (``spec`` such as
    ``processes:2``, and the flags that were given), validated like every other key."""
    merged = dict(section or {})
    if spec is not None:
        kind, _, n = spec.partition(":")
        merged = {**(merged if merged.get("name") == kind else {}), "name": kind}
        if n:
            merged["workers"] = _count(n, f"--executor {spec}") if kind == "processes" else _refuse(spec)
    merged.update({k: v for k, v in options.items() if v is not None})
    return parse_executor(merged, where)


def parse_executor(raw: dict, where: str) -> ExecutorConfig:
    kind = raw.get("name", "local")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown executor {kind!r}; known: {', '.join(KINDS)}")
    unknown = set(raw) - {"name"} - OPTIONS[kind]
    if unknown:
        raise ConfigError(f"{where}: executor {kind} takes no option(s) {', '.join(sorted(unknown))}; "
                          f"it takes {', '.join(sorted(OPTIONS[kind]))}")
    values = {k: _value(k, v, f"{where}: executor.{k}") for k, v in raw.items() if k != "name"}
    return ExecutorConfig(kind=kind, **values)


def _value(key: str, v: Any, where: str) -> Any:
    if key in ("partition", "address"):
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where} must be a non-empty string, got {v!r}")
        return v
    if key == "gpus_per_task":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 64:
            raise ConfigError(f"{where} must be a number from 0 to 64, got {v!r}")
        return v
    return _count(v, where, maximum=10**6 if key == "time_min" else 4096)


def _count(v: Any, where: str, maximum: int = 4096) -> int:
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= maximum:
        raise ConfigError(f"{where} must be an integer from 1 to {maximum:,}, got {v!r}")
    return v


def _refuse(spec: str):
    raise ConfigError(f"--executor {spec}: only processes takes a count (processes:N)")


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
    # spawn, not fork: a forked child of a process that has run torch's thread pools can hang.
    from kdbench.jobs import run_job

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cfg.n_workers(), mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.exception() or future.result()


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

    from kdbench.jobs import run_job

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
