"""Offline targets a method computes once per teacher (k-means centres, a fitted layer), cached beside
the teacher's checkpoint.

A cache file is named by what it depends on: a readable prefix (method, key hyperparameters), the
teacher's sha256, and a digest of every other input (the computing code's own sha256 included, so an
edit there never reuses stale targets). Writes are atomic, so a concurrent run never reads half a file,
and each file carries a checksum of its tensors, verified at every load: a damaged or altered cache
is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from kdbench.api.atomic import save_atomic
from kdbench.api.locks import exclusive

log = logging.getLogger(__name__)


def source_sha256(module) -> str:
    """sha256 of a module's source file: part of the inputs of anything that module computes."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()


def cache_path(cache_dir: str | Path, prefix: str, teacher_sha256: str, inputs: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{prefix}-{teacher_sha256}-{digest}.pt"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: what a cache file is checked against."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _verified(path: Path, map_location) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The tensors at ``path`` if they load (tensors only: unpickling runs no code) and match their
    recorded checksum; else None and why."""
    if not path.exists():
        return None, "absent"
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that asks for code
        return None, f"unloadable: {type(exc).__name__}"
    if not isinstance(saved, dict) or not isinstance(saved.get("tensors"), dict) or "sha256" not in saved:
        return None, "not a checksummed cache"
    if tensors_sha256(saved["tensors"]) != saved["sha256"]:
        return None, "checksum mismatch"
    return saved["tensors"], "ok"


def load_or_compute(
    path: Path, compute: Callable[[], dict[str, torch.Tensor]], map_location: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors cached at ``path``, or ``compute()``'s, saved there atomically with their checksum;
    and whether it hit. A cache that fails its check is computed again and replaced; processes
    sharing the folder compute it once (the others wait, then load it)."""
    value, why = _verified(path, map_location)
    if value is not None:
        return value, True
    with exclusive(path.with_name(path.name + ".lock"), f"offline targets {path.name}", log.info):
        value, why = _verified(path, map_location)  # computed by the process we waited for
        if value is not None:
            return value, True
        if why != "absent":
            log.warning(f"offline cache {path} failed its check ({why}); computing it again")
        value = compute()
        cpu = {k: v.detach().cpu() for k, v in value.items()}
        save_atomic({"tensors": cpu, "sha256": tensors_sha256(cpu)}, path)
    return value, False
