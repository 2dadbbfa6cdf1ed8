"""One recipe for what determines a trained network, and its hash: a cell's ``config_hash`` and a
teacher's come from :func:`training_config`, so the two can never drift apart.

What is hashed is everything that changes the result: the protocol version (it stands for the
harness's own code), the data, the budget, the fast path, the model, and what is the role's own
(a cell's method, hyperparameters, plugin sources, seed and teacher; a teacher's seed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from kdbench.config.fast_path import FastPath
from kdbench.data.datasets import Dataset, images_per_epoch

#: Bump when a change to the harness changes what a run computes; it is part of every config hash.
#: 2: channels-last models, evaluation in batches of 256.
PROTOCOL_VERSION = 2


def training_config(data: Dataset, train: Any, fast_path: FastPath, model: dict[str, Any],
                    own: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a network trained on ``data`` under ``train`` (a TrainConfig): ``model``
    names it under its role's keys, ``own`` adds what only that role has. A final batch of one image,
    dropped (:func:`~kdbench.data.datasets.images_per_epoch`), is named only where it happens, so
    every other configuration keeps the hash it had before that rule."""
    dropped = len(data.train) - images_per_epoch(len(data.train), train.batch_size)
    return {
        "protocol": PROTOCOL_VERSION,
        **data.identity(),
        "data_sha256": data.sha256,
        "train_size": len(data.train),
        "test_size": len(data.test),
        **model,
        "train": asdict(train),
        **({"dropped_per_epoch": dropped} if dropped else {}),
        **own,
        **fast_path.hashed(),
    }


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (dataclasses expanded, keys sorted)."""
    def default(o):
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        raise TypeError(f"cannot hash {type(o).__name__}")

    text = json.dumps(obj, sort_keys=True, default=default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
