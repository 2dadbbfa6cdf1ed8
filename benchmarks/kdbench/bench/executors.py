"""A whole suite in this process against the same suite through local worker processes: wall time
and ratio.

The two alternate within each round (the order flips from one round to the next), on this noisy
machine. An untimed warm-up (one seed, one epoch) trains the teacher and the offline targets, which
every timed run then reads from the same linked teacher folder; each run writes its records into a
fresh folder, so nothing is skipped. In-process cells use this process's thread count; the workers
split the cores between them (``cores // N`` threads each), so their records are other bits.

    python -m kdbench.bench.executors [--suite default] [--workers 2] [--rounds 1] [--results-dir results]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdbench.config.suite import load_suite
from kdbench.api.errors import KDBenchError
from kdbench.config.executor import ExecutorConfig
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest


def timed_run(suite, teachers: Path, executor: ExecutorConfig, seeds=None) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="kdbench-executors-") as tmp:
        (Path(tmp) / "teachers").symlink_to(teachers.resolve(), target_is_directory=True)
        t0 = time.perf_counter()
        records = run_suite(RunRequest(suite, seeds=seeds, device="cpu", results_dir=tmp, progress=False,
                                       executor=executor), log=lambda _: None)
        return time.perf_counter() - t0, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbench.bench.executors", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds, each running both")
    parser.add_argument("--results-dir", default="results", help="where the teacher is cached (default results)")
    args = parser.parse_args(argv)
    try:
        suite = load_suite(args.suite)
        teachers = Path(args.results_dir) / "teachers"
        teachers.mkdir(parents=True, exist_ok=True)
        here, workers = ExecutorConfig(), ExecutorConfig("processes", workers=args.workers)
        workers.check_available()
        print(f"suite {suite.name}: {len(suite.methods)} methods x {len(suite.seeds)} seeds, {suite.train.epochs} "
              f"epochs; in-process {torch.get_num_threads()} threads, {workers.describe()}")
        print("warm-up (teacher and offline targets, untimed) ...", flush=True)
        short = dataclasses.replace(suite, train=dataclasses.replace(suite.train, epochs=1))
        timed_run(short, teachers, here, seeds=[suite.seeds[0]])
        rows, ratios = ["| round | in-process s | " + f"processes:{args.workers} s | ratio |", "|---|---|---|---|"], []
        for r in range(args.rounds):
            walls = {}
            for name, ex in ((("here", here), ("workers", workers)) if r % 2 == 0 else
                             (("workers", workers), ("here", here))):
                walls[name], recs = timed_run(suite, teachers, ex)
                assert all(rec["status"] == "ok" for rec in recs), [rec["error"] for rec in recs]
            ratios.append(walls["here"] / walls["workers"])
            rows.append(f"| {r + 1} | {walls['here']:.1f} | {walls['workers']:.1f} | {ratios[-1]:.2f}× |")
            print(rows[-1], flush=True)
    except KDBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nsuite wall time, in-process against processes:{args.workers} (ratio > 1: the workers are faster):")
    print("\n".join(rows))
    print(f"median ratio over {len(ratios)} round(s): {statistics.median(ratios):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
