"""The methods are documented in the repository: a section per registered plugin, and no pointer to
a specification that lives outside it."""

from __future__ import annotations

import re
from pathlib import Path

from kdbench.api.registry import get_method, method_names

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


DOCS = ROOT / "docs"
OWN = DOCS / "own-models-and-data.md"


def _section(path: Path, title: str) -> str:
    """The text of ``path``'s section ``## title``, up to the next section of that level."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_taps_table_is_what_the_methods_read():
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| ([^|]+) \| ([^|]+) \|$", _section(OWN, "Taps"), flags=re.M)
    assert sorted(name for name, _, _ in rows) == method_names()
    for name, student, teacher in rows:
        cls = get_method(name)
        for cell, taps in zip((student, teacher), cls.taps_needed(dict(cls.defaults))):
            named = set(re.findall(r"[a-z]+", cell.split(";")[0].split("(")[0])) - {"none"}
            assert named == set(taps), f"{OWN.name} says {name} reads {sorted(named)}, it reads {sorted(taps)}"


def test_the_readme_methods_table_lists_every_builtin_plugin():
    rows = re.findall(r"^\| `([a-z_0-9]+)`(?: \(reconstructed\))? \| ", _section(ROOT / "README.md", "Methods"), flags=re.M)
    builtin = [n for n in method_names() if get_method(n).__module__.startswith("kdbench.methods.")]
    assert sorted(rows) == sorted(builtin)
    for name in rows:
        flagged = f"`{name}` (reconstructed)" in (ROOT / "README.md").read_text()
        assert flagged == bool(get_method(name).reconstructed), name


def test_the_worked_example_runs_as_written(tmp_path):
    """The example of docs/own-models-and-data.md, from an empty folder, with the `kdbench` this
    interpreter runs. It is the page's only bash block, so what a reader copies is what runs."""
    import os
    import subprocess
    import sys

    (script,) = re.findall(r"```bash\n(.*?)```", OWN.read_text(), flags=re.S)
    assert script in _section(OWN, "A worked example")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, line in (("python", f'exec {sys.executable} "$@"'), ("kdbench", f'exec {sys.executable} -m kdbench "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "14 runs in results/my-pair/runs: 14 ok, 0 not ok" in out.stdout
    board = (work / "report" / "my-pair" / "leaderboard.md").read_text()
    assert "torchvision:resnet18 → my_models:tiny_cnn" in board and "came from the checkpoint" in board
