"""The user's own data, from small real files: an ImageFolder of PNGs and tensors files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from kdbench.api.errors import DataError
from kdbench.data.datasets import load_dataset
from kdbench.data.user import DataSource
from PIL import Image

from tests.user_files import CLASSES, tensors, write_imagefolder


def folder_source(root, size: int = 32, **kw) -> DataSource:
    return DataSource("imagefolder", str(root), "shapes", image_size=size, **kw)


def tensors_source(path) -> DataSource:
    return DataSource("tensors", str(path), "mine")


def test_imagefolder_is_decoded_resized_and_normalised_by_its_training_split(tmp_path):
    root = write_imagefolder(tmp_path / "shapes")
    data = load_dataset(folder_source(root))
    assert data.classes == CLASSES and data.spec.num_classes == 5 and data.spec.in_channels == 3
    assert data.train.images.shape == (40, 3, 32, 32) and data.test.images.shape == (20, 3, 32, 32)
    assert data.train.labels.tolist() == [k for k in range(5) for _ in range(8)]
    # the statistics, computed here from the training PNGs alone
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float64)
                       for c in CLASSES for p in sorted((root / "train" / c).glob("*.png"))]) / 255
    np.testing.assert_allclose(data.spec.mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(data.spec.std, pixels.std(axis=(0, 1, 2)), rtol=1e-5)
    torch.testing.assert_close(data.train.images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_the_test_split_never_moves_the_statistics_but_any_pixel_moves_the_sha(tmp_path):
    root = write_imagefolder(tmp_path / "shapes")
    before = load_dataset(folder_source(root))
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "test" / "a" / "0.png")
    after = load_dataset(folder_source(root))
    assert after.spec.mean == before.spec.mean and after.spec.std == before.spec.std
    assert after.sha256 != before.sha256
    assert load_dataset(folder_source(root)).sha256 == after.sha256


def test_grey_images_give_one_channel_and_val_stands_for_test(tmp_path):
    root = write_imagefolder(tmp_path / "grey", test_name="val", grey=True)
    data = load_dataset(folder_source(root, size=24))
    assert data.spec.in_channels == 1 and data.test.images.shape == (20, 1, 24, 24)


def test_pt_and_npz_files_of_the_same_arrays_are_the_same_data(tmp_path):
    arrays = tensors()
    torch.save(arrays, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", **{k: v.numpy() for k, v in arrays.items()})
    pt, npz = load_dataset(tensors_source(tmp_path / "d.pt")), load_dataset(tensors_source(tmp_path / "d.npz"))
    assert pt.sha256 == npz.sha256 and pt.spec == npz.spec
    assert pt.spec.num_classes == 5 and pt.spec.image_size == 16
    torch.testing.assert_close(pt.train.images, npz.train.images)


def test_unbatched_channels_and_float_images(tmp_path):
    arrays = tensors(channels=1)
    arrays["train_images"] = arrays["train_images"][:, 0].float() / 255
    arrays["test_images"] = arrays["test_images"][:, 0].float() / 255
    torch.save(arrays, tmp_path / "f.pt")
    data = load_dataset(tensors_source(tmp_path / "f.pt"))
    assert data.train.images.shape == (40, 1, 16, 16)
    # the sha256 covers the class names and the arrays as the file holds them, not as normalised
    want = hashlib.sha256("\n".join(map(str, range(5))).encode())
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        want.update(arrays[key].numpy().tobytes())
    assert data.sha256 == want.hexdigest()


def _without_images(root):
    for p in (root / "train" / "c").glob("*.png"):
        p.unlink()


def _extra_class(root):
    (root / "test" / "f").mkdir()


@pytest.mark.parametrize("damage, message", [
    (_without_images, r"train/c has no images"),
    (_extra_class, r"have different class folders \(only in one: f\)"),
    (lambda root: (root / "test" / "a" / "0.png").write_bytes(b"not a png"), r"test/a/0.png is not a readable image"),
    (lambda root: [p.rename(p.with_name("val")) for p in [root / "test"]], None),  # val/ is as good
])
def test_broken_imagefolders_are_one_line(tmp_path, damage, message):
    root = write_imagefolder(tmp_path / "shapes", n_train=2, n_test=1)
    damage(root)
    if message is None:
        assert load_dataset(folder_source(root)).test.images.shape[0] == 5
        return
    with pytest.raises(DataError, match=message) as err:
        load_dataset(folder_source(root))
    assert "\n" not in str(err.value)


def test_an_empty_root_and_a_missing_test_split(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(folder_source(tmp_path / "nowhere"))
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="needs a train/ folder and a test/ or val/ folder"):
        load_dataset(folder_source(tmp_path / "half"))


def test_data_too_large_for_the_device_is_refused_before_decoding(tmp_path):
    root = write_imagefolder(tmp_path / "shapes", n_train=2, n_test=1)
    with pytest.raises(DataError, match=r"15 images at 40000×40000\) needs 335.3 GiB on cpu as float32"):
        load_dataset(folder_source(root, size=40_000))


def test_a_tensors_file_too_large_is_refused_from_its_headers(tmp_path):
    """An .npz whose members say they hold 1.6 TB of uint8 images (they hold none): refused before
    any is read."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 3, 512, 512)})
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        for key in ("train_images", "train_labels", "test_images", "test_labels"):
            z.writestr(f"{key}.npy", header.getvalue())
    with pytest.raises(DataError, match=r"big.npz needs 7324.2 GiB on cpu as float32"):
        load_dataset(tensors_source(tmp_path / "big.npz"))


def _drop(key):
    def change(a):
        a.pop(key)
    return change


@pytest.mark.parametrize("change, message", [
    (_drop("test_labels"), "must hold exactly train_images, train_labels, test_images, test_labels; missing test_labels"),
    (lambda a: a.update(extra=torch.zeros(1)), "; unexpected extra"),
    (lambda a: a.update(train_images=torch.zeros(40, 3, 16, 8, dtype=torch.uint8)), r"train_images must be N×C×S×S"),
    (lambda a: a.update(train_labels=torch.zeros(39, dtype=torch.int64)), "train_labels must be 40 integers"),
    (lambda a: a.update(train_labels=torch.zeros(40)), "train_labels must be 40 integers"),
    (lambda a: a.update(test_labels=torch.full((20,), 7)), "test_labels has class 7, which train_labels never has"),
    (lambda a: a.update(test_images=torch.zeros(20, 3, 8, 8, dtype=torch.uint8)), r"train images are \(3, 16, 16\) but test"),
    (lambda a: a.update(train_images=torch.full((40, 3, 16, 16), float("nan"))), "non-finite"),
])
def test_bad_tensors_files_are_one_line(tmp_path, change, message):
    arrays = tensors()
    change(arrays)
    torch.save(arrays, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=message) as err:
        load_dataset(tensors_source(tmp_path / "bad.pt"))
    assert "\n" not in str(err.value)


def test_tensors_files_that_are_not_tensors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    (tmp_path / "d.npy").write_bytes(b"")
    for name, message in (("junk.pt", "cannot be read"), ("d.npy", "must end in .pt or .npz"),
                          ("gone.pt", "does not exist")):
        with pytest.raises(DataError, match=message):
            load_dataset(tensors_source(tmp_path / name))
