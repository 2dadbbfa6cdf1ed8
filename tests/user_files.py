"""Small real files of the kinds users bring: an ImageFolder of PNGs, a tensors file, a module with
a model constructor, a teacher checkpoint, and a suite that names them."""

from __future__ import annotations

import hashlib
import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
import torch
import yaml

CLASSES = ("a", "b", "c", "d", "e")

#: A student constructor as a user writes one: a plain nn.Sequential, stages at 8, 4, 2 and 1
#: pixels for 32×32 inputs (as torchvision's ResNet-18 has them), the pre-pool map at index 4.
STUDENT_MODULE = textwrap.dedent('''
    from torch import nn


    def unit(c_in, c_out, stride):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


    def tiny_cnn(num_classes, in_channels):
        return nn.Sequential(
            unit(in_channels, 16, 2),
            nn.Sequential(unit(16, 16, 2), unit(16, 16, 1)),
            nn.Sequential(unit(16, 32, 2), unit(32, 32, 1)),
            nn.Sequential(unit(32, 48, 2), unit(48, 48, 1)),
            nn.Sequential(unit(48, 64, 2), unit(64, 64, 1)),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
        )
''')
STUDENT_TAPS = {"stages": ["1", "2", "3", "4"], "prepool": "4", "classifier": "7"}


#: Constructors a hostile or careless user writes: logits of the wrong width (the constructor ignores
#: ``num_classes``), no parameters at all, or parameters all frozen.
ODD_MODULE = textwrap.dedent('''
    from torch import nn


    def _trunk(in_channels):
        return [nn.Conv2d(in_channels, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten()]


    def wide(num_classes, in_channels):
        return nn.Sequential(*_trunk(in_channels), nn.Linear(8, 1000))


    def narrow(num_classes, in_channels):
        return nn.Sequential(*_trunk(in_channels), nn.Linear(8, 2))


    class Slice(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x.flatten(1)[:, : self.k]


    def no_parameters(num_classes, in_channels):
        return Slice(num_classes)


    def frozen(num_classes, in_channels):
        net = nn.Sequential(*_trunk(in_channels), nn.Linear(8, num_classes))
        net.requires_grad_(False)
        return net
''')


def write_odd_module(folder: Path, name: str = "odd_models", exit_on_import: bool = False) -> str:
    """:data:`ODD_MODULE` as ``name``.py (one name per content: a module stays imported between cases);
    with ``exit_on_import`` the module calls ``sys.exit(0)`` when imported. Returns the module's name."""
    tail = "\nimport sys\n\nsys.exit(0)\n" if exit_on_import else ""
    (folder / f"{name}.py").write_text(ODD_MODULE + tail)
    return name


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A black 1-bit grey PNG of ``width``×``height``: a few kilobytes on disk, ``width``×``height``
    bytes once PIL decodes it (a decompression bomb when that is large)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(bytes(((width + 7) // 8 + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def class_image(label: int, rng: np.random.Generator, size: int = 20, grey: bool = False) -> np.ndarray:
    """A noisy image whose class shows in where its bright pixels are."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    band = slice(label * size // len(CLASSES), (label + 1) * size // len(CLASSES))
    img[band, :, label % 3] = 250
    return img.mean(axis=2).astype(np.uint8) if grey else img


def write_imagefolder(root: Path, n_train: int = 8, n_test: int = 4, test_name: str = "test",
                      classes=CLASSES, grey: bool = False, size: int = 20) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), (test_name, n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(label, rng, size, grey)).save(folder / f"{i}.png")
    return root


def tensors(n_train: int = 40, n_test: int = 20, size: int = 16, channels: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "train_images": torch.randint(0, 256, (n_train, channels, size, size), generator=g, dtype=torch.uint8),
        "train_labels": torch.arange(n_train) % len(CLASSES),
        "test_images": torch.randint(0, 256, (n_test, channels, size, size), generator=g, dtype=torch.uint8),
        "test_labels": torch.arange(n_test) % len(CLASSES),
    }


def write_student_module(folder: Path, name: str = "my_models") -> str:
    (folder / f"{name}.py").write_text(STUDENT_MODULE)
    return f"{name}:tiny_cnn"


def write_resnet18_checkpoint(path: Path, num_classes: int = len(CLASSES), in_channels: int = 3) -> str:
    """A torchvision ResNet-18's state dict, as a user's training script saves it; returns its sha256."""
    from kdbench.models import build_model

    torch.manual_seed(0)
    net = build_model("torchvision:resnet18", num_classes, in_channels, 32).weights_module()
    torch.save(net.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pair_suite(folder: Path, name: str = "my-pair", **top) -> dict:
    """A suite on the files above: ImageFolder data, checkpoint teacher, the module's student."""
    suite = {
        "name": name,
        "dataset": {"format": "imagefolder", "root": "shapes", "image_size": 32},
        "teacher": {"model": "torchvision:resnet18", "checkpoint": "teacher.pt",
                    "sha256": write_resnet18_checkpoint(folder / "teacher.pt")},
        "student": {"model": write_student_module(folder), "taps": STUDENT_TAPS},
        "train": {"epochs": 1, "batch_size": 16},
        "methods": "all",
        "seeds": [0],
    }
    suite.update(top)
    write_imagefolder(folder / "shapes", n_train=16)  # 80 training maps: enough for kd_layer's 64 centres
    return suite


def write_suite(folder: Path, suite: dict) -> Path:
    path = folder / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path
