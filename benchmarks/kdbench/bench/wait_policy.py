"""How OpenMP's waiting threads should behave: one seed group timed under each wait setting, on an
idle machine and under an artificial load of busy processes, interleaved.

Between two parallel regions torch's OpenMP threads wait for work. Spinning (libgomp's default, for
a while) answers the next region at once but burns a core that another process may need; sleeping
(``OMP_WAIT_POLICY=PASSIVE``) leaves the core free but pays a wake-up at every region. Which is
better depends on the load, so each setting is measured in both conditions. The settings are read
by OpenMP when torch loads it, so every measurement is a fresh process (``--measure``, which prints
the group's wall seconds as JSON) with the setting in its environment. The order of the settings,
and of the two conditions, flips from one round to the next. The bits do not depend on the setting
(each measurement's records are compared with the first's).

Run as ``kdbench bench wait-policy``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from typing import Iterator

import torch
from kdbench.api.errors import KDBenchError
from kdbench.bench.common import add_suite, add_teacher_cache, count, markdown_table, teachers_folder, timed_run, with_train
from kdbench.config.suite import load_suite

SUMMARY = "OpenMP wait settings (sleep, bounded spin, spin) timed on one group, idle and under load"

#: name: the environment a measurement runs under (``None`` removes the variable).
SETTINGS: dict[str, dict[str, str | None]] = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "spin 1k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"},
    "spin 10k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "100000"},
    "spin 300k (libgomp's default)": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300000"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
}
CONDITIONS = ("idle", "loaded")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite(parser, "default")
    parser.add_argument("--seed", type=int, default=0, help="the seed whose group is timed (default 0)")
    parser.add_argument("--train-size", type=count, default=5120,
                        help="training images of the timed group's one epoch (default 5120)")
    parser.add_argument("--rounds", type=count, default=2, help="rounds, each timing every setting in both conditions")
    parser.add_argument("--load", type=count, default=2, help="busy processes in the loaded condition (default 2)")
    parser.add_argument("--threads", type=count, default=2, help="torch threads of each measurement (default 2)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="NAME",
                        help=f"which settings (default all: {', '.join(SETTINGS)})")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one measurement, as a child
    add_teacher_cache(parser)


def measure(args: argparse.Namespace) -> dict:
    """One timed group, here: its wall seconds and a digest of its records' results."""
    torch.set_num_threads(args.threads)
    suite = dataclasses.replace(with_train(load_suite(args.suite), epochs=1), train_size=args.train_size)
    _, records = timed_run(suite, teachers_folder(args.results_dir), seeds=[args.seed], device="cpu")
    return {"wall_s": max(r["group"]["wall_s"] for r in records),
            "results": {r["label"]: [e["loss"] for e in r["epochs"]] + [r["final_acc"]] for r in records}}


def child(args: argparse.Namespace, setting: str) -> dict:
    env = dict(os.environ)
    for key, value in SETTINGS[setting].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    command = [sys.executable, "-m", "kdbench", "bench", "wait-policy", "--measure", "--suite", args.suite,
               "--seed", str(args.seed), "--train-size", str(args.train_size), "--threads", str(args.threads),
               "--results-dir", args.results_dir]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise KDBenchError(f"the measurement under {setting!r} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` processes that spin on a core each, for the loaded condition."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(args: argparse.Namespace) -> int:
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    print(f"suite {args.suite}, seed {args.seed}'s group, one epoch on {args.train_size} images, {args.threads} "
          f"threads; loaded = {args.load} busy processes; {args.rounds} round(s)")
    print("warm-up (teacher and offline targets, untimed) ...", flush=True)
    reference = child(args, args.settings[0])["results"]
    walls: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for condition in CONDITIONS if r % 2 == 0 else CONDITIONS[::-1]:
            with busy(args.load) if condition == "loaded" else contextlib.nullcontext():
                for setting in args.settings if r % 2 == 0 else args.settings[::-1]:
                    out = child(args, setting)
                    if out["results"] != reference:
                        raise KDBenchError(f"the records under {setting!r} ({condition}) differ from the first")
                    walls.setdefault((setting, condition), []).append(out["wall_s"])
                    print(f"round {r + 1}, {condition}, {setting}: {out['wall_s']:.1f} s", flush=True)
    print("\nthe records were the same under every setting, idle and loaded\n")
    print(summary(walls, args.settings))
    return 0


def summary(walls: dict[tuple[str, str], list[float]], settings: list[str]) -> str:
    """Median group seconds per setting and condition, and each against the best in its condition
    (1.00 is the best; 1.30 takes 30% longer)."""
    median = {key: statistics.median(v) for key, v in walls.items()}
    best = {c: min(median[(s, c)] for s in settings) for c in CONDITIONS}
    rows = [[s, *(f"{median[(s, c)]:.1f} s ({median[(s, c)] / best[c]:.2f})" for c in CONDITIONS),
             f"{max(median[(s, c)] / best[c] for c in CONDITIONS):.2f}"] for s in settings]
    return markdown_table(["setting", "idle (vs best)", "loaded (vs best)", "worst of the two"], rows)
