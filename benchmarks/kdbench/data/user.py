"""The user's own data: an ImageFolder tree of image files, or one file of tensors.

Both become the same :class:`~kdbench.data.datasets.Dataset` as the built-in datasets: held whole on the
device, normalised once, drawn by the (seed, epoch) stream. Two facts differ from the built-ins:
- the normalisation statistics are computed from the training split (never the test split) and
  recorded with the data, whose sha256 covers the decoded pixels, the labels and the class names;
- a dataset too large for the device is refused before it is decoded or copied, in one line.

ImageFolder: ``ROOT/train/<class>/*.png`` and ``ROOT/test/<class>/...`` (or ``val/``), the same class
folders in both, every image resized once at load to S×S (bilinear), grey when every image is grey;
16-bit images scaled to 8 bits over their full range; no file over :data:`MAX_IMAGE_PIXELS` (a
decompression bomb is refused from its header, before it is decoded).
Tensors: a ``.pt`` (read with ``weights_only``) or ``.npz`` (no pickles) holding ``train_images``,
``train_labels``, ``test_images`` and ``test_labels``; images N×C×S×S (or N×S×S), uint8 (0-255) or
float16/32/64; labels integers from 0, naming at most :data:`MAX_CLASSES` classes; tensors with
values on the CPU (not the ``meta`` device).

The order of the images is part of the data: it is hashed, it decides which images ``train_size``
keeps, and the (seed, epoch) stream shuffles positions, not images. An ImageFolder's order is class
by class (classes sorted by folder name), files sorted by path in each; a tensors file's is its own.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from kdbench.api.errors import DataError, first_line

FORMATS = ("imagefolder", "tensors")
TENSOR_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
#: Share of the device's free memory a dataset may take as float32 (the rest is for training).
MAX_SHARE = 0.8
#: Pixels one image file may have (8192×8192). Decoding is refused above it: a decompression bomb (a
#: huge image compressed into a few kilobytes) would otherwise take gigabytes for one file.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Classes a tensors file's labels may name: far beyond any real dataset, far below a label of 10⁹,
#: which would build a classifier (and a list of class names) that long.
MAX_CLASSES = 100_000
#: Image dtypes a tensors file may hold: those NumPy has (hashing goes through it), as the docs say.
IMAGE_DTYPES = (torch.uint8, torch.float16, torch.float32, torch.float64)


@dataclass(frozen=True)
class DataSource:
    """A suite's ``dataset:`` mapping, validated; ``path`` is absolute."""

    format: str
    path: str
    name: str
    image_size: int | None = None  # imagefolder only: images are resized to S×S
    hflip: bool = False
    crop_padding: int = 0

    def __str__(self) -> str:
        return self.name


@dataclass
class Raw:
    """Undecorated arrays: images N×C×S×S (uint8 or float), labels N, and what names the classes."""

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    classes: list[str]


def read(source: DataSource, device: torch.device) -> Raw:
    return _imagefolder(source, device) if source.format == "imagefolder" else _tensors(source, device)


def digest(raw: Raw) -> str:
    h = hashlib.sha256("\n".join(raw.classes).encode())
    for t in (*raw.train, *raw.test):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def train_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the training images (in [0, 1] for uint8), in
    float64, a chunk at a time so no second full copy is made."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for chunk in images.split(4096):
        x = as_float(chunk).double()
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(n_values: int, device: torch.device, what: str) -> None:
    """Refuse ``n_values`` float32 values (plus a uint8 copy while decoding) beyond the device's share."""
    need, free = 5 * n_values, free_bytes(device)
    if need > MAX_SHARE * free:
        raise DataError(f"{what} needs {need / 2**30:.1f} GiB on {device} as float32, and "
                        f"{free / 2**30:.1f} GiB is free; lower image_size or use fewer images")


# ------------------------------------------------------------------------------------ ImageFolder


def _imagefolder(source: DataSource, device: torch.device) -> Raw:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = Path(source.path)
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a folder")
    train_dir = root / "train"
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(f"dataset root {root} needs a train/ folder and a test/ or val/ folder of class folders")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_dir} has no class folders")
    if classes != test_classes:
        only = sorted(set(classes) ^ set(test_classes))
        raise DataError(f"{train_dir} and {test_dir} have different class folders (only in one: {', '.join(only)})")
    if len(classes) < 2:
        raise DataError(f"{train_dir} has one class folder; a classifier needs two or more")
    files = {split: _image_files(folder, classes, IMG_EXTENSIONS) for split, folder in
             (("train", train_dir), ("test", test_dir))}
    s = source.image_size
    n = sum(len(f) for f in files.values())
    check_fits(n * 3 * s * s, device, f"{root} ({n:,} images at {s}×{s})")
    modes = [_mode(p) for f in files.values() for p, _ in f]  # every header: each file's size checked
    grey = all(m in ("1", "L", "I") or m.startswith("I;16") for m in modes)
    decoded = {split: _decode(f, s, grey, root) for split, f in files.items()}
    return Raw(decoded["train"], decoded["test"], classes)


def _image_files(folder: Path, classes: list[str], extensions) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        images = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        if not images:
            raise DataError(f"{folder / name} has no images ({', '.join(sorted(extensions))})")
        out += [(p, label) for p in images]
    return out


def _mode(path: Path) -> str:
    """The image's mode, from its header; one over :data:`MAX_IMAGE_PIXELS` is refused (PIL's own
    decompression-bomb warning and error included, which fire on larger ones while the header is read)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                mode, (w, h) = im.mode, im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path} has over {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?); an image "
                        f"may have at most {MAX_IMAGE_PIXELS:,}") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__})") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise DataError(f"{path} is {w:,}×{h:,} pixels; an image may have at most {MAX_IMAGE_PIXELS:,}")
    return mode


def _decode(files: list[tuple[Path, int]], size: int, grey: bool, root: Path):
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    c = 1 if grey else 3
    images = torch.empty((len(files), c, size, size), dtype=torch.uint8)
    bar = tqdm(files, desc=f"decoding {root.name}", unit="img", disable=None, leave=False,
               mininterval=1.0) if len(files) >= 2000 else files
    for i, (path, _) in enumerate(bar):
        try:
            with Image.open(path) as im:
                im = _eight_bit(im, path).convert("L" if grey else "RGB").resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except OSError as exc:  # PIL's UnidentifiedImageError included
            raise DataError(f"{path} is not a readable image ({type(exc).__name__})") from None
        images[i] = torch.from_numpy(arr.reshape(size, size, c).copy()).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return images, labels


def _eight_bit(im, path: Path):
    """``im`` with pixels PIL's 8-bit conversion keeps: a 16-bit image scaled over the full range
    (round(v / 257), so 65535 is 255 and a ramp keeps its levels; PIL would clip everything above
    255); a 32-bit integer or float image only when its values lie in 0-255, as its range is unknown.
    Every other image is returned as it is."""
    import numpy as np
    from PIL import Image

    if im.mode.startswith("I;16"):
        wide = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    if im.mode in ("I", "F"):
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(f"{path} has {'32-bit integer' if im.mode == 'I' else 'floating-point'} pixels "
                            f"from {values.min():g} to {values.max():g}, whose range is unknown; save it with "
                            "8 or 16 bits per channel")
    return im


# ---------------------------------------------------------------------------------------- tensors


def _tensors(source: DataSource, device: torch.device) -> Raw:
    path = Path(source.path)
    if not path.is_file():
        raise DataError(f"tensors file {path} does not exist")
    arrays = _read_arrays(path, device)
    missing = [k for k in TENSOR_KEYS if k not in arrays]
    extra = sorted(set(arrays) - set(TENSOR_KEYS))
    if missing or extra:
        raise DataError(f"{path} must hold exactly {', '.join(TENSOR_KEYS)}"
                        f"{'; missing ' + ', '.join(missing) if missing else ''}"
                        f"{'; unexpected ' + ', '.join(extra) if extra else ''}")
    train = _split_arrays(arrays, "train", path)
    test = _split_arrays(arrays, "test", path)
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{path}: train images are {tuple(train[0].shape[1:])} but test images "
                        f"{tuple(test[0].shape[1:])}")
    classes = int(train[1].max()) + 1
    if classes > MAX_CLASSES:
        raise DataError(f"{path}: train_labels names class {classes - 1:,}, so {classes:,} classes; at most "
                        f"{MAX_CLASSES:,} are supported (labels 0 to {MAX_CLASSES - 1:,})")
    if classes < 2:
        raise DataError(f"{path}: train_labels name one class; a classifier needs two or more")
    if int(test[1].max()) >= classes:
        raise DataError(f"{path}: test_labels has class {int(test[1].max())}, which train_labels never has")
    return Raw(train, test, [str(k) for k in range(classes)])


def _read_arrays(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The file's arrays, refused before they are read into memory if the images would not fit:
    a ``.pt`` is memory-mapped, an ``.npz``'s shapes come from its members' headers."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                _check_images_fit({k: _npz_shape(z, k) for k in z.files}, device, path)
                return {k: torch.from_numpy(z[k]) for k in z.files}
        if path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
                raise DataError(f"{path} must hold a dict of tensors, got a {type(loaded).__name__}")
            _check_values_held(loaded, path)
            _check_images_fit({k: tuple(v.shape) for k, v in loaded.items()}, device, path)
            return loaded
    except DataError:
        raise
    except Exception as exc:  # truncated, not a zip, a pickle asking for code
        raise DataError(f"{path} cannot be read ({first_line(exc)})") from None
    raise DataError(f"tensors file {path} must end in .pt or .npz")


def _check_values_held(arrays: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors without values in memory: saved from the ``meta`` device (shapes only), or sparse."""
    for key, v in sorted(arrays.items()):
        if v.device.type != "cpu":
            raise DataError(f"{path}: {key} was saved on the {v.device.type} device, which holds no values; "
                            "save the tensors from the CPU")
        if v.layout != torch.strided:
            raise DataError(f"{path}: {key} is a {v.layout} tensor; save dense tensors (.to_dense())")


def _npz_shape(z, key: str) -> tuple[int, ...]:
    import numpy as np

    with z.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read(f)[0])


def _check_images_fit(shapes: dict[str, tuple[int, ...]], device: torch.device, path: Path) -> None:
    n = sum(math.prod(shapes[k]) for k in ("train_images", "test_images") if k in shapes)
    check_fits(n, device, str(path))


def _split_arrays(arrays: dict[str, torch.Tensor], split: str, path: Path):
    x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[2] != x.shape[3] or x.dtype not in IMAGE_DTYPES:
        raise DataError(f"{path}: {split}_images must be N×C×S×S (or N×S×S) uint8 or float16, 32 or 64, got "
                        f"{tuple(x.shape)} {x.dtype}")
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{path}: {split}_labels must be {len(x)} integers, got {tuple(y.shape)} {y.dtype}")
    if not len(x):
        raise DataError(f"{path}: {split}_images is empty")
    if int(y.min()) < 0:
        raise DataError(f"{path}: {split}_labels has a negative class")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"{path}: {split}_images holds non-finite values")
    return x, y.to(torch.int64)
