"""Dataset readers on small files written in the real formats, and the seeded batch stream."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from kdbench.api.errors import DataError
from kdbench.data import datasets as D

# ------------------------------------------------------------------------------- CIFAR pickles


def write_cifar(root, name: str, n_train: int, n_test: int, classes: int):
    """Files in the layout and pickle format of the official python release."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def dump(fname, n):
        entry = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 label_key: [int(v) for v in rng.integers(0, classes, size=n)]}
        if name == "cifar100":
            entry["coarse_labels"] = [0] * n
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f)
        return entry

    if name == "cifar10":
        train = [dump(f"data_batch_{i}", n_train) for i in range(1, 6)]
        test = [dump("test_batch", n_test)]
    else:
        train, test = [dump("train", n_train)], [dump("test", n_test)]
    return train, test, label_key


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reader_real_format(tmp_path, name, classes):
    train, test, key = write_cifar(tmp_path, name, n_train=6, n_test=4, classes=classes)
    ds = D.load_dataset(name, data_dir=tmp_path)
    n_train = 6 * len(train)
    assert ds.train.images.shape == (n_train, 3, 32, 32) and ds.test.images.shape == (4, 3, 32, 32)
    assert ds.spec.num_classes == classes
    expected_labels = [v for e in train for v in e[key]]
    assert ds.train.labels.tolist() == expected_labels
    # Row-major 3072 bytes = R plane, G plane, B plane of 32x32; normalised with the dataset's stats.
    raw = train[0]["data"][0]
    c, y, x = 1, 5, 7
    pixel = raw[c * 1024 + y * 32 + x] / 255.0
    expected = (pixel - ds.spec.mean[c]) / ds.spec.std[c]
    assert ds.train.images[0, c, y, x].item() == pytest.approx(expected, abs=1e-5)


def test_cifar_missing_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        D.load_dataset("cifar100", data_dir=tmp_path)


def test_cifar_corrupt_file_is_data_error(tmp_path):
    write_cifar(tmp_path, "cifar100", 4, 4, 100)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="unreadable"):
        D.load_dataset("cifar100", data_dir=tmp_path)


# ------------------------------------------------------------------------------ idx (MNIST format)


def write_idx(path, array: np.ndarray):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:3])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    ds = D.load_dataset("fashion_mnist", data_dir=tmp_path)
    assert ds.train.images.shape == (5, 1, 28, 28) and ds.test.labels.tolist() == [0, 1, 2]
    expected = (imgs[2, 3, 4] / 255.0 - 0.2860) / 0.3530
    assert ds.train.images[2, 0, 3, 4].item() == pytest.approx(expected, abs=1e-5)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        D.load_dataset("fashion_mnist")


def test_a_named_data_dir_is_the_only_one_read_and_missing_files_are_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match=r"lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                                        r"t10k-labels-idx1-ubyte \(plain or .gz\)"):
        D.load_dataset("fashion_mnist", data_dir=tmp_path)  # the Debian copy is there, and not used


def test_truncated_idx_is_data_error(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match="truncated"):
        D.read_idx(path)


# ------------------------------------------------------------------------------------ the stream


def toy_split(n=40, c=3, size=8):
    g = torch.Generator().manual_seed(0)
    return D.Split(torch.randn(n, c, size, size, generator=g), torch.arange(n) % 10)


CIFAR = D.DATASETS["cifar10"]


def test_stream_is_a_function_of_seed_and_epoch():
    split = toy_split()
    a = list(D.train_batches(split, CIFAR, 16, seed=3, epoch=1))
    b = list(D.train_batches(split, CIFAR, 16, seed=3, epoch=1))
    c = list(D.train_batches(split, CIFAR, 16, seed=4, epoch=1))
    d = list(D.train_batches(split, CIFAR, 16, seed=3, epoch=2))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][1], d[0][1])
    assert sum(len(y) for _, y in a) == 40 and [len(y) for _, y in a] == [16, 16, 8]


@pytest.mark.parametrize("n, batch, sizes", [
    (17, 8, [8, 8]),        # a final batch of one is dropped: batch norm cannot train on it
    (18, 8, [8, 8, 2]),     # a final batch of two or more is kept
    (16, 8, [8, 8]),
    (1, 8, [1]),            # no full batch before it: the one image is the epoch
    (3, 1, [1, 1, 1]),      # batch 1: every batch is one image, as asked
])
def test_only_a_final_batch_of_one_image_is_dropped(n, batch, sizes):
    split = toy_split(n)
    drawn = list(D.train_batches(split, CIFAR, batch, seed=0, epoch=0))
    assert [len(y) for _, y in drawn] == sizes
    assert D.steps_per_epoch(n, batch) == len(sizes) and D.images_per_epoch(n, batch) == sum(sizes)
    # the batches kept are those the full stream has (the dropped image is the order's last)
    order = torch.randperm(n, generator=D.epoch_generator(0, 0, "cpu"))
    assert torch.equal(torch.cat([y for _, y in drawn]), split.labels[order[: sum(sizes)]])


def test_no_built_in_suite_has_a_final_batch_of_one(needs_fashion_mnist):
    """So dropping it changes no built-in suite's bits: students, teachers and a tuned suite's trials
    (whose training images are what the validation split leaves) all draw every image."""
    from kdbench.config.suite import SUITES_DIR, load_suite
    from kdbench.data.validation import hold_out

    full = {"fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        suite = load_suite(str(path))
        sizes = [(suite.train_size or full[suite.dataset], suite.train.batch_size)]
        if suite.teacher.train is not None:  # a checkpoint teacher (the default suites') trains on nothing
            sizes.append((suite.teacher.train_size or full[suite.dataset], suite.teacher.train.batch_size))
        if suite.tuning is not None:
            data = D.head(D.load_dataset(suite.dataset), suite.train_size, None)
            v = suite.tuning.validation
            sizes.append((len(hold_out(data, v.fraction, v.size, v.seed, "").train), suite.train.batch_size))
        for n, batch in sizes:
            assert D.images_per_epoch(n, batch) == n, (path.name, n, batch)


def test_crop_pads_with_black_and_keeps_shape():
    x = torch.full((64, 3, 8, 8), 5.0)
    out = D.augment(x, CIFAR, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    black = torch.tensor([-m / s for m, s in zip(CIFAR.mean, CIFAR.std)]).view(1, 3, 1, 1)
    is_black = torch.isclose(out, black.expand_as(out))
    assert is_black.any(), "some crops must reach into the padding"
    assert ((out == 5.0) | is_black).all(), "only original pixels or padding"


def test_crop_is_a_shift():
    # Each output image equals the padded input shifted by one (dy, dx) within [0, 2p].
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    spec = D.DatasetSpec("t", 10, 1, 6, (0.0,), (1.0,), 2, False)
    out = D.augment(x, spec, torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.0)
    for i in range(2):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert len(matches) == 1


def test_flip_is_horizontal_only():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(32, 1, 1, 1)
    spec = D.DatasetSpec("t", 10, 1, 4, (0.0,), (1.0,), 0, True)
    out = D.augment(x, spec, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and flipped.any() and kept.any()
