"""Optional extras the set-up installs: a missing one is a skip on a bare machine and a failure in
CI (KDBENCH_REQUIRE_DATA=1), where the set-up must have installed it."""

from __future__ import annotations

import importlib.util
import os

import pytest


def require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("KDBENCH_REQUIRE_DATA") == "1":
            pytest.fail(f"{module} is not installed (the set-up installs kdbench[{extra}])")
        pytest.skip(f"{module} not installed: pip install 'kdbench[{extra}]'")
