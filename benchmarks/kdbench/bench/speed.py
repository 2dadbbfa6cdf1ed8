"""Training speed of a suite's pair on synthetic data: ms per step and images per second for the
student alone, vanilla_kd alone and every method of the suite in lockstep, in fp32, bf16 and
compiled; and, measured in the same run, vanilla KD written as a plain PyTorch loop the way users'
scripts do it, so the ratio against what they would otherwise run is printed, not claimed.

Speed does not depend on pixel values, so the data is random, in the dataset's shape. The harness's
own path is timed: cells built as a run builds them (``CellRun.start``: student, method, offline
targets), trained by ``train_epoch``. The plain loop is a ``DataLoader`` over an in-memory dataset
with per-sample crop and flip, the teacher and student in their default layout, ``loss.item()``
every step. Each measurement follows an untimed warm-up (compilation, cuDNN's search); on CUDA it
is timed with CUDA events.

Run as ``kdbench bench speed``; how to read its table: docs/speed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from kdbench.api.errors import ConfigError, KDBenchError
from kdbench.bench.common import add_suite, at_least, count, markdown_table, scratch_results, with_train
from kdbench.config.fast_path import FastPath
from kdbench.config.suite import load_suite
from kdbench.data.datasets import DATASETS, Dataset, DatasetSpec, Split, steps_per_epoch
from kdbench.models import to_device
from kdbench.models.pair import build_student, build_teacher
from kdbench.run.plan import plan
from kdbench.train.cell import CellRun, SharedRun
from kdbench.train.environment import resolve_device, set_determinism
from kdbench.train.fast_path import compile_forward
from kdbench.train.loop import train_epoch
from kdbench.train.teacher import Teacher, TeacherInfo, freeze
from kdbench.train.timing import Timer

SUMMARY = "ms/step and img/s of a suite's pair (fp32, bf16, compiled) against a plain PyTorch loop"

VARIANTS = {
    "fp32": FastPath(),
    "bf16": FastPath(precision="bf16"),
    "compiled": FastPath(compile=True),
    "bf16-compiled": FastPath(precision="bf16", compile=True),
}


def synthetic(spec: DatasetSpec, n: int, device: torch.device, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, spec.in_channels, spec.image_size, spec.image_size, generator=g)
    return Split(images.to(device), torch.randint(0, spec.num_classes, (n,), generator=g).to(device))


#: Standard deviation given to the random teacher's logits, about a trained teacher's: a random
#: network's are nearly uniform, which leaves offline targets (bregman_pca's code) degenerate.
LOGIT_SPREAD = 4.0


def frozen_teacher(suite, spec: DatasetSpec, device: torch.device, fast: FastPath):
    torch.manual_seed(0)
    teacher = freeze(to_device(build_teacher(suite, spec), device, fast.channels_last))
    head = getattr(teacher, "classifier", None)
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            scale = LOGIT_SPREAD / teacher(synthetic(spec, 64, device, 5).images).std()
            head.weight.mul_(scale)
            if head.bias is not None:
                head.bias.mul_(scale)
    if fast.compile:
        compile_forward(teacher)
    return teacher


def harness_step_s(suite, spec, labels, device, fast, batch, steps, warmup, folder: Path) -> float:
    """Seconds per step of ``labels`` trained together by the harness (one teacher pass a step)."""
    suite = dataclasses.replace(with_train(suite, batch_size=batch), fast_path=fast)
    deterministic = set_determinism(device, fast.deterministic)
    timed = Dataset(spec, synthetic(spec, steps * batch, device, 1), synthetic(spec, batch, device, 2), "synthetic", "0" * 64)
    warm = dataclasses.replace(timed, train=synthetic(spec, warmup * batch, device, 3))
    specs = plan(suite, labels, [0], spec)
    needs = any(s.method_cls.needs_teacher() for s in specs)
    teacher = frozen_teacher(suite, spec, device, fast) if needs else None
    info = TeacherInfo(suite.teacher.model, "speed", "0" * 64, 0.0, "", None, str(folder))
    shared = SharedRun(suite, timed, device, deterministic, folder, Teacher(teacher, info, None) if needs else None)
    runs = [CellRun(s, {}, "speed", shared) for s in specs]
    for r in runs:
        r.start()
        if r.status != "ok":
            raise KDBenchError(f"{r.spec.entry.label} could not start: {r.rec['error']}")
    cells = [r.cell for r in runs]
    train_epoch(cells, teacher, warm, suite.train, 0, 0, precision=fast.precision)
    clock = Timer(device)  # CUDA events on a GPU: no wait before the region, one after it
    with clock.region():
        train_epoch(cells, teacher, timed, suite.train, 0, 1, precision=fast.precision)
    stopped = [f"{r.spec.entry.label} {r.cell.status} ({r.cell.error or r.cell.diverged_at})"
               for r in runs if r.cell.status != "ok"]
    if stopped:
        raise KDBenchError(f"a cell stopped training, so the timing would leave it out: {'; '.join(stopped)}")
    return clock.seconds() / steps


class Augmented(torch.utils.data.Dataset):
    """An in-memory dataset with the per-sample augmentation users write (crop with padding, flip)."""

    def __init__(self, split: Split, spec: DatasetSpec) -> None:
        self.x, self.y, self.spec = split.images.cpu(), split.labels.cpu(), spec

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.spec.hflip and torch.rand(()) < 0.5:
            x = x.flip(2)
        p = self.spec.crop_padding
        if p:
            x = F.pad(x, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, dy:dy + self.spec.image_size, dx:dx + self.spec.image_size]
        return x, self.y[i]


def plain_step_s(suite, spec, device, batch, steps, warmup, workers: int) -> float:
    """Seconds per step of vanilla KD (T = 4, CE 0.1, KL 0.9) as a plain loop."""
    torch.manual_seed(0)
    teacher = build_teacher(suite, spec).to(device).eval()
    student = build_student(suite, spec).to(device)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    data = Augmented(synthetic(spec, (warmup + steps) * batch, torch.device("cpu"), 4), spec)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    batches, running = iter(loader), 0.0

    def step(x, y) -> float:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        kl = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
        loss = 0.1 * F.cross_entropy(s, y) + 0.9 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for x, y in itertools.islice(batches, warmup):
        running += step(x, y)
    clock = Timer(device)
    with clock.region():
        for x, y in batches:  # the loader's own time included, as in users' loops
            running += step(x, y)
    return clock.seconds() / steps


def table(rows: list[tuple], batch: int, n_train: int) -> str:
    steps = steps_per_epoch(n_train, batch)
    header = ["variant", "run", "cells", "ms/step", "img/s (all cells)", f"s/epoch ({n_train:,} images)"]
    return markdown_table(header, [[variant, run, cells, f"{1000 * step_s:.2f}", f"{cells * batch / step_s:,.0f}",
                                    f"{step_s * steps:.1f}"] for variant, run, cells, step_s in rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite(parser, "cifar100-crd", ": its pair, dataset shape, batch and methods")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N]")
    parser.add_argument("--batch", type=count, default=None, help="default: the suite's")
    parser.add_argument("--steps", type=count, default=50, help="timed steps per measurement (default 50)")
    parser.add_argument("--warmup", type=count, default=10, help="untimed steps before each measurement (default 10)")
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "compiled"], choices=sorted(VARIANTS))
    parser.add_argument("--methods", nargs="+", default=None, help="the lockstep group (default: the suite's)")
    parser.add_argument("--loader-workers", type=at_least(0), default=min(8, os.cpu_count() or 1),
                        help="the plain loop's DataLoader workers (RepDistiller uses 8)")


def harness_rows(args, suite, spec, device, batch: int, labels: list[str]) -> list[tuple]:
    """(variant, run, cells, seconds a step) for each variant's three harness runs."""
    lockstep = "lockstep, all methods" if not args.methods else "lockstep"
    rows = []
    with scratch_results() as tmp:
        for variant in args.variants:
            for run_name, chosen in (("student alone", ["student_ce"]), ("vanilla_kd alone", ["vanilla_kd"]),
                                     (lockstep, labels)):
                step_s = harness_step_s(suite, spec, chosen, device, VARIANTS[variant], batch, args.steps,
                                        args.warmup, tmp / variant)
                rows.append((variant, run_name, len(chosen), step_s))
                print(f"  {variant:>13} {run_name:<22} {1000 * step_s:8.2f} ms/step", flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    if not isinstance(suite.dataset, str):
        raise ConfigError("the speed benchmark takes a suite on a built-in dataset (it needs only its shape)")
    spec, device = DATASETS[suite.dataset], resolve_device(args.device)
    batch = args.batch or suite.train.batch_size
    labels = args.methods or [e.label for e in suite.methods]
    print(f"suite {suite.name}: {suite.teacher.model} -> {suite.student_model}, {spec.name} shape "
          f"{spec.in_channels}×{spec.image_size}×{spec.image_size}, batch {batch}, {args.steps} timed steps "
          f"after {args.warmup}, device {device}, {torch.get_num_threads()} threads", flush=True)
    rows = harness_rows(args, suite, spec, device, batch, labels)
    plain = plain_step_s(suite, spec, device, batch, args.steps, args.warmup, args.loader_workers)
    rows.append(("fp32", f"plain loop, vanilla KD ({args.loader_workers} loader workers)", 1, plain))
    n_train = suite.train_size or {"fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}[spec.name]
    print()
    print(table(rows, batch, n_train))
    print()
    for variant, run_name, _, step_s in rows:
        if run_name == "vanilla_kd alone":
            print(f"vanilla_kd, {variant}: {plain / step_s:.2f}× the plain loop's speed "
                  f"({1000 * plain:.2f} ms/step against {1000 * step_s:.2f})")
    return 0
