"""``kdbench compare A B``: is B a reproduction of A within a stated margin?

A and B are the same suite run twice, on two machines or two versions. Bits differ across machines, so
seeds are not paired: per method the difference of mean final accuracy B − A has a Welch interval, and
two one-sided tests (TOST) decide whether it lies within ±margin. Where each side may be:

1. a suite's folder of a results folder (``results/default``, holding ``runs/``): its records;
2. a runs folder (``results/default/runs``, holding ``*.json``): its records;
3. a report folder (``report/reference/default``, holding ``runs.csv``): the flattened records there
   (final figures only: the per-epoch curves of :mod:`kdbench.report.curves` need records);
4. a folder holding one of those as a subfolder (``results``, ``report/reference``): the one named by
   ``--suite``, or the only one there is.
The first rule that matches wins. Records and runs.csv are read into the same flat table (runs.csv is
what the report writes from the records), so any side can be compared with any other.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from kdbench.api.errors import ReportError
from kdbench.api.paths import checked_path
from kdbench.report.curves import curve_gaps, curves_table
from kdbench.report.load import read_runs_folder
from kdbench.report.stats import ALPHA, binomial_se, estimate, tost_p, welch
from kdbench.report.tables import runs_table

MARGIN = 1.0  # points (kdbench compare --margin)
#: What must agree for B to be a rerun of A: (what it is called, the runs.csv column or column prefix).
SUITE_KEYS = (("budget", "config.train"), ("budget", "budget_epochs"), ("dataset", "dataset.name"),
              ("dataset sha256", "dataset.sha256"), ("training images", "dataset.n_train"),
              ("test images", "dataset.n_test"), ("student", "student_model"), ("teacher model", "teacher_model"),
              ("teacher sha256", "teacher_sha256"), ("device", "environment.device_name"),
              ("processor", "environment.cpu_model"), ("processor", "environment.cpu_count"),
              ("torch", "environment.torch"), ("threads", "environment.threads"))
METHOD_KEYS = (("method sources", "config.method_sources_sha256"), ("hyperparameters", "config.hyperparameters"))


@dataclass(frozen=True)
class Side:
    name: str  # the folder as given
    source: str  # what was read
    runs: pd.DataFrame  # runs.csv's shape: one row per run, nested fields as dotted columns
    records: list[dict] | None = None  # the records themselves, where the side has them


def _records_side(name: str, folder: Path) -> Side:
    loaded = read_runs_folder(folder)
    return Side(name, str(folder), runs_table(loaded.records), loaded.records)


def read_side(path: str | Path, suite: str | None = None) -> Side:
    """One side of a comparison, by the rules in this module's docstring; anything else is a ReportError."""
    p = checked_path(path, "compare:")
    if not p.is_dir():
        raise ReportError(f"{path}: not a folder (give a results folder, a runs folder or a report folder)")
    if (p / "runs").is_dir():
        return _records_side(str(path), p / "runs")
    if (p / "runs.csv").is_file():
        return Side(str(path), str(p / "runs.csv"), pd.read_csv(p / "runs.csv"))
    if any(p.glob("*.json")):
        return _records_side(str(path), p)
    inner = sorted(d.name for d in p.iterdir() if d.is_dir() and ((d / "runs").is_dir() or (d / "runs.csv").is_file()))
    if suite is not None and suite in inner:
        return read_side(p / suite)
    if suite is None and len(inner) == 1:
        return read_side(p / inner[0])
    found = f"it holds the suites {', '.join(inner)}" if inner else "it holds no runs/, runs.csv or *.json"
    raise ReportError(f"{path}: cannot tell which suite to compare ({found}"
                      + (f"; no suite {suite!r} there" if suite else "; name one with --suite") + ")")


def _plain(value):
    """A cell as a comparable Python value: NaN/None → None, a whole float → int."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _most_common(runs: pd.DataFrame, column: str):
    values = [_plain(v) for v in runs[column]] if column in runs.columns else []
    counts = Counter(str(v) for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None


def _columns(a: pd.DataFrame, b: pd.DataFrame, prefix: str) -> list[str]:
    return sorted(c for c in set(a.columns) | set(b.columns) if c == prefix or c.startswith(prefix + "."))


def _differences(a: pd.DataFrame, b: pd.DataFrame, keys) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for what, prefix in keys:
        for column in _columns(a, b, prefix):
            va, vb = _most_common(a, column), _most_common(b, column)
            if va != vb:
                out.setdefault(what, []).append(f"{column}: {va} vs {vb}")
    return out


def config_differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """``budget differs: config.train.epochs: 3 vs 5`` for every fact of the suite, and per method its
    sources and hyperparameters, whose most common value is not the same on both sides."""
    lines = [f"{what} differs: {'; '.join(d)}" for what, d in _differences(a, b, SUITE_KEYS).items()]
    for label in sorted(set(a["label"]) & set(b["label"])):
        found = _differences(a[a["label"] == label], b[b["label"] == label], METHOD_KEYS)
        lines += [f"`{label}`: {what} differ: {'; '.join(d)}" for what, d in found.items()]
    return lines


def _finals(runs: pd.DataFrame) -> dict[str, dict[int, float]]:
    """label -> {seed: final accuracy} over the ok runs."""
    ok = runs[(runs["status"] == "ok") & runs["final_acc"].notna()]
    return {label: {int(s): float(x) for s, x in zip(g["seed"], g["final_acc"])}
            for label, g in ok.groupby("label", sort=False)}


def _f(x, sign: bool = False) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.2f}" if sign else f"{x:.2f}"


def _method_row(label: str, by_seed_a: dict[int, float], by_seed_b: dict[int, float],
                margin: float) -> tuple[dict, bool]:
    """The row of one method and whether it is within the margin. The same seeds with the same
    accuracy on both sides (a rerun on the same processor model and thread count, or a copy) are
    a reproduction whatever their spread; otherwise the test decides."""
    a, b = list(by_seed_a.values()), list(by_seed_b.values())
    ea, eb = estimate(a), estimate(b)
    row = {"method": label, "A mean (seeds)": f"{_f(ea.mean)} ({ea.n})", "B mean (seeds)": f"{_f(eb.mean)} ({eb.n})"}
    if not a or not b:
        return {**row, "verdict": f"missing in {'A' if not a else 'B'}"}, False
    w = welch(a, b)
    low, high = w.interval()
    low90, high90 = w.interval(1 - 2 * ALPHA)
    p = tost_p(w, margin)
    within = p < ALPHA
    shown = max(abs(low90), abs(high90))
    verdict = (f"within ±{margin:g}" if within else f"not shown within ±{margin:g} (2 seeds a side needed)"
               if math.isnan(p) else f"not shown within ±{margin:g} (the data show ±{shown:.2f})")
    if by_seed_a == by_seed_b:
        within, verdict = True, "identical: every seed's accuracy equal"
    return {**row, "B − A [95% CI]": f"{_f(w.diff, True)} [{_f(low, True)}, {_f(high, True)}]",
            "90% CI": f"[{_f(low90, True)}, {_f(high90, True)}]",
            "p (TOST)": "–" if math.isnan(p) else f"{p:.3g}", "verdict": verdict}, within


def _teachers(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    ta, tb = _most_common(a, "teacher_acc"), _most_common(b, "teacher_acc")
    n_test = _most_common(a, "dataset.n_test")
    if ta is None and tb is None:
        return ["No teacher in either."]
    line = f"Teacher test accuracy: A {ta if ta is not None else '–'}%, B {tb if tb is not None else '–'}%"
    if ta is not None and tb is not None and n_test is not None:
        se = math.hypot(binomial_se(float(ta), int(n_test)), binomial_se(float(tb), int(n_test)))
        line += (f"; B − A = {float(tb) - float(ta):+.2f} points, against a binomial standard error of the "
                 f"difference of {se:.2f} points on {int(n_test):,} test images (one trained teacher a side, no seeds)")
    return [line + "."]


def _curves(a: Side, b: Side, within: float | None) -> tuple[list[str], str | None]:
    """The section on the per-epoch curves, and, where ``within`` is given and not met, what the
    result line says of it."""
    lines = ["## Training curves, seed by seed", ""]
    if a.records is None or b.records is None:
        kept = " and ".join(f"`{s.name}`" for s in (a, b) if s.records is None)
        return lines + [f"Not compared: {kept} holds final figures only (runs.csv); give a results or runs "
                        "folder on both sides."], None if within is None else "**Training curves not compared**"
    gaps = curve_gaps(a.records, b.records)
    lines += [pd.DataFrame(curves_table(gaps)).to_markdown(index=False, disable_numparse=True), "",
              "The same (method, seed) on both sides, epoch by epoch: each mean training-loss term and the test "
              "accuracy (points). On one processor model at one thread count, unchanged code gives the same bits, "
              "and a rewrite that changes only the rounding shows as a small gap, which SGD carries forward from "
              "step to step. Another processor or thread count gives other bits anyway: there, read the accuracy "
              "test above."]
    if within is None:
        return lines, None
    outside = [g.label for g in gaps if not g.seeds or not g.loss <= within]
    lines += ["", f"`--curves-within {within:g}`: " + (f"{', '.join(outside)} not within." if outside else
                                                       "every method within.")]
    return lines, f"**Training curves further apart than {within:g}**: {', '.join(outside)}" if outside else None


def compare(a_path: str | Path, b_path: str | Path, margin: float = MARGIN,
            suite: str | None = None, curves_within: float | None = None) -> tuple[str, int]:
    """The comparison as markdown, and the exit status: 0 when every method of either side is within
    ±margin (and, with ``curves_within``, every loss gap of the per-epoch curves at most that), 1
    when one is not (or is missing on a side)."""
    if not margin > 0:
        raise ReportError(f"--margin must be a positive number of points, not {margin}")
    if curves_within is not None and not curves_within >= 0:
        raise ReportError(f"--curves-within must be a loss difference of 0 or more, not {curves_within}")
    a, b = read_side(a_path, suite), read_side(b_path, suite)
    fa, fb = _finals(a.runs), _finals(b.runs)
    labels = list(fa) + [x for x in fb if x not in fa]
    rows, outside = [], []
    for label in labels:
        row, within = _method_row(label, fa.get(label, {}), fb.get(label, {}), margin)
        rows.append(row)
        if not within:
            outside.append(label)
    differences = config_differences(a.runs, b.runs)
    curves, off_curve = _curves(a, b, curves_within)
    status = 1 if outside or off_curve else 0
    result = (f"**Every method within ±{margin:g} points**" if not outside else
              f"**{len(outside)} of {len(labels)} methods not shown within ±{margin:g} points**: "
              f"{', '.join(outside)}") + (f". {off_curve}" if off_curve else "") + f" (exit {status})."
    lines = [f"# kdbench compare: A = `{a.name}`, B = `{b.name}`", "",
             f"A read from `{a.source}` ({len(a.runs)} runs); B read from `{b.source}` ({len(b.runs)} runs).", "",
             pd.DataFrame(rows).fillna("–").to_markdown(index=False, disable_numparse=True), "",
             f"B − A: difference of mean final-epoch accuracy (points) over each side's ok seeds, unpaired "
             f"(Welch's t; bits differ across machines). **within ±{margin:g}**: two one-sided tests at "
             f"α = {ALPHA:g} (TOST), i.e. the 90% interval lies inside ±{margin:g}; otherwise the margin the data "
             "do show is given. **identical**: the same seeds with the same accuracy on both sides, a reproduction "
             "bit for bit whatever the spread.", "", "## Teachers", "", *_teachers(a.runs, b.runs), "",
             "## Configuration differences", ""]
    lines += [f"- {d}" for d in differences] or ["None: same budget, data, pair, method sources and hyperparameters."]
    lines += ["", *curves, "", result]
    return "\n".join(lines) + "\n", status
