"""Channels-last against the default NCHW layout, on the default pair: the teacher's forward pass, a
student's KD training step and a student's evaluation, in interleaved rounds (medians, ratios).

    python -m kdbench.bench.layout [--rounds 6] [--iters 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from kdbench.models import build_model, to_device

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbench.bench.layout", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    setups = {cl: models(cl) for cl in (False, True)}
    times: dict[bool, dict[str, list[float]]] = {cl: {p: [] for p in PHASES} for cl in setups}
    for r in range(args.rounds):
        for cl in ((False, True) if r % 2 == 0 else (True, False)):
            for phase, sec in round_times(setups[cl], args.iters).items():
                times[cl][phase].append(sec)
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds of {args.iters}")
    for phase, label in PHASES.items():
        a, b = statistics.median(times[False][phase]), statistics.median(times[True][phase])
        print(f"{label}: NCHW {a * 1e3:.2f} ms, channels-last {b * 1e3:.2f} ms, {a / b:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
