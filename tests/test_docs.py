"""The documentation is true to the repository: a section per registered plugin, no pointer to a
specification that lives outside it, links that resolve, and figures quoted from the reference
report that are the committed ones."""

from __future__ import annotations

import csv
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


# ------------------------------------------------------------------------------ documentation links
#
# The convention for pointing at the documentation from code (comments, docstrings, messages):
#     docs/<page>.md                  the page
#     docs/<page>.md, "Heading"       a section of it: the heading's text, at any level, as written
#                                     (backticks dropped)
# Markdown pages link each other as [text](FILE.md) or [text](FILE.md#anchor), anchors as GitHub
# makes them. Code no longer points at README sections: the README is a front page.

CODE_LINK = re.compile(r'docs/([A-Za-z0-9_.-]+?\.md)(?:, "([^"\n]+)")?')
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
OLD_README_POINTER = re.compile(r"""README(?:'s)?,? ["']""")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a comment in a code block is no heading
    return [h.replace("`", "").strip() for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def code_link_problems(text: str, docs: Path = DOCS) -> list[str]:
    """The links in ``text`` (code) to a page of ``docs`` that is missing or to a heading it lacks."""
    problems = []
    for page, section in CODE_LINK.findall(text):
        path = docs / page
        if not path.is_file():
            problems.append(f"docs/{page}: no such page")
        elif section and section not in headings(path):
            problems.append(f'docs/{page}, "{section}": no such heading')
    problems += [f"points at a README section: ...{m.group(0)}..." for m in OLD_README_POINTER.finditer(text)]
    return problems


def markdown_link_problems(path: Path) -> list[str]:
    """Relative links of a markdown page that lead nowhere: a missing file, or a missing anchor."""
    problems = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in MD_LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, frag = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"{path.name}: ({target}) leads nowhere")
        elif frag and frag not in {anchor(h) for h in headings(dest)}:
            problems.append(f"{path.name}: ({target}) has no such anchor")
    return problems


def _code_files(tops=("benchmarks", "tests")) -> list[Path]:
    files = [p for top in tops for p in (ROOT / top).rglob("*")
             if p.is_file() and p.suffix in {".py", ".yaml", ".csv", ".sh", ".toml"}
             and "__pycache__" not in p.parts and not p.is_symlink()
             and not any(q.is_symlink() for q in p.parents)]
    return files + ([ROOT / "pyproject.toml", ROOT / "run_all.sh"] if "benchmarks" in tops else [])


def test_every_documentation_link_in_code_resolves():
    found = {str(p.relative_to(ROOT)): code_link_problems(p.read_text()) for p in _code_files()}
    assert {k: v for k, v in found.items() if v} == {}
    linked = sum(len(CODE_LINK.findall(p.read_text())) for p in _code_files())
    assert linked >= 10, "the scan found almost no links: is it looking in the right place?"


def test_the_builtin_plugins_link_pages_that_exist():
    """The plugins' pointers, page by page only: their bytes are in every record's config hash, so
    their wording is kept as it is (bregman_pca's "Choice of k" names a paragraph, not a heading)."""
    for p in _code_files(("methods",)):
        for page, _ in CODE_LINK.findall(p.read_text()):
            assert (DOCS / page).is_file(), f"{p.name} links docs/{page}, which does not exist"


def test_every_link_between_the_pages_resolves():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    assert [p for page in pages for p in markdown_link_problems(page)] == []


def test_the_readme_is_a_front_page_linking_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 220, "README.md is a front page: at most 220 lines, the rest in docs/"
    linked = set(re.findall(r"\]\(docs/([^)#\s]+)", readme))
    assert sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked) == []


def test_the_link_checks_catch_what_they_look_for(tmp_path):
    """The checks on made-up pages and text, so they can fail (the names are spelled apart, so this
    file's own scan does not trip on them)."""
    (tmp_path / "a.md").write_text("# A page\n\n## Some `code` here\n\n[b](b.md) [gone](c.md) [x](#some-code-here) "
                                   "[y](#nope) [z](b.md#elsewhere)\n\n```\n# not a heading\n```\n")
    (tmp_path / "b.md").write_text("# B\n\n## Elsewhere, too\n")
    assert headings(tmp_path / "a.md") == ["A page", "Some code here"]
    assert anchor("Elsewhere, too") == "elsewhere-too"
    assert markdown_link_problems(tmp_path / "a.md") == [
        "a.md: (c.md) leads nowhere", "a.md: (#nope) has no such anchor", "a.md: (b.md#elsewhere) has no such anchor"]
    d, readme = "docs" + "/", "READ" + "ME"
    text = f'see {d}a.md, "Some code here"; {d}b.md; {d}c.md; {d}a.md, "No such"; {readme}, "Speed"'
    assert code_link_problems(text, tmp_path) == [
        f"{d}c.md: no such page", f'{d}a.md, "No such": no such heading',
        f'points at a {readme} section: ...{readme}, "...']


# ------------------------------------------------------------------------------ reference figures
#
# A figure a page quotes from the committed reference is a link to the cell it comes from: the CSV
# (under report/reference/) and, as the link's title, the row (its value in the CSV's `label` column,
# or its first column where there is none; `*` for every row, which must then agree) and the column:
#     [82.55](../report/reference/default/summary.csv "vanilla_kd final_acc_mean")
# The page writes the number as it likes (decimals, sign, thousands commas, − for minus); the check
# rounds the cell the same way. A figure that is not from the reference names its command, date and
# machine instead (docs/speed.md).

REFERENCE = ROOT / "report" / "reference"
REFERENCE_FIGURE = re.compile(r'\[([^\[\]]+)\]\(([^)\s]*report/reference/[^)\s]+\.csv) "(\S+) ([^"]+)"\)')


def as_shown(cell: str, shown: str) -> str:
    """``cell`` written the way ``shown`` writes a number (its decimals, sign and grouping, with −
    for minus); a cell quoted as text is compared as it is."""
    number = shown.replace("−", "-")
    if not re.fullmatch(r"[+-]?\d[\d,]*(\.\d+)?", number) or not re.fullmatch(r"[+-]?[\d.]+(e[+-]?\d+)?", cell):
        return cell
    spec = ("+" if number.startswith("+") else "") + ("," if "," in number else "")
    written = format(float(cell), f"{spec}.{len(number.partition('.')[2])}f")
    return written.replace("-", "−") if "−" in shown else written


def reference_figure_problems(path: Path) -> list[str]:
    """The figures of page ``path`` linked to a reference cell that does not say the same."""
    problems = []
    for shown, target, row, column in REFERENCE_FIGURE.findall(path.read_text()):
        table = (path.parent / target).resolve()
        if REFERENCE not in table.parents or not table.is_file():
            problems.append(f"{path.name}: {shown} links {target}, not a committed reference CSV")
            continue
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        key = "label" if "label" in rows[0] else next(iter(rows[0]))
        said = {as_shown(r[column], shown) for r in rows if row in ("*", r[key])} if column in rows[0] else set()
        if said != {shown}:
            problems.append(f'{path.name}: {shown} for "{row} {column}" of {table.relative_to(ROOT)}, '
                            f"which says {sorted(said) or 'nothing'}")
    return problems


def test_every_reference_figure_in_the_pages_is_the_committed_one():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    assert [p for page in pages for p in reference_figure_problems(page)] == []
    quoted = sum(len(REFERENCE_FIGURE.findall(page.read_text())) for page in pages)
    assert quoted >= 50, "almost no linked reference figures found: is the pattern right?"


def test_the_reference_figure_check_catches_a_stale_figure(tmp_path):
    """On a made-up page in a folder beside the real reference, so the links resolve as from docs/; its
    right figures are read from the reference, so a regenerated reference leaves the test as it is."""
    s = "../report/reference/default/summary.csv"
    with (REFERENCE / "default" / "summary.csv").open(newline="") as f:
        cell = {r["label"]: r for r in csv.DictReader(f)}
    student = as_shown(cell["student_ce"]["final_acc_mean"], "0.00")
    gain = as_shown(cell["vanilla_kd"]["delta_vs_student_ce_mean"], "+0.00")
    low = as_shown(cell["vanilla_kd"]["delta_vs_student_ce_ci_low"], "−0.00")
    verdict = cell["vanilla_kd"]["verdict_vs_student_ce"]
    stale = f"{float(gain.replace('−', '-')) + 0.44:+.2f}"
    text = (f'[{student}]({s} "student_ce final_acc_mean") [{gain}]({s} "vanilla_kd delta_vs_student_ce_mean") '
            f'[{low}]({s} "vanilla_kd delta_vs_student_ce_ci_low") [{verdict}]({s} "vanilla_kd verdict_vs_student_ce") '
            f'[4,352]({s} "srrl extra_trainable_params") [90.51](../report/reference/default/runs.csv "* teacher_acc") '
            f'[{stale}]({s} "vanilla_kd delta_vs_student_ce_mean") [−2.99]({s} "kr_sparse verdict_vs_student_ce") '
            f'[1.7]({s} "vanilla_kd nope") [3](../report/reference/default/runs.csv "* seed") [1](../report/reference/../../x.csv "x y")')
    fake = tmp_path / "docs" / "a.md"
    fake.parent.mkdir()
    fake.write_text(text)
    (tmp_path / "report").symlink_to(ROOT / "report")
    problems = [p.replace(str(tmp_path), "") for p in reference_figure_problems(fake)]
    kr_verdict = cell["kr_sparse"]["verdict_vs_student_ce"]
    assert problems == [
        f'a.md: {stale} for "vanilla_kd delta_vs_student_ce_mean" of report/reference/default/summary.csv, which says [\'{gain}\']',
        f'a.md: −2.99 for "kr_sparse verdict_vs_student_ce" of report/reference/default/summary.csv, which says [\'{kr_verdict}\']',
        'a.md: 1.7 for "vanilla_kd nope" of report/reference/default/summary.csv, which says nothing',
        'a.md: 3 for "* seed" of report/reference/default/runs.csv, which says [\'0\', \'1\', \'2\']',
        "a.md: 1 links ../report/reference/../../x.csv, not a committed reference CSV",
    ]


def test_the_reproduction_advice_counts_the_reference_methods_right():
    """docs/verdicts.md counts the reference's methods too spread for compare to place within ±1 at
    3 seeds a side: a count over a column, so not a linked cell."""
    with (REFERENCE / "default" / "summary.csv").open(newline="") as f:
        stds = [float(r["final_acc_std"]) for r in csv.DictReader(f)]
    wide = sum(sd > 0.57 for sd in stds)
    assert "deviation is above about 0.57 points" in (DOCS / "verdicts.md").read_text()
    assert f"that is {wide} of the {len(stds)} methods" in " ".join((DOCS / "verdicts.md").read_text().split())
