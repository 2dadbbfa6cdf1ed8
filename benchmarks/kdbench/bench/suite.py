"""Time to result: a whole suite from scratch, in a temporary results folder, and where its wall time
went (the data and checks, the teacher, each seed group and the offline targets inside it, the
report), with the machine it ran on and how loaded that machine was before and after. A suite
whose teacher is a checkpoint (the default suite's, since version 2) loads and checks it instead.

It is the figure a user waits for after set-up, so it runs what ``kdbench run SUITE`` then
``kdbench report SUITE`` run, phase by phase, on the executor that run would use (the suite's
``executor:`` section unless ``--executor`` or ``--threads`` say otherwise). ``--reuse-teacher``
links in the teacher (and offline targets) cached under ``--results-dir`` instead of training it.

Run as ``kdbench bench suite [SUITE]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from kdbench.api.errors import ConfigError
from kdbench.api.paths import check_writable_folder
from kdbench.bench.common import add_teacher_cache, count, markdown_table, scratch_results, teachers_folder
from kdbench.config.executor import ExecutorConfig, executor_config
from kdbench.config.suite import SuiteConfig, load_suite
from kdbench.execute.driver import run_dispatched
from kdbench.report import build_reports
from kdbench.run.plan import prepare
from kdbench.run.progress import Progress
from kdbench.run.request import RunRequest
from kdbench.run.rounds import run_planned, shared_runs
from kdbench.train.environment import cpu_count, cpu_model, resolve_device

SUMMARY = "a whole suite from scratch (its teacher trained or loaded): wall time, its split, the machine and its load"

#: The environment variables that set how OpenMP's waiting threads behave (docs/speed.md).
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="default", help="suite name or YAML path (default default)")
    parser.add_argument("--executor", metavar="KIND", help="local or processes[:N], as for kdbench run "
                        "(default: the suite's executor: section, else local)")
    parser.add_argument("--threads", type=count, default=None,
                        help="torch threads per cell's process (default: the executor's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    parser.add_argument("--reuse-teacher", action="store_true",
                        help="read the teacher and offline targets cached under --results-dir instead of training them")
    parser.add_argument("--keep", metavar="DIR", help="copy the run's records to DIR/SUITE/runs/ (the timed run's "
                        "own folder is temporary)")
    add_teacher_cache(parser)


def group_rows(records: list[dict]) -> list[tuple[str, float, float]]:
    """Per seed, in run order: its name (with the sizes of its groups, where worker processes ran it
    in parts), the wall seconds of its longest group and the seconds its cells spent before their
    first step (building, and computing or reading offline targets)."""
    by_seed: dict[int, list[dict]] = {}
    for r in records:
        by_seed.setdefault(r["seed"], []).append(r)
    rows = []
    for seed, recs in by_seed.items():
        wall = max(r["group"]["wall_s"] for r in recs if r.get("group"))
        setup = sum(r["time_split"]["setup_s"] for r in recs if r.get("time_split"))
        cells_by_size = Counter(r["group"]["size"] for r in recs if r.get("group"))  # a group of n: n records
        parts = [size for size, n in sorted(cells_by_size.items(), reverse=True) for _ in range(n // size)]
        name = f"seed {seed} group ({len(recs)} cells)" if len(parts) < 2 else \
            f"seed {seed} ({len(recs)} cells in groups of {' + '.join(map(str, parts))}), its longest group"
        rows.append((name, wall, setup))
    return rows


def split_table(phases: list[tuple[str, float]], groups: list[tuple[str, float, float]], total: float,
                at_once: int = 1) -> str:
    """``phases``: data, teacher, all the cells, report (wall seconds). Where the groups ran one after
    another, the cells' phase is broken down into its groups and what ran between them; where
    ``at_once`` worker processes ran them, the cells' phase is given whole and the groups' rows,
    which overlap, under it."""
    def row(name: str, seconds: float) -> list[str]:
        return [name, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%"]

    (data, data_s), (teacher, teacher_s), (_, cells_s), (report, report_s) = phases
    rows = [row(data, data_s), row(teacher, teacher_s)]
    if at_once > 1:
        rows.append(row(f"cells, on {at_once} worker processes at once", cells_s))
    indent = "  " if at_once > 1 else ""
    for name, wall, setup in groups:
        rows += [row(indent + name, wall), row(indent + "  of which building cells and offline targets", setup)]
    if at_once == 1:
        rows.append(row("records and claims between groups", cells_s - sum(wall for _, wall, _ in groups)))
    rows += [row(report, report_s), ["**total**", f"**{total:.1f}**", "100%"]]
    return markdown_table(["phase", "wall s", "share"], rows)


def machine_line(device: torch.device, executor: ExecutorConfig) -> str:
    wait = ", ".join(f"{k}={os.environ[k]}" for k in WAIT_SETTINGS if k in os.environ) or "OpenMP defaults"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return (f"machine: {where}, {cpu_count()} logical CPUs, torch {torch.__version__}, {wait}; "
            f"cells: {executor.describe()}")


def load_line(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def cpu_ticks(stat: str) -> tuple[int, int] | None:
    """(steal, total) clock ticks from the text of ``/proc/stat``, or None where it has no steal
    field. Steal is the time a virtual machine's CPUs were ready but the hypervisor ran another guest:
    a shared machine can be slow with nothing of its own running, and the load average cannot show it.
    The total is user, nice, system, idle, iowait, irq, softirq and steal (guest time is already in
    user)."""
    fields = stat.split("\n", 1)[0].split()
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(f) for f in fields[1:9]]
    return ticks[7], sum(ticks)


def read_cpu_ticks() -> tuple[int, int] | None:
    try:
        return cpu_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def steal_line(before: tuple[int, int] | None, after: tuple[int, int] | None) -> str:
    """The share of the machine's CPU time the hypervisor gave to other guests between two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return "CPU time stolen by the hypervisor during the run: not reported on this system"
    share = 100 * (after[0] - before[0]) / (after[1] - before[1])
    return f"CPU time stolen by the hypervisor during the run: {share:.0f}% of the machine's (/proc/stat)"


def teacher_source(suite: SuiteConfig, reused: Path | None) -> str:
    """Where the run's teacher comes from, as the header says it."""
    if suite.teacher.checkpoint:
        return f"loaded from the suite's checkpoint {Path(suite.teacher.checkpoint).name} and checked"
    return f"reused from {reused}" if reused else "trained from scratch"


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    device = resolve_device(args.device)
    keep = check_writable_folder(args.keep, "--keep") if args.keep else None  # before the run, not after it
    executor = executor_config(args.executor, {"threads": args.threads}, suite.executor, "--executor")
    if executor.kind not in ("local", "processes"):
        raise ConfigError(f"--executor {executor.kind}: bench suite times this machine's executors, local or processes")
    executor.check_available()
    if executor.threads:  # this process's cells (local), or the teacher's check before the workers start
        torch.set_num_threads(executor.threads)
    teachers = teachers_folder(args.results_dir) if args.reuse_teacher else None
    print(f"suite {suite.name}: {len(suite.methods)} methods x {len(suite.seeds)} seeds, {suite.train.epochs} "
          f"epochs, teacher {teacher_source(suite, teachers)}")
    print(machine_line(device, executor))
    print(load_line("before"), flush=True)
    ticks = read_cpu_ticks()
    with scratch_results(teachers) as tmp:
        request = RunRequest(suite, device=args.device, results_dir=str(tmp), progress=False, executor=executor)
        phases, records, total = timed_phases(request, tmp / "report")
        if keep:
            shutil.copytree(tmp / suite.name / "runs", keep / suite.name / "runs", dirs_exist_ok=True)
    print(load_line("after"))
    print(steal_line(ticks, read_cpu_ticks()))
    bad = [f"{r['label']} seed {r['seed']}: {r['status']}" for r in records if r["status"] != "ok"]
    print(f"\n{len(records)} records, {len(records) - len(bad)} ok{': not ok ' + '; '.join(bad) if bad else ''}")
    print(f"\nwall time of the whole suite: {total:.1f} s\n")
    at_once = 1 if executor.kind == "local" else executor.n_workers()
    print(split_table(phases, group_rows(records), total, at_once))
    return 0


def timed_phases(request: RunRequest, report_dir: Path) -> tuple[list[tuple[str, float]], list[dict], float]:
    """Run ``request`` as ``kdbench run`` then ``kdbench report`` do, timing each phase; the groups'
    own times come from their records."""
    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    marks = [time.perf_counter()]
    p = prepare(request)
    marks.append(time.perf_counter())
    runs = shared_runs(p, say)
    marks.append(time.perf_counter())
    if request.executor.kind == "local":
        records = run_planned(p, runs, Progress(0, enabled=False), say)
    else:
        records = run_dispatched(p, Progress(0, enabled=False), say, runs)
    marks.append(time.perf_counter())
    build_reports([request.suite.name], request.results_dir, report_dir)
    marks.append(time.perf_counter())
    names = ["data and checks", "teacher (trained or verified)", "cells", "report"]
    return [(n, b - a) for n, a, b in zip(names, marks, marks[1:])], records, marks[-1] - marks[0]
