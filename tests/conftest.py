"""Shared fixtures: real Fashion-MNIST when present, and tiny suites written to a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from kdbench.config.suite import SUITES_DIR
from kdbench.data.datasets import FASHION_MNIST_DEBIAN_DIR

torch.set_num_threads(2)


def fashion_mnist_present() -> bool:
    return (FASHION_MNIST_DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(scope="session")
def needs_fashion_mnist():
    """Skip without the real data, except in CI (KDBENCH_REQUIRE_DATA=1), where that is a failure."""
    if not fashion_mnist_present():
        if os.environ.get("KDBENCH_REQUIRE_DATA") == "1":
            pytest.fail(f"Fashion-MNIST missing from {FASHION_MNIST_DEBIAN_DIR} (KDBENCH_REQUIRE_DATA=1)")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite YAML derived from the smoke suite, with overrides; returns its path."""

    def write(name: str = "tiny", **overrides) -> Path:
        raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
        raw["name"] = name
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
