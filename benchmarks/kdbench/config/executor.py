"""Which executor runs a suite's groups, and its options: each option declared once, here.

One :class:`Option` gives an option's name (the suite's ``executor:`` key and the field of
:class:`ExecutorConfig`), the executors that take it, its parser (type, domain and one-line error),
its default, its help and its command-line flag; the CLI's flags, the suite's section and the
validation are all built from :data:`OPTIONS`. What each executor does with them is
:mod:`kdbench.execute.executors`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable

import torch
from kdbench.api.errors import ConfigError
from kdbench.config.ray_address import check_reachable, parse_address

KINDS = ("local", "processes", "slurm", "slurm-local", "ray")
SLURM = ("slurm", "slurm-local")
CLUSTER_EXTRA = "pip install 'kdbench[cluster]'"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count(maximum: int) -> Callable[[Any, str], int]:
    """A parser of whole numbers from 1 to ``maximum`` (a digit string counts, as on a command line)."""

    def parse(v: Any, where: str) -> int:
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= maximum:
            raise ConfigError(f"{where} must be an integer from 1 to {maximum:,}, got {v!r}")
        return v

    return parse


def text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where} must be a non-empty string, got {v!r}")
    return v


def gpus(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 64:
        raise ConfigError(f"{where} must be a number from 0 to 64, got {v!r}")
    return v


@dataclass(frozen=True)
class Option:
    name: str
    kinds: tuple[str, ...]
    parse: Callable[[Any, str], Any]
    default: Any
    help: str
    flag: str | None = field(default="")  # "": --name with dashes; None: no flag
    type: type = int

    @property
    def cli_flag(self) -> str | None:
        return ("--" + self.name.replace("_", "-")) if self.flag == "" else self.flag


OPTIONS: tuple[Option, ...] = (
    Option("threads", KINDS, count(4096), None,
           "torch threads per cell's process (recorded; CPU results are bitwise equal at equal threads)"),
    Option("workers", ("processes",), count(4096), None,
           "processes: how many at once (default: cores // threads); given as processes:N", flag=None),
    Option("partition", SLURM, text, None, "slurm: the partition", type=str),
    Option("time_min", SLURM, count(10**6), 24 * 60, "slurm: a task's time limit in minutes (default: 1440)"),
    Option("gpus_per_task", (*SLURM, "ray"), gpus, 0, "slurm, ray: GPUs per group", type=float),
    Option("cpus_per_task", (*SLURM, "ray"), count(4096), None,
           "slurm, ray: CPUs per group (default: --threads, else 1)"),
    Option("array_parallelism", SLURM, count(4096), None, "slurm: array tasks running at once"),
    Option("address", ("ray",), parse_address, None,
           "ray: an existing cluster's address, auto or HOST:PORT or ray://HOST:PORT (default: a local cluster)",
           flag="--ray-address", type=str),
    Option("cpus", ("ray",), count(4096), None, "ray: the local cluster's CPUs (default: this machine's)",
           flag="--ray-cpus"),
)
BY_NAME = {o.name: o for o in OPTIONS}


class _Executor:
    """What an executor's options imply (the fields come from :data:`OPTIONS`)."""

    def threads_per_cell(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.kind == "processes":
            return max(1, cores() // (self.workers or cores()))
        if self.kind == "local":
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
        if self.kind == "ray":
            check_reachable(self.address)
        if self.kind == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs SLURM, and sbatch is not on this machine's PATH; "
                              "--executor slurm-local runs the same jobs as local processes")


#: An executor and its options, from ``--executor`` and its flags or a suite's ``executor:`` section.
ExecutorConfig = make_dataclass(
    "ExecutorConfig", [("kind", str, field(default="local"))] + [(o.name, Any, field(default=o.default)) for o in OPTIONS],
    bases=(_Executor,), frozen=True,
)
ExecutorConfig.__module__ = __name__  # so it pickles by name


def executor_config(spec: str | None, options: dict[str, Any], section: dict | None, where: str) -> ExecutorConfig:
    """The suite's ``executor:`` section, overridden by the command line (``spec`` such as
    ``processes:2``, and the flags that were given), validated like every other key."""
    merged = dict(section or {})
    if spec is not None:
        kind, _, n = spec.partition(":")
        merged = {**(merged if merged.get("name") == kind else {}), "name": kind}
        if n:
            if kind != "processes":
                raise ConfigError(f"--executor {spec}: only processes takes a count (processes:N)")
            merged["workers"] = BY_NAME["workers"].parse(n, f"--executor {spec}")
    merged.update({k: v for k, v in options.items() if v is not None})
    return parse_executor(merged, where)


def parse_executor(raw: dict, where: str) -> ExecutorConfig:
    kind = raw.get("name", "local")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown executor {kind!r}; known: {', '.join(KINDS)}")
    takes = sorted(o.name for o in OPTIONS if kind in o.kinds)
    unknown = set(raw) - {"name"} - set(takes)
    if unknown:
        raise ConfigError(f"{where}: executor {kind} takes no option(s) {', '.join(sorted(unknown))}; "
                          f"it takes {', '.join(takes)}")
    values = {k: BY_NAME[k].parse(v, f"{where}: executor.{k}") for k, v in raw.items() if k != "name"}
    return ExecutorConfig(kind=kind, **values)
