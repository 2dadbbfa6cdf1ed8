"""The harness's shape, checked from its source: layers import only the layers before them, and no
kdbench module is imported inside a function (an import there hides a cycle or a layer broken)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmarks" / "kdbench"

#: The layers in order: each may import itself and those before it (docs/architecture.md).
LAYERS = ["api", "data", "config", "models", "train", "run", "execute", "report", "bench"]
#: The modules directly in the package, and the layers each may import.
TOP = {"__init__": {"api"}, "__main__": {"cli"}, "cli": set(LAYERS)}


def harness_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "methods" not in p.relative_to(PACKAGE).parts)


def imported(tree: ast.AST, module: str) -> list[tuple[ast.AST, str]]:
    """(node, module name) for every import of a kdbench module in ``tree``; relative imports are
    resolved against ``module``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            out += [(node, f"{base}.{a.name}") for a in node.names] if base == "kdbench" else [(node, base)]
    return [(n, name) for n, name in out if name == "kdbench" or name.startswith("kdbench.")]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str | None:
    """The layer (or top-level module) that ``kdbench.<...>`` belongs to; None for the package's
    lazily exported API names and the plugins."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "methods":
        return None
    if parts[1] in LAYERS or parts[1] in TOP:
        return parts[1]
    return None  # an API name re-exported by kdbench/__init__ (``from kdbench import Method``)


def allowed(layer: str) -> set[str]:
    if layer in TOP:
        return TOP[layer] | {layer}
    return set(LAYERS[: LAYERS.index(layer) + 1])


@pytest.mark.parametrize("path", harness_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layer_imports_only_the_layers_before_it(path):
    name = module_name(path)
    own = layer_of(name) or path.stem
    tree = ast.parse(path.read_text(), str(path))
    bad = [(n.lineno, target) for n, target in imported(tree, name)
           if (t := layer_of(target)) is not None and t not in allowed(own)]
    assert not bad, f"{path.relative_to(ROOT)} ({own}) imports a later layer: {bad}"


def _function_imports(tree: ast.AST, name: str) -> list[tuple[int, str]]:
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner |= {id(n) for n in ast.walk(fn) if n is not fn}
    return [(n.lineno, target) for n, target in imported(tree, name) if id(n) in inner]


@pytest.mark.parametrize("path", harness_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_kdbench_module_is_imported_inside_a_function(path):
    name = module_name(path)
    found = _function_imports(ast.parse(path.read_text(), str(path)), name)
    assert not found, f"{path.relative_to(ROOT)} imports inside a function: {found}"


def test_the_checks_catch_what_they_look_for():
    """The two rules on made-up sources: a train module importing run, and an import in a body."""
    tree = ast.parse("from kdbench.run import plan\n\ndef f():\n    from kdbench.api import errors\n")
    targets = [t for _, t in imported(tree, "kdbench.train.cell")]
    assert sorted(targets) == ["kdbench.api", "kdbench.run"]
    assert "run" not in allowed("train") and "api" in allowed("train")
    assert _function_imports(tree, "kdbench.train.cell") == [(4, "kdbench.api")]
    rel = ast.parse("from ..run import plan\n")
    assert [t for _, t in imported(rel, "kdbench.train.cell")] == ["kdbench.run"]


def test_every_layer_is_a_package():
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
                  and p.name != "methods") == sorted(LAYERS)
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert loose == sorted(TOP), f"only {sorted(TOP)} sit directly in kdbench/: {loose}"


def test_the_plugin_apis_old_module_paths_are_the_same_modules():
    """Plugins written before the layers (the built-in ones among them: their bytes are hashed into
    every record) import the API from its old paths and get the very same objects."""
    import importlib

    from kdbench.api import moved

    for old, new in moved.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from kdbench.api import method, offline_cache, tapped
    from kdbench.method import Method
    from kdbench.models.tapped import TappedModel
    from kdbench.offline_cache import load_or_compute

    assert (Method, load_or_compute, TappedModel) == (method.Method, offline_cache.load_or_compute, tapped.TappedModel)


@pytest.mark.parametrize("path", harness_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_a_screen(path):
    """50 lines at most: a longer function is several ideas, each of which wants its own name."""
    tree = ast.parse(path.read_text(), str(path))
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 50]
    assert not long, f"{path.relative_to(ROOT)}: {long}"
