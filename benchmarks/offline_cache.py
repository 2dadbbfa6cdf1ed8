"""Offline targets a method computes once per teacher (k-means centres, a fitted layer), cached beside
the teacher's checkpoint.

A cache file is named by what it depends on: a readable prefix (method, key hyperparameters), the
teacher's sha256, and a digest of every other input (the computing code's own sha256 included, so an
edit there never reuses stale targets). Writes are atomic, so a concurrent run never reads half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch


def source_sha256(module) -> str:
    """sha256 of a module's source file: part of the inputs of anything that module computes."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()


def cache_path(cache_dir: str | Path, prefix: str, teacher_sha256: str, inputs: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{prefix}-{teacher_sha256}-{digest}.pt"


def load_or_compute(
    path: Path, compute: Callable[[], dict[str, torch.Tensor]], map_location: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors cached at ``path``, or ``compute()``'s, saved there atomically; and whether it hit."""
    if path.exists():
        return torch.load(path, map_location=map_location, weights_only=True), True
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({k: v.cpu() for k, v in value.items()}, tmp)
    os.replace(tmp, path)
    return value, False
