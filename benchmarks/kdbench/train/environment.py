"""Device choice, determinism and the environment facts stored in every record."""

from __future__ import annotations

import functools
import os
import platform
import random
import re
import subprocess

import torch
from kdbench import __version__
from kdbench.api.errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` are the
    others (what the harness is built and tested for); an unavailable device is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", name):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} asked for but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


#: Deterministic mode fills every new tensor with NaN so that reading memory nothing wrote is
#: reproducible. The harness's ops write before they read, so the fill only costs time (docs/speed.md,
#: "Bit-safe savings"); a test trains the smoke suite with it on and off and finds the records equal.
FILL_UNINITIALIZED_MEMORY = False


def set_determinism(device: torch.device, deterministic: bool = True) -> bool:
    """Deterministic kernels everywhere we can have them; returns whether the run is deterministic.

    On CPU every op we use is deterministic at a fixed thread count, so the same cell run twice gives
    bitwise-identical metrics. On CUDA we ask cuDNN for deterministic algorithms too, but scatter-style
    backward kernels may still vary, so CUDA runs are recorded as not guaranteed deterministic. With
    ``deterministic=False`` (a suite's ``fast_path``) cuDNN benchmarks and picks the fastest kernels.
    """
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if not deterministic:
        torch.use_deterministic_algorithms(False)
        return False
    torch.utils.deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED_MEMORY
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        return False
    torch.use_deterministic_algorithms(True)
    return True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generator state a cell's random draws come from (CPU, and the GPU's when on one)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@functools.cache
def cpu_model() -> str:
    """The processor's model name, since CPU bits hold per processor model (and thread count), and
    ``platform.processor()`` says only ``x86_64`` on Linux: ``/proc/cpuinfo``, else ``lscpu``, else
    macOS's ``sysctl``, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "cpu model", "hardware", "cpu") and value.strip():
                    return value.strip()
    except OSError:
        pass
    for command, pattern in ((["lscpu"], r"^Model name:\s*(.+)$"),
                             (["sysctl", "-n", "machdep.cpu.brand_string"], r"^(.+)$")):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if m := re.search(pattern, out, re.MULTILINE):
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    """The logical CPUs this process may run on (its affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def environment(device: torch.device, deterministic: bool) -> dict:
    env = {
        "kdbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "threads": torch.get_num_threads(),
        "deterministic": deterministic,
    }
    return env


# ------------------------------------------------------------------------------------ peak memory


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets this process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB since the last reset, and what was measured."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:
        status = open("/proc/self/status").read()
        kib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return kib / 1024, "cpu_process_peak_rss"
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_process_max_rss_lifetime"
