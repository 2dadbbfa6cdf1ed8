"""A whole suite in this process against the same suite through local worker processes: wall time
and ratio.

The two alternate within each round (the order flips from one round to the next), on this noisy
machine. An untimed warm-up (one seed, one epoch) trains the teacher and the offline targets, which
every timed run then reads from the same linked teacher folder; each run writes its records into a
fresh folder, so nothing is skipped. In-process cells use this process's thread count; the workers
split the cores between them (``cores // N`` threads each), so their records are other bits.

Run as ``kdbench bench executors``.
"""

from __future__ import annotations

import argparse

import torch
from kdbench.api.errors import KDBenchError
from kdbench.bench.common import (add_rounds, add_suite, add_teacher_cache, count, print_wall_rounds, teachers_folder,
                                  timed_run, wall_rounds, with_train)
from kdbench.config.executor import ExecutorConfig
from kdbench.config.suite import load_suite

SUMMARY = "a whole suite's wall time in this process against local worker processes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite(parser, "default")
    parser.add_argument("--workers", type=count, default=2, help="worker processes (default 2)")
    add_rounds(parser, 1, "both")
    add_teacher_cache(parser)


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    teachers = teachers_folder(args.results_dir)
    executors = {"here": ExecutorConfig(), "workers": ExecutorConfig("processes", workers=args.workers)}
    executors["workers"].check_available()
    print(f"suite {suite.name}: {len(suite.methods)} methods x {len(suite.seeds)} seeds, {suite.train.epochs} "
          f"epochs; in-process {torch.get_num_threads()} threads, {executors['workers'].describe()}")

    def suite_run(where: str) -> tuple[float, list[dict]]:
        wall, records = timed_run(suite, teachers, device="cpu", executor=executors[where])
        failed = [f"{r['label']} seed {r['seed']}: {r['error']}" for r in records if r["status"] != "ok"]
        if failed:
            raise KDBenchError(f"a run was not ok, so its time is not comparable: {'; '.join(failed)}")
        return wall, records

    print("warm-up (teacher and offline targets, untimed) ...", flush=True)
    timed_run(with_train(suite, epochs=1), teachers, seeds=[suite.seeds[0]], device="cpu",
              executor=executors["here"])
    rounds = wall_rounds(args.rounds, suite_run, "here", "workers", ("in-process", f"processes:{args.workers}"))
    print_wall_rounds(f"suite wall time, in-process against processes:{args.workers} "
                      "(ratio > 1: the workers are faster):", rounds)
    return 0
