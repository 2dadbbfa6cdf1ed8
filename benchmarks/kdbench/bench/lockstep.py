"""Lockstep against one cell at a time, on one seed of a suite: the seed's wall time and each cell's
time split.

The machine is shared and noisy, so the two modes alternate within each round (the order flips from
one round to the next) and what is printed is their ratio per round, then the median. A first,
untimed round trains the teacher and the offline targets when they are not cached, so every timed
round reads the same caches. Each run writes into a fresh folder of its own (the teacher folder is
linked in), so nothing is skipped.

    python -m kdbench.bench.lockstep [--suite default] [--seed 0] [--rounds 2] [--epochs N]
                                     [--results-dir results] [--device cpu]
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
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest


def timed_run(suite, seed: int, teachers: Path, lockstep: bool, device: str) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="kdbench-speed-") as tmp:
        (Path(tmp) / "teachers").symlink_to(teachers.resolve(), target_is_directory=True)
        t0 = time.perf_counter()
        records = run_suite(RunRequest(suite, seeds=[seed], device=device, results_dir=tmp, progress=False,
                                       lockstep=lockstep), log=lambda _: None)
        return time.perf_counter() - t0, records


def split_table(solo: list[dict], grouped: list[dict]) -> str:
    """Per cell, from the last round: its time split in lockstep and its cost in both modes."""
    alone = {r["label"]: r for r in solo}
    rows = ["| cell | own train s | teacher s (charged) | setup s | eval s | cost alone s (lockstep) "
            "| cost s (one at a time) | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in grouped:
        t, a = r["time_split"], alone[r["label"]]
        rows.append(f"| {r['label']} | {t['train_own_s']:.1f} | {t['teacher_s']:.1f} | {t['setup_s']:.1f} "
                    f"| {t['eval_s']:.1f} | {r['cost_s']:.1f} | {a['cost_s']:.1f} | {r['cost_s'] / a['cost_s']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbench.bench.lockstep", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds, each running both modes")
    parser.add_argument("--epochs", type=int, default=None, help="budget instead of the suite's (shorter rounds)")
    parser.add_argument("--results-dir", default="results", help="where the teacher is cached (default results)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        suite = load_suite(args.suite)
        if args.epochs is not None:
            suite = dataclasses.replace(suite, train=dataclasses.replace(suite.train, epochs=args.epochs))
        teachers = Path(args.results_dir) / "teachers"
        teachers.mkdir(parents=True, exist_ok=True)
        print(f"suite {suite.name}, seed {args.seed}, {len(suite.methods)} methods, {suite.train.epochs} epochs, "
              f"{torch.get_num_threads()} threads, device {args.device}")
        print("warm-up round (teacher and offline targets, untimed) ...", flush=True)
        timed_run(suite, args.seed, teachers, True, args.device)
        rows, ratios = ["| round | one at a time s | lockstep s | ratio |", "|---|---|---|---|"], []
        last: dict[bool, list[dict]] = {}
        for r in range(args.rounds):
            walls = {}
            for lockstep in ((False, True) if r % 2 == 0 else (True, False)):
                walls[lockstep], last[lockstep] = timed_run(suite, args.seed, teachers, lockstep, args.device)
            ratios.append(walls[False] / walls[True])
            rows.append(f"| {r + 1} | {walls[False]:.1f} | {walls[True]:.1f} | {ratios[-1]:.2f}× |")
            print(rows[-1], flush=True)
    except KDBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\nseed wall time, one cell at a time against lockstep (ratio > 1: lockstep is faster):")
    print("\n".join(rows))
    print(f"median ratio over {len(ratios)} round(s): {statistics.median(ratios):.2f}×")
    print("\neach cell's time split (last round):")
    print(split_table(last[False], last[True]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
