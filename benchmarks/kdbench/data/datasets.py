"""Datasets held whole on the run's device, with batched augmentation drawn from the run's seed.

No DataLoader: a dataset of this size fits in memory (Fashion-MNIST 188 MB, CIFAR 615 MB as float32),
so it is normalised once and kept as one tensor on the device; each epoch's order and augmentation
are drawn from a generator seeded by (seed, epoch). Two consequences we rely on:
- every method run with the same seed sees exactly the same batches (paired comparison);
- an interrupted run resumes at an epoch boundary with the same stream it would have seen.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from kdbench.api.errors import ConfigError, DataError
from kdbench.data import user as user_data
from kdbench.data.user import DataSource

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_ROOT = Path.home() / ".cache" / "kdbench" / "data"  # --download without --data-dir
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # 0: no random crop
    hflip: bool


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 0, True),
    "cifar10": DatasetSpec(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True
    ),
    "cifar100": DatasetSpec(
        "cifar100", 100, 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 4, True
    ),
}

#: The built-in datasets' training-set sizes, so a run's budget in steps is known (and a plugin can
#: check a hyperparameter against it) before the files are read.
TRAIN_IMAGES: dict[str, int] = {"fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}


@dataclass
class Split:
    """Normalised images (N×C×H×W float32) and labels (N, int64) on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


@dataclass
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split
    source: str  # where the files were read from, recorded in every run
    sha256: str  # of the raw train+test arrays, so a record names exactly the data it saw
    classes: tuple[str, ...] | None = None  # the user's class names (label i is classes[i])

    def identity(self) -> dict:
        """What names this data in a config hash: a built-in's name; for the user's data also its
        spec (statistics from its training split, augmentation), which no name fixes."""
        if self.classes is None:
            return {"dataset": self.spec.name}
        return {"dataset": self.spec.name, "dataset_spec": asdict(self.spec)}


# ----------------------------------------------------------------------------------------- loading


def load_dataset(
    name: str | DataSource, data_dir: str | Path | None = None, device: str | torch.device = "cpu",
    download: bool = False,
) -> Dataset:
    """Load ``name`` whole onto ``device``; a missing dataset is a :class:`DataError` saying how to get it."""
    if isinstance(name, DataSource):
        return _load_user(name, torch.device(device))
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if name == "fashion_mnist":
        raw, source = _load_fashion_mnist(data_dir, download)
    else:
        raw, source = _load_cifar(spec, data_dir, download)
    (xtr, ytr), (xte, yte) = raw
    digest = hashlib.sha256()
    for arr in (xtr, ytr, xte, yte):
        digest.update(arr.contiguous().numpy().tobytes())
    return Dataset(
        spec=spec,
        train=_to_split(xtr, ytr, spec, device),
        test=_to_split(xte, yte, spec, device),
        source=source,
        sha256=digest.hexdigest(),
    )


def _load_user(source: DataSource, device: torch.device) -> Dataset:
    raw = user_data.read(source, device)
    mean, std = user_data.train_statistics(raw.train[0])
    images = raw.train[0]
    spec = DatasetSpec(source.name, len(raw.classes), images.shape[1], images.shape[2], mean, std,
                       source.crop_padding, source.hflip)

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:  # in place: one float copy at the peak
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        return Split(user_data.as_float(x).sub_(m).div_(s).to(device), y.to(device))

    sha = user_data.digest(raw)  # before the splits are normalised in place
    return Dataset(spec, split(*raw.train), split(*raw.test), source.path, sha, tuple(raw.classes))


def _to_split(x: torch.Tensor, y: torch.Tensor, spec: DatasetSpec, device) -> Split:
    x = x.to(device=device, dtype=torch.float32).div_(255.0)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    return Split(images=(x - mean) / std, labels=y.to(device=device, dtype=torch.int64))


def read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (the MNIST format), gzipped or not, as a uint8 tensor; a damaged file is a
    one-line :class:`DataError` naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, truncated gzip, unreadable
        raise DataError(f"{path} cannot be read: {exc}") from None
    if len(data) < 4:
        raise DataError(f"{path} is not an idx file: {len(data)} byte(s)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path} is not a uint8 idx file")
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header is cut short")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path} is truncated: {len(body)} bytes of {math.prod(dims)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_files(folder: Path) -> dict[str, Path | None]:
    return {k: _find_idx(folder, stem) for k, stem in FASHION_MNIST_FILES.items()}


def _load_fashion_mnist(data_dir, download: bool):
    """From ``data_dir`` (or its ``fashion-mnist/`` or torchvision's ``FashionMNIST/raw/``) when one is
    named, and from nowhere else; otherwise from the Debian package's folder."""
    if data_dir is None:
        folders = [FASHION_MNIST_DEBIAN_DIR]
    else:
        d = Path(data_dir)
        if not d.is_dir() and not download:
            raise DataError(f"--data-dir {d} is not a folder")
        folders = [d, d / "fashion-mnist", d / "FashionMNIST" / "raw"]
    found = {folder: _idx_files(folder) for folder in folders}
    for folder, paths in found.items():
        if all(paths.values()):
            return _read_fashion_mnist(paths), str(folder)
    if download:
        return _download_fashion_mnist(Path(data_dir) if data_dir else DOWNLOAD_ROOT)
    if data_dir is None:
        raise DataError(f"Fashion-MNIST not found; {_FMNIST_HINT}")
    folder, paths = max(found.items(), key=lambda item: sum(p is not None for p in item[1].values()))
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    raise DataError(f"--data-dir {data_dir}: {folder} lacks {', '.join(missing)} (plain or .gz)")


def _read_fashion_mnist(paths: dict[str, Path]):
    a = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = a[f"{split}_images"], a[f"{split}_labels"]
        where = f"{paths[f'{split}_images']} and {paths[f'{split}_labels']}"
        if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or labels.dim() != 1:
            raise DataError(f"{where}: expected N×28×28 images and N labels, got {tuple(images.shape)} "
                            f"and {tuple(labels.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
        if len(labels) and int(labels.max()) >= 10:
            raise DataError(f"{paths[f'{split}_labels']}: label {int(labels.max())} is not a class (0-9)")
    train = (a["train_images"].unsqueeze(1), a["train_labels"])
    test = (a["test_images"].unsqueeze(1), a["test_labels"])
    return train, test


def _download_fashion_mnist(root: Path):
    try:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"Fashion-MNIST download failed ({exc}); {_FMNIST_HINT}") from None
    return _load_fashion_mnist(root, download=False)


_FMNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (files land in "
    f"{FASHION_MNIST_DEBIAN_DIR}), pass --data-dir FOLDER holding the four *-idx*-ubyte.gz files, "
    "or pass --download on a machine with internet"
)


def _cifar_folder(spec: DatasetSpec) -> str:
    return "cifar-10-batches-py" if spec.name == "cifar10" else "cifar-100-python"


def _cifar_files(spec: DatasetSpec) -> tuple[list[str], list[str]]:
    if spec.name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    return ["train"], ["test"]


class _ArraysOnly(pickle.Unpickler):
    """The CIFAR release is a pickle; this reads its dicts, lists and NumPy arrays and refuses any
    other class, so a data file cannot run code."""

    ALLOWED = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numpy", "ndarray"),
               ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        short = module.rsplit(".", 1)[-1] if module.startswith("numpy") else module
        if (short, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a data file never needs")
        import numpy

        core = getattr(numpy, "_core", None) or numpy.core
        return getattr(numpy if short == "numpy" else core.multiarray, name)


def _read_cifar_batches(folder: Path, names: list[str], label_key: str, classes: int):
    images, labels = [], []
    for name in names:
        path = folder / name
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
        if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
            raise DataError(f"{path} is not a CIFAR batch: it lacks 'data' or {label_key!r}")
        x = torch.as_tensor(entry["data"], dtype=torch.uint8)
        y = torch.as_tensor(entry[label_key], dtype=torch.int64)
        if x.dim() != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
            raise DataError(f"{path}: expected N×3072 pixels and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < classes:
            raise DataError(f"{path}: labels outside 0-{classes - 1}")
        images.append(x.reshape(-1, 3, 32, 32))
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


def _load_cifar(spec: DatasetSpec, data_dir, download: bool):
    """Read the python-pickle release of CIFAR-10/100 (the format torchvision downloads)."""
    root = Path(data_dir) if data_dir else DOWNLOAD_ROOT
    folder = root / _cifar_folder(spec)
    train_names, test_names = _cifar_files(spec)
    where = (f"pass --data-dir FOLDER containing {_cifar_folder(spec)}/ (the python version from "
             "https://www.cs.toronto.edu/~kriz/cifar.html), or --download on a machine with internet")
    missing = [n for n in train_names + test_names if not (folder / n).is_file()]
    if missing:
        if not download:
            raise DataError(f"{spec.name} not found: {folder} lacks {', '.join(missing)}; {where}")
        try:
            import torchvision

            cls = torchvision.datasets.CIFAR10 if spec.name == "cifar10" else torchvision.datasets.CIFAR100
            cls(str(root), train=True, download=True)
        except Exception as exc:
            raise DataError(f"{spec.name} download failed ({exc}); {where}") from None
    label_key = "labels" if spec.name == "cifar10" else "fine_labels"
    try:
        train = _read_cifar_batches(folder, train_names, label_key, spec.num_classes)
        test = _read_cifar_batches(folder, test_names, label_key, spec.num_classes)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, RuntimeError) as exc:
        raise DataError(f"{spec.name} files in {folder} are unreadable ({exc}); {where}") from None
    return (train, test), str(folder)


def head(data: Dataset, train_size: int | None, test_size: int | None, where: str = "") -> Dataset:
    """The first ``train_size`` training and ``test_size`` test images (a suite's declared subset);
    a size beyond the split is an error, not a silent clamp. ``where`` prefixes the key in it."""
    def cut(split: Split, n: int | None, key: str, name: str) -> Split:
        if n is not None and n > len(split):
            raise ConfigError(f"{where}{key} is {n:,}, but {data.spec.name}'s {name} set has {len(split):,} images")
        return split if n is None else Split(split.images[:n], split.labels[:n])

    return Dataset(data.spec, cut(data.train, train_size, "train_size", "training"),
                   cut(data.test, test_size, "test_size", "test"), data.source, data.sha256, data.classes)


# ------------------------------------------------------------------------------------- the stream


def epoch_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """The generator for one epoch's order and augmentation: a pure function of (seed, epoch)."""
    device = torch.device(device)
    g = torch.Generator(device=device.type if device.type != "mps" else "cpu")
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1))
    return g


def augment(x: torch.Tensor, spec: DatasetSpec, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and padded random crop, batched, with draws from ``g``.

    The crop pads with the normalised value of a black pixel, as RandomCrop(padding) on raw images
    followed by normalisation would.
    """
    b, c, h, w = x.shape
    if spec.hflip:
        flip = torch.rand(b, generator=g, device=x.device) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    p = spec.crop_padding
    if p > 0:
        black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], device=x.device)
        padded = black.view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g, device=x.device)
        rows = dy.view(b, 1, 1, 1) + torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = dx.view(b, 1, 1, 1) + torch.arange(w, device=x.device).view(1, 1, 1, w)
        x = padded.gather(2, rows.expand(b, c, h, w + 2 * p)).gather(3, cols.expand(b, c, h, w))
    return x


def images_per_epoch(n: int, batch_size: int) -> int:
    """Training images an epoch draws: all ``n``, except that a final partial batch of exactly one
    image (after at least one full batch) is dropped, since batch norm cannot train on one image.
    A last batch of two or more is kept, so a suite without such a batch draws what it always drew;
    the image left out is a different one each epoch, as the order is drawn anew."""
    return n - 1 if n > batch_size and n % batch_size == 1 else n


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in an epoch of ``n`` training images (:func:`images_per_epoch`), for every method,
    the teacher and the learning-rate schedule alike, and the step count of a budget as plugins see
    it (``Task``, ``MethodContext``, ``TrainingProgress``)."""
    return math.ceil(images_per_epoch(n, batch_size) / batch_size)


def train_batches(
    split: Split, spec: DatasetSpec, batch_size: int, seed: int, epoch: int, augment_data: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented batches of one epoch; the last partial batch is kept unless it is one
    image (:func:`images_per_epoch`)."""
    g = epoch_generator(seed, epoch, split.images.device)
    order = torch.randperm(len(split), generator=g, device=split.images.device)
    for start in range(0, images_per_epoch(len(split), batch_size), batch_size):
        idx = order[start : start + batch_size]
        x = split.images[idx]
        yield (augment(x, spec, g) if augment_data else x), split.labels[idx]


def test_batches(split: Split, batch_size: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
