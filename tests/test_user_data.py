"""The user's own data, from small real files: an ImageFolder of PNGs and tensors files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from kdbench.api.errors import DataError
from kdbench.data import user
from kdbench.data.datasets import load_dataset, train_batches
from kdbench.data.user import DataSource
from PIL import Image

from tests.user_files import CLASSES, tensors, write_imagefolder, write_png_header


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


def test_sixteen_bit_grey_pngs_keep_their_levels(tmp_path):
    """A 16-bit ramp of 256 levels stays 256 levels (round(v / 257)), where PIL alone would clip all
    but two; beside colour images, it is the same grey in each channel."""
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    ramp[0, 1] = 257 + 128  # rounds down; one more rounds up
    ramp[0, 2] = 2 * 257 + 129
    want = torch.from_numpy(((ramp.astype(np.int64) + 128) // 257).astype(np.uint8))
    assert want.unique().numel() == 255 and want[0, 1] == 1 and want[0, 2] == 3
    for grey in (True, False):
        root = write_imagefolder(tmp_path / f"grey{grey}", grey=grey, size=16)
        Image.fromarray(ramp).save(root / "train" / "a" / "0.png")
        assert Image.open(root / "train" / "a" / "0.png").mode == "I;16"
        raw = user.read(folder_source(root, size=16), torch.device("cpu"))
        assert raw.train[0].shape[1] == (1 if grey else 3)
        for channel in raw.train[0][0]:
            assert torch.equal(channel, want)


def test_wide_integer_or_float_pixels_outside_0_to_255_are_refused(tmp_path):
    root = write_imagefolder(tmp_path / "shapes", n_train=2, n_test=1, grey=True, size=16)
    Image.fromarray(np.full((16, 16), 200, np.int32)).save(root / "train" / "a" / "0.tiff")
    images = user.read(folder_source(root, size=16), torch.device("cpu")).train[0]
    assert (images == 200).flatten(1).all(dim=1).sum() == 1  # in range: read as it is
    Image.fromarray(np.full((16, 16), 70_000, np.int32)).save(root / "train" / "a" / "0.tiff")
    with pytest.raises(DataError, match=r"0.tiff has 32-bit integer pixels from 70000 to 70000, whose range"):
        load_dataset(folder_source(root, size=16))


@pytest.mark.parametrize("side, message", [
    (9_000, r"bomb.png is 9,000×9,000 pixels; an image may have at most 67,108,864"),  # below PIL's limit
    (10_000, r"bomb.png has over 67,108,864 pixels \(a decompression bomb\?\)"),  # PIL warns
    (15_000, r"bomb.png has over 67,108,864 pixels \(a decompression bomb\?\)"),  # PIL refuses
])
def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path, side, message, recwarn):
    root = write_imagefolder(tmp_path / "shapes", n_train=2, n_test=1)
    write_png_header(root / "train" / "b" / "bomb.png", side, side)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(folder_source(root))
    assert "\n" not in str(err.value) and not recwarn.list  # PIL's warning is not printed either


def test_the_order_of_the_images_is_part_of_the_data(tmp_path):
    """The same pixels in another order are other data: another sha256 and, for one seed, other
    batches (the stream shuffles positions, not images). An .npz saved in an ImageFolder's order
    (class by class, files by name) gives that folder's images and the same batches."""
    root = write_imagefolder(tmp_path / "shapes", size=16)
    folder = load_dataset(folder_source(root, size=16))
    raw = user.read(folder_source(root, size=16), torch.device("cpu"))
    arrays = {"train_images": raw.train[0].numpy(), "train_labels": raw.train[1].numpy(),
              "test_images": raw.test[0].numpy(), "test_labels": raw.test[1].numpy()}
    np.savez(tmp_path / "same.npz", **arrays)
    order = np.random.default_rng(0).permutation(len(arrays["train_labels"]))
    np.savez(tmp_path / "shuffled.npz", **{**arrays, "train_images": arrays["train_images"][order],
                                            "train_labels": arrays["train_labels"][order]})
    same, shuffled = (load_dataset(tensors_source(tmp_path / f"{n}.npz")) for n in ("same", "shuffled"))

    def first_batch(data):
        return next(train_batches(data.train, data.spec, 8, seed=0, epoch=0))

    torch.testing.assert_close(same.train.images, folder.train.images, rtol=0, atol=0)
    assert torch.equal(first_batch(same)[0], first_batch(folder)[0])
    assert shuffled.sha256 != same.sha256
    assert not torch.equal(first_batch(shuffled)[1], first_batch(same)[1])


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
    (lambda a: a.update(train_images=a["train_images"].to(torch.bfloat16)), r"uint8 or float16, 32 or 64, got "
                                                                             r"\(40, 3, 16, 16\) torch.bfloat16"),
    (lambda a: a.update(train_labels=torch.arange(40) * 10**7), "names class 390,000,000, so 390,000,001 classes"),
    (lambda a: a.update(train_labels=a["train_labels"].to("meta")), "train_labels was saved on the meta device"),
    (lambda a: a.update(test_images=a["test_images"].to_sparse()), "test_images is a torch.sparse_coo tensor"),
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
