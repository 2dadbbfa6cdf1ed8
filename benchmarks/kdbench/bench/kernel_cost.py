"""Cost of the full B×B kernel loss against kernel_nystrom's B×L loss as the batch grows.

KDA (Qian, Li, Hu, arXiv 2009.14416) exists because matching the teacher's full kernel matrix
K = F Fᵀ costs O(B²·d) time and O(B²) memory per batch, while the Nyström partial matrices
P = F Mᵀ against L class centres cost O(B·L·d) and O(B·L). This script measures both, forward plus
backward, on random non-negative features (pooled post-ReLU features are non-negative):

    full     Σ smoothL1(K_S − K_T) / ‖K_T‖_F,  K = F Fᵀ                 (B×B)
    nyström  the kernel_nystrom plugin's KDA term, centre accumulation included   (B×L)

Both are the same normalised Huber; the Nyström side is the registered plugin itself, driven through
the plugin API only (one epoch forms its class centres, then its losses are timed past the warm-up).
Time is the median of ``--reps`` runs after one warm-up. Memory on CPU is computed analytically: the leading float32
tensors the step allocates beyond its inputs, ∂L/∂F_s (B·d_s) plus three matrices of the loss's
size (student matrix, teacher matrix, the Huber term or its gradient), i.e. 4·(B·d_s + 3·B·N) bytes
with N = B or L. On CUDA the measured peak allocated beyond the inputs is printed beside it.

Run as ``kdbench bench kernel-cost``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from kdbench.api.method import MethodContext, Task, TrainingProgress
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.api.tapped import Taps, TapShapes
from kdbench.bench.common import count
from kdbench.train.environment import peak_memory, reset_peak_memory, resolve_device

SUMMARY = "forward+backward time and memory of the full B×B kernel loss against kernel_nystrom's B×L"

BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
WIDTHS = {"default pair (fmnist)": (32, 128), "CIFAR-like (resnet8x4/32x4)": (256, 256)}
LANDMARKS = (10, 100)
MIB = 2**20


def full_kernel_step(s: torch.Tensor, t: torch.Tensor) -> None:
    k_s, k_t = s @ s.T, t @ t.T
    (F.smooth_l1_loss(k_s, k_t, reduction="sum", beta=1.0) / torch.linalg.norm(k_t)).backward()


def nystrom_step_fn(d_s: int, d_t: int, n_classes: int, device: torch.device):
    """The kernel_nystrom plugin past its warm-up, its class centres formed from one epoch of random
    non-negative features."""

    def shapes(d: int) -> TapShapes:
        return TapShapes(stages=(), prepool=(d, 1, 1), pooled=(d,), logits=(n_classes,), blocks_per_stage=())

    epochs = 120
    ctx = MethodContext(student=None, teacher=None, student_shapes=shapes(d_s), teacher_shapes=shapes(d_t),
                        num_classes=n_classes, epochs=epochs, steps_per_epoch=1)
    hp = resolve_hyperparameters("kernel_nystrom", None, Task(n_classes, (d_s, 1, 1)))
    method = get_method("kernel_nystrom")(hp, ctx).to(device)
    method.train()

    def losses(s, t, y, logits, epoch):
        taps_s, taps_t = Taps([], None, s, logits), Taps([], None, t, logits)
        return method.losses(taps_s, taps_t, y, TrainingProgress(epoch, 0, 1, epochs))

    y0 = torch.arange(4 * n_classes, device=device) % n_classes
    logits0 = torch.zeros(len(y0), n_classes, device=device)
    losses(torch.rand(len(y0), d_s, device=device), torch.rand(len(y0), d_t, device=device), y0, logits0, 0)
    method.on_epoch_end(0)

    def step(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        losses(s, t, y, logits, epochs - 1)["kda"].backward()

    return step


def measure(step, inputs, reps: int, device: torch.device) -> tuple[float, float | None]:
    """Median seconds of ``step(*inputs)`` and, on CUDA, peak MiB allocated beyond the inputs."""
    step(*inputs)  # warm-up
    times = []
    for _ in range(reps):
        inputs[0].grad = None
        _sync(device)
        t0 = time.perf_counter()
        step(*inputs)
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type != "cuda":
        return statistics.median(times), None
    inputs[0].grad = None
    base = torch.cuda.memory_allocated(device)
    reset_peak_memory(device)
    step(*inputs)
    return statistics.median(times), peak_memory(device)[0] - base / MIB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def analytic_mib(b: int, d_s: int, n: int) -> float:
    return 4 * (b * d_s + 3 * b * n) / MIB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto (default cpu)")
    parser.add_argument("--threads", type=count, default=1, help="CPU threads (default 1)")
    parser.add_argument("--reps", type=count, default=5, help="timed repetitions per cell (default 5)")
    parser.add_argument("--batches", type=count, nargs="+", default=list(BATCHES),
                        help=f"batch sizes B (default {' '.join(map(str, BATCHES))})")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    print(f"device {device}, {torch.get_num_threads()} thread(s), median of {args.reps}, forward+backward")
    print("memory: analytic 4·(B·d_s + 3·B·N) bytes" + (" | measured CUDA peak beyond inputs" if cuda else ""))
    for label, (d_s, d_t) in WIDTHS.items():
        print(f"\n{label}: d_s={d_s}, d_t={d_t}")
        width_table(d_s, d_t, sorted(set(args.batches)), args.reps, device)
    return 0


def width_table(d_s: int, d_t: int, batches: list[int], reps: int, device: torch.device) -> None:
    """One feature width's table: a row a batch size, a column a loss, then how time grows with B."""
    cuda = device.type == "cuda"
    cols = ["full B×B"] + [f"nyström L={n}" for n in LANDMARKS]
    header = f"{'B':>5} | " + " | ".join(f"{c + ' ms':>16} {'MiB':>8}" + (f" {'cuda':>8}" if cuda else "")
                                        for c in cols)
    print(header)
    print("-" * len(header))
    steps = [full_kernel_step] + [nystrom_step_fn(d_s, d_t, n, device) for n in LANDMARKS]
    seconds: dict[int, list[float]] = {}
    for b in batches:
        s = torch.rand(b, d_s, device=device, requires_grad=True)
        t = torch.rand(b, d_t, device=device)
        row = []
        for step, n in zip(steps, [None, *LANDMARKS]):
            inputs = (s, t) if n is None else (s, t, torch.arange(b, device=device) % n,
                                               torch.zeros(b, n, device=device))
            sec, cuda_mib = measure(step, inputs, reps, device)
            seconds.setdefault(b, []).append(sec)
            cell = f"{sec * 1e3:>16.2f} {analytic_mib(b, d_s, n or b):>8.2f}"
            row.append(cell + (f" {cuda_mib:>8.2f}" if cuda else ""))
        print(f"{b:>5} | " + " | ".join(row))
    lo, hi = batches[-3] if len(batches) >= 3 else batches[0], batches[-1]
    if hi > lo:  # one batch size: no growth to fit
        growth = [math.log(seconds[hi][i] / seconds[lo][i]) / math.log(hi / lo) for i in range(len(cols))]
        print(f"time ∝ B^k for B {lo}→{hi}: " + ", ".join(f"{c} k={k:.2f}" for c, k in zip(cols, growth)))
