"""What a user installs: one import name, ``kdbench``, and plugins of other packages found by entry point.

Builds the real wheel with pip (as a user's ``pip install`` would) and a separate plugin package that
imports only ``from kdbench import ...``, installs both into a folder and runs them from outside the
repository, so nothing here can lean on the source checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY_PLUGIN = '''
import torch.nn.functional as F

from kdbench import POSITIVE, Method, register


@register
class ToyKD(Method):
    name = "toy_kd"
    paper = "a plugin shipped by another package"
    defaults = {"w": 1.0}
    domains = {"w": POSITIVE}

    def losses(self, s, t, y, progress):
        return {"ce": self.hp["w"] * F.cross_entropy(s.logits, y)}
'''

TOY_PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "kdbench-toy-plugin"
version = "0.1"

[project.entry-points."kdbench.methods"]
toy_kd = "toy_kd_plugin"

[tool.setuptools]
py-modules = ["toy_kd_plugin"]
'''


def pip(*args: str) -> str:
    """pip's output (stdout and stderr: a build backend warns on stderr)."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], check=True, timeout=600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the kdbench wheel, a folder where it and the toy plugin package are installed)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "kdbench-src"  # a copy, so the build leaves nothing in the working tree
    for name in ("benchmarks", "methods"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    plugin = tmp / "toy-plugin"
    plugin.mkdir()
    (plugin / "pyproject.toml").write_text(textwrap.dedent(TOY_PYPROJECT))
    (plugin / "toy_kd_plugin.py").write_text(textwrap.dedent(TOY_PLUGIN))
    build_log = pip("wheel", str(src), "--no-deps", "-w", str(tmp / "dist"))
    assert "absent from the `packages` configuration" not in build_log, build_log  # every data folder declared
    wheel = next((tmp / "dist").glob("kdbench-*.whl"))
    site = tmp / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel), str(plugin))
    return wheel, site


def run_installed(site: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=site.parent, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_wheel_installs_one_package_named_kdbench(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kdbench"}
    assert not any(n.startswith(("benchmarks/", "methods/")) for n in names)
    for member in ("kdbench/__init__.py", "kdbench/methods/vanilla_kd.py", "kdbench/methods/_bregman.py",
                   "kdbench/config/suites/default.yaml", "kdbench/config/suites/fmnist_teacher.pt",
                   "kdbench/report/published_cifar100.csv"):
        assert member in names


def test_an_installed_plugin_package_is_discovered_through_the_entry_point(installed):
    _, site = installed
    out = run_installed(site, textwrap.dedent("""
        import importlib.util
        import kdbench
        from kdbench.api.registry import get_method, method_names
        print(kdbench.__file__)
        print(importlib.util.find_spec("benchmarks"), importlib.util.find_spec("methods"))
        print(" ".join(method_names()))
        print(get_method("toy_kd").__module__)
    """))
    file, specs, names, module = out.splitlines()
    assert Path(file).is_relative_to(site)  # the installed copy, not the checkout
    assert specs == "None None"
    assert {"toy_kd", "student_ce", "vanilla_kd", "srrl", "kernel_nystrom", "kr_sparse", "kd_layer",
            "bregman_pca"} <= set(names.split())
    assert module == "toy_kd_plugin"


def test_the_installed_cli_lists_the_plugin_with_its_domain(installed):
    _, site = installed
    out = run_installed(site, "import sys; from kdbench.cli import main; sys.exit(main(['methods']))")
    assert "toy_kd\n  paper: a plugin shipped by another package\n  defaults: w=1.0 (> 0)" in out
