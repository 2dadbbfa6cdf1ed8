"""The source files a plugin runs: its own module and every module of its package that it imports.

A record's ``config_hash`` covers these files, so editing a shared helper (``_bregman.py``) or a
plugin whose loss another plugin reuses (``vanilla_kd``'s ``kd_loss`` in ``srrl``) invalidates
exactly the records that ran the old code. Imports are read from the source (``ast``), following
them through the package; modules outside the plugin's package (torch, the harness) are not
covered: the protocol version stands for the harness.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path


def read_source(path: Path) -> bytes:
    return Path(path).read_bytes()


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Fully qualified names of everything ``module`` imports (modules, or a module's attributes)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (parent, node.module or "") if p)
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def plugin_modules(module: str) -> dict[str, Path]:
    """``module`` and, transitively, every module of its package it imports: name -> file."""
    package = module.rpartition(".")[0]
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name) if name not in found else None
        if path is None:
            continue
        found[name] = path
        tree = ast.parse(read_source(path), filename=str(path))
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            inside = package and imported.startswith(package + ".")
            if inside and imported not in found and _is_module(imported):
                todo.append(imported)
    return dict(sorted(found.items()))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ``pkg.module.attribute``: its parent is not a package
        return False


def plugin_sources_sha256(cls: type) -> dict[str, str]:
    """sha256 of each source file the plugin ``cls`` runs, by module name."""
    return {
        name: hashlib.sha256(read_source(path)).hexdigest()
        for name, path in plugin_modules(cls.__module__).items()
    }
