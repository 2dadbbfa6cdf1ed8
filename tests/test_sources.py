"""A record's config_hash covers every source file its plugin runs, and only those."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from kdbench.api.registry import get_method, unregister
from kdbench.config import sources
from kdbench.config.hashing import stable_hash
from kdbench.config.suite import load_suite
from kdbench.data.datasets import DATASETS, Dataset, Split
from kdbench.run.plan import cell_config, plan

ROOT = Path(__file__).resolve().parents[1]


def test_builtins_cover_their_helpers_and_the_plugins_they_reuse():
    covered = {name: set(sources.plugin_sources_sha256(get_method(name))) for name in
               ("vanilla_kd", "srrl", "kd_layer", "bregman_pca", "student_ce")}
    m = "kdbench.methods."
    assert covered["vanilla_kd"] == {m + "vanilla_kd"}
    assert covered["student_ce"] == {m + "student_ce"}
    assert covered["srrl"] == {m + "srrl", m + "vanilla_kd"}  # srrl runs vanilla_kd's kd_loss
    assert covered["kd_layer"] == {m + "kd_layer", m + "_letkd_targets"}
    assert covered["bregman_pca"] == {m + "bregman_pca", m + "_bregman"}


def tiny_dataset() -> Dataset:
    split = Split(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    return Dataset(DATASETS["fashion_mnist"], split, split, "test", "0" * 64)


def config_hashes(methods: list[str]) -> dict[str, str]:
    suite = load_suite("smoke")
    data = tiny_dataset()
    return {c.entry.method: stable_hash(cell_config(suite, c, data, None)) for c in plan(suite, methods, [0])}


@pytest.mark.parametrize("helper, user", [("_bregman.py", "bregman_pca"), ("_letkd_targets.py", "kd_layer")])
def test_editing_a_helper_changes_the_hash_of_the_records_that_use_it(monkeypatch, helper, user):
    before = config_hashes([user, "vanilla_kd", "srrl"])
    real = sources.read_source

    def edited(path: Path) -> bytes:
        text = real(path)
        return text + b"\n# an edit\n" if Path(path).name == helper else text

    monkeypatch.setattr(sources, "read_source", edited)
    after = config_hashes([user, "vanilla_kd", "srrl"])
    assert after[user] != before[user]
    assert after["vanilla_kd"] == before["vanilla_kd"] and after["srrl"] == before["srrl"]


def test_a_third_party_package_is_covered_through_relative_and_absolute_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_deep.py").write_text("SCALE = 1.0\n")
    (pkg / "_helper.py").write_text("from ._deep import SCALE\n\ndef weight():\n    return SCALE\n")
    (pkg / "unrelated.py").write_text("X = 1\n")
    (pkg / "plugin.py").write_text(textwrap.dedent("""
        import torch.nn.functional as F
        from kdbench import Method, register
        from probe_pkg._helper import weight

        @register
        class Probe(Method):
            name = "probe_sources"
            def losses(self, s, t, y, progress):
                return {"ce": weight() * F.cross_entropy(s.logits, y)}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from probe_pkg.plugin import Probe

        first = sources.plugin_sources_sha256(Probe)
        assert set(first) == {"probe_pkg.plugin", "probe_pkg._helper", "probe_pkg._deep"}
        (pkg / "unrelated.py").write_text("X = 2\n")
        assert sources.plugin_sources_sha256(Probe) == first
        (pkg / "_deep.py").write_text("SCALE = 2.0\n")
        second = sources.plugin_sources_sha256(Probe)
        assert second["probe_pkg._deep"] != first["probe_pkg._deep"]
        assert second["probe_pkg.plugin"] == first["probe_pkg.plugin"]
    finally:
        unregister("probe_sources")
        for name in [n for n in sys.modules if n.startswith("probe_pkg")]:
            del sys.modules[name]


def test_the_harness_never_imports_a_plugin():
    """Only the registry's discovery may load ``kdbench.methods`` (by name, at run time): the harness
    trains teachers and measures costs with code of its own and the public plugin API."""
    statements, by_name = [], []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value == "kdbench.methods" or node.value.startswith("kdbench.methods."):
                    by_name.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if any(n == "kdbench.methods" or n.startswith("kdbench.methods.") for n in names):
                statements.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert statements == []
    assert by_name and all(s.startswith("benchmarks/kdbench/api/registry.py:") for s in by_name), by_name
