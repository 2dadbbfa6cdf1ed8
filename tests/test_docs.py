"""The methods are documented in the repository: a section per registered plugin, and no pointer to
a specification that lives outside it."""

from __future__ import annotations

import re
from pathlib import Path

from kdbench.registry import get_method, method_names

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_SPEC = "METHODS" + ".md"  # spelled apart so this file does not match itself


def test_every_builtin_plugin_has_a_section_and_its_docstring_points_there():
    doc = (ROOT / "docs" / "methods.md").read_text()
    sections = set(re.findall(r"^## `([a-z_0-9]+)`", doc, flags=re.M))
    for name in method_names():
        cls = get_method(name)
        if not cls.__module__.startswith("kdbench.methods."):
            continue  # a third-party plugin documents itself
        assert name in sections, f"docs/methods.md has no section for {name}"
        module_doc = __import__(cls.__module__, fromlist=["_"]).__doc__
        assert "docs/methods.md" in module_doc, f"{name}'s docstring does not point to docs/methods.md"


def test_nothing_outside_docs_cites_the_external_specification():
    tracked = [p for top in ("benchmarks", "methods", "tests", "report/reference", ".ci") for p in
               (ROOT / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    tracked += [ROOT / n for n in ("README.md", "pyproject.toml", "run_all.sh")]
    offenders = [str(p.relative_to(ROOT)) for p in tracked
                 if OUTSIDE_SPEC.encode() in p.read_bytes()]
    assert offenders == []
