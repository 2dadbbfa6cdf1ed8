"""Channels-last against the default NCHW layout, on the default pair: the teacher's forward pass, a
student's KD training step and a student's evaluation, in interleaved rounds (medians, ratios).

Run as ``kdbench bench layout``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from kdbench.bench.common import add_rounds, alternating, count, median_ratio
from kdbench.models import build_model, to_device

SUMMARY = "channels-last against NCHW on the default pair: teacher forward, KD step, evaluation"

PHASES = {"teacher": "teacher forward, batch 128", "step": "student KD step, batch 128",
          "eval": "student eval, batch 256"}


def models(channels_last: bool):
    torch.manual_seed(0)
    teacher, student = build_model("fmnist_teacher", 10, 1).eval(), build_model("fmnist_student", 10, 1)
    if channels_last:
        teacher, student = to_device(teacher, "cpu"), to_device(student, "cpu")
    return teacher, student, torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)


def timed(fn, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def round_times(setup, iters: int) -> dict[str, float]:
    teacher, student, opt = setup
    g = torch.Generator().manual_seed(1)
    x, y, xe = torch.randn(128, 1, 28, 28, generator=g), torch.arange(128) % 10, torch.randn(256, 1, 28, 28)
    with torch.no_grad():
        z_t = teacher(x)

    def step():
        z_s = student(x)
        kd = F.kl_div(F.log_softmax(z_s / 4, 1), F.softmax(z_t / 4, 1), reduction="batchmean")
        opt.zero_grad()
        (F.cross_entropy(z_s, y) + kd).backward()
        opt.step()

    with torch.no_grad():
        t = timed(lambda: teacher(x), iters)
        student.eval()
        e = timed(lambda: student(xe), iters)
        student.train()
    return {"teacher": t, "step": timed(step, iters), "eval": e}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rounds(parser, 6, "both layouts")
    parser.add_argument("--iters", type=count, default=20, help="timed calls of each phase a round (default 20)")


def run(args: argparse.Namespace) -> int:
    setups = {cl: models(cl) for cl in (False, True)}
    times: dict[bool, dict[str, list[float]]] = {cl: {p: [] for p in PHASES} for cl in setups}
    for result in alternating(args.rounds, lambda cl: round_times(setups[cl], args.iters), False, True):
        for cl, phases in result.items():
            for phase, sec in phases.items():
                times[cl][phase].append(sec)
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds of {args.iters}")
    for phase, label in PHASES.items():
        a, b, ratio = median_ratio(times[False][phase], times[True][phase])
        print(f"{label}: NCHW {a * 1e3:.2f} ms, channels-last {b * 1e3:.2f} ms, {ratio:.2f}×")
    return 0
