"""The report's tuning section, for a suite run with ``tuning:``: what the search was, what each method
got, what it cost, and whether the budget was enough.

It reads the suite's records (their ``tuning`` field) and the trial records under
``<results>/<suite>/tuning/runs/``, which the leaderboard itself never reads: a trial's accuracy is
a validation accuracy, and it ranks nothing. The figure shows, per method, the best validation
accuracy after each number of trials; a curve still climbing at the last trial says the budget was
short for that method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import seaborn as sns
from kdbench.api.paths import under
from kdbench.report.figures import DPI
from kdbench.run.tuning import by_trial, trial_count, trial_score
from kdbench.train import records as schema
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURE = "tuning_budget.png"


@dataclass(frozen=True)
class TuningInputs:
    """What the section is drawn from: the suite's records, where the trial records are, where it goes."""

    records: list[dict]
    results_dir: Path
    suite: str
    out: Path  # the report's folder


def load_trials(results_dir: Path, suite: str) -> list[dict]:
    """The suite's trial records that fit the schema (others are left out of the tuning section)."""
    folder = under(results_dir, suite, "tuning", "runs")
    found = (schema.read_record(p) for p in sorted(folder.glob("*.json")))
    return [r for r in found if r is not None and schema.problem(r) is None and isinstance(r.get("trial"), dict)]


def best_so_far(trials: list[dict], seeds: tuple[int, ...]) -> dict[str, list[float | None]]:
    """Per method label, the best trial score (mean validation accuracy over ``seeds``) among its first
    1, 2, … trials; None until one has ended ok on every seed."""
    out = {}
    for label, by_index in by_trial(trials).items():
        best, curve = None, []
        for k in range(trial_count(by_index)):
            score = trial_score(by_index.get(k, {}), seeds)
            best = score if best is None or (score is not None and score > best) else best
            curve.append(best)
        out[label] = curve
    return out


def _figure(curves: dict[str, list[float | None]]) -> Figure:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for label, curve in curves.items():
        points = [(k + 1, v) for k, v in enumerate(curve) if v is not None]
        if points:
            ax.plot(*zip(*points), marker="o", drawstyle="steps-post", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _values(hp: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.items()) or "(nothing tuned)"


def _rows(records: list[dict]) -> list[str]:
    by_label: dict[str, list[dict]] = {}
    for r in records:
        by_label.setdefault(r["label"], []).append(r)
    rows = ["| method | trial chosen | chosen | settings | validation acc., settings (%) | validation acc., "
            "chosen (%) | tuning cost (s) | cost with tuning (s) |", "|---|---|---|---|---|---|---|---|"]
    for label, recs in by_label.items():
        t = recs[0]["tuning"]
        total = t["tuning_cost_s"] + sum(r["cost_s"] for r in recs)
        rows.append(f"| {label} | {t['trial']} of {t['trials']} | {_values(t['chosen'])} | {_values(t['defaults'])} "
                    f"| {_pct(t['defaults_validation_acc'])} | {_pct(t['validation_acc'])} "
                    f"| {t['tuning_cost_s']:.1f} | {total:.1f} |")
    return rows


def tuning_section(inp: TuningInputs) -> str:
    """Markdown to append to the leaderboard: "" for a suite run without tuning."""
    tuned = [r for r in inp.records if isinstance(r.get("tuning"), dict)]
    if not tuned:
        return ""
    t, trials = tuned[0]["tuning"], load_trials(inp.results_dir, inp.suite)
    split = ", ".join(f"{k} {v}" for k, v in t["validation"].items())
    n_val = trials[0]["dataset"]["n_test"] if trials else None
    lines = ["", "## Tuning", "",
             f"This suite was tuned: up to {max(r['tuning']['trials'] for r in tuned)} trials per method "
             f"(trial 0 at its settings, the others scrambled-Halton points of its search space), chosen by "
             f"final validation accuracy, the mean over tuning seeds {', '.join(map(str, t['seeds']))}, on a "
             f"stratified validation split of the students' training images ({split}"
             f"{f'; {n_val:,} images' if n_val else ''}); the test split was not available to the trials. "
             "The accuracies above are test accuracies of the chosen settings on the suite's seeds; the "
             "cost with tuning adds every trial's cost to the suite's cells'.", "", *_rows(tuned)]
    if trials:
        path = inp.out / "figures" / FIGURE
        path.parent.mkdir(parents=True, exist_ok=True)
        with sns.axes_style("whitegrid"):
            _figure(best_so_far(trials, tuple(t["seeds"]))).savefig(path, dpi=DPI, bbox_inches="tight")
        lines += ["", "Best validation accuracy after each number of trials (a curve still rising at the last "
                  "trial: the budget was short for that method):", "", f"![tuning budget](figures/{FIGURE})"]
    return "\n".join(lines) + "\n"
