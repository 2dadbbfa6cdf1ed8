"""The validation split a tuned suite chooses hyperparameters on, held out of the students' training
images: stratified (each class in proportion), drawn from its own seed, the same for every method
and trial.

The trials get :func:`hold_out`'s dataset, whose ``test`` split *is* the validation split: the test
images are not in that object at all, so no code path of the trial phase can read them.
"""

from __future__ import annotations

import math

import torch
from kdbench.api.errors import ConfigError
from kdbench.data.datasets import Dataset, Split


def validation_counts(counts: list[int], fraction: float | None, size: int | None) -> list[int]:
    """Images per class to hold out: ``round(fraction * n_c)``, or ``size`` allocated in proportion
    to the classes (largest remainders first, ties to the lower class)."""
    if size is None:
        return [round(fraction * n) for n in counts]
    total = sum(counts)
    exact = [size * n / total if total else 0.0 for n in counts]
    take = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda c: (-(exact[c] - take[c]), c))
    for c in by_remainder[: max(size - sum(take), 0)]:
        take[c] += 1
    return take


def hold_out(data: Dataset, fraction: float | None, size: int | None, seed: int, where: str) -> Dataset:
    """``data``'s training images split in two: the rest (``train``) and the validation split
    (``test``), both in their original order; a class left without training or validation images is
    a ConfigError naming it."""
    labels = data.train.labels.cpu()
    counts = torch.bincount(labels, minlength=data.spec.num_classes).tolist()
    take = validation_counts(counts, fraction, size)
    for c, (n, k) in enumerate(zip(counts, take)):
        if k < 1 or n - k < 1:
            name = data.classes[c] if data.classes else str(c)
            fix = "hold out more images" if k < 1 else "hold out fewer images"
            raise ConfigError(f"{where}: the validation split leaves class {name} with {n - k} training and "
                              f"{k} validation image(s) (of {n}); {fix}, or train on more")
    g = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for c, k in enumerate(take):
        members = (labels == c).nonzero().flatten()
        held[members[torch.randperm(len(members), generator=g)[:k]]] = True
    device = data.train.labels.device
    val, rest = held.nonzero().flatten().to(device), (~held).nonzero().flatten().to(device)
    train = Split(data.train.images[rest], data.train.labels[rest])
    validation = Split(data.train.images[val], data.train.labels[val])
    return Dataset(data.spec, train, validation, data.source, data.sha256, data.classes)
