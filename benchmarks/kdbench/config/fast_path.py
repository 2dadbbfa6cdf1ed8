"""How a suite's networks are computed: precision, memory layout, compilation, determinism.

These options change the bits a run produces, so they are declared in the suite (``fast_path:``),
recorded in every record and hashed with the cell's configuration (left out of the hash when all of
them are at their defaults, so records made before they existed stay valid):

- ``precision``: ``fp32``, or ``bf16`` (autocast around every forward pass and loss, the teacher's
  included; backward and the optimizer stay in fp32, bf16 needs no loss scaling);
- ``channels_last``: NHWC weights, which CPUs and tensor cores both prefer (the default);
- ``compile``: ``torch.compile`` of each network's forward pass; a network that fails to compile
  runs eagerly, and the record says why;
- ``deterministic``: deterministic kernels; ``false`` lets cuDNN benchmark and pick the fastest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastPath:
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = True

    def hashed(self) -> dict[str, Any]:
        """What a config hash adds: nothing at the defaults."""
        return {} if self == FastPath() else {"fast_path": asdict(self)}
