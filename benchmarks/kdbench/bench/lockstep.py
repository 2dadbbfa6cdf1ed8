"""Lockstep against one cell at a time, on one seed of a suite: the seed's wall time and each cell's
time split.

The two modes alternate within each round (the order flips from one round to the next) and what is
printed is their ratio per round, then the median. A first, untimed round trains the teacher and the
offline targets when they are not cached, so every timed round reads the same caches. Each run
writes into a fresh folder of its own (the teacher folder is linked in), so nothing is skipped.

Run as ``kdbench bench lockstep``.
"""

from __future__ import annotations

import argparse

import torch
from kdbench.bench.common import (add_rounds, add_suite, add_teacher_cache, count, markdown_table, print_wall_rounds,
                                  teachers_folder, timed_run, wall_rounds, with_train)
from kdbench.config.suite import load_suite
from kdbench.train.environment import resolve_device

SUMMARY = "a seed's wall time in lockstep against one cell at a time, and each cell's time split"


def split_table(solo: list[dict], grouped: list[dict]) -> str:
    """Per cell, from the last round: its time split in lockstep and its cost in both modes."""
    alone = {r["label"]: r for r in solo}
    header = ["cell", "own train s", "teacher s (charged)", "setup s", "eval s", "cost alone s (lockstep)",
              "cost s (one at a time)", "ratio"]
    rows = []
    for r in grouped:
        t, a = r["time_split"], alone[r["label"]]
        rows.append([r["label"], f"{t['train_own_s']:.1f}", f"{t['teacher_s']:.1f}", f"{t['setup_s']:.1f}",
                     f"{t['eval_s']:.1f}", f"{r['cost_s']:.1f}", f"{a['cost_s']:.1f}",
                     f"{r['cost_s'] / a['cost_s']:.2f}"])
    return markdown_table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite(parser, "default")
    parser.add_argument("--seed", type=int, default=0, help="the seed whose cells are run (default 0)")
    add_rounds(parser, 2, "both modes")
    parser.add_argument("--epochs", type=count, default=None, help="budget instead of the suite's (shorter rounds)")
    add_teacher_cache(parser)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    resolve_device(args.device)  # an unknown or absent device is refused before the warm-up
    if args.epochs is not None:
        suite = with_train(suite, epochs=args.epochs)
    teachers = teachers_folder(args.results_dir)
    print(f"suite {suite.name}, seed {args.seed}, {len(suite.methods)} methods, {suite.train.epochs} epochs, "
          f"{torch.get_num_threads()} threads, device {args.device}")

    def seed_run(lockstep: bool) -> tuple[float, list[dict]]:
        return timed_run(suite, teachers, seeds=[args.seed], device=args.device, lockstep=lockstep)

    print("warm-up round (teacher and offline targets, untimed) ...", flush=True)
    seed_run(True)
    rounds = wall_rounds(args.rounds, seed_run, False, True, ("one at a time", "lockstep"))
    print_wall_rounds("seed wall time, one cell at a time against lockstep (ratio > 1: lockstep is faster):", rounds)
    print("\neach cell's time split (last round):")
    print(split_table(rounds.last[False], rounds.last[True]))
    return 0
