"""The report's figures (seaborn, PNG), drawn from the same numbers as the tables.

Figures are built with matplotlib's object API (no pyplot), so drawing them needs no display and
leaves no global figure state behind. Every seed is drawn as a point next to the mean and its
t-interval, because with 3–5 seeds the spread matters as much as the mean. A figure that cannot be
drawn (no ``vanilla_kd`` to pair with, no run finished) is skipped with a reason that the leaderboard
prints; the report never fails on it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import seaborn as sns
from kdbench.report.facts import SuiteFacts
from kdbench.report.load import lookup
from kdbench.report.stats import paired_differences
from kdbench.report.tables import cost_seconds, display_name, final_by_seed, group_by_label
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 130
KD = "vanilla_kd"
SEED_COLOUR, MEAN_COLOUR = "0.35", "tab:red"


@dataclass(frozen=True)
class ReportFigure:
    title: str
    path: Path | None  # None: not drawn, see ``skipped``
    skipped: str | None = None


@dataclass(frozen=True)
class _Inputs:
    records: list[dict]
    summary: pd.DataFrame  # ranked, with a ``name`` column (display names)
    runs: pd.DataFrame  # one row per ok run: name, seed, final_acc, cost_s, inference_params
    facts: SuiteFacts


def _ok_runs(records: list[dict], names: dict[str, str]) -> pd.DataFrame:
    rows = [{"name": names[r["label"]], "seed": r["seed"], "final_acc": r["final_acc"],
             "cost_s": cost_seconds(r), "inference_params": lookup(r, "params", "inference")}
            for r in records if r["status"] == "ok"]
    return pd.DataFrame(rows, columns=["name", "seed", "final_acc", "cost_s", "inference_params"])


def _height(n_rows: int) -> float:
    return 1.6 + 0.42 * n_rows


def _finite(x: float) -> float:
    """``x``, or 0 for NaN/None, where a bar or a filter needs a number."""
    return float(x) if isinstance(x, numbers.Real) and math.isfinite(x) else 0.0


def _seed_and_mean_legend(ax, extra: list[Line2D] = ()) -> None:
    handles = [Line2D([], [], ls="", marker="o", color=SEED_COLOUR, label="one seed"),
               Line2D([], [], color=MEAN_COLOUR, marker="D", label="mean ± 95% t-interval"), *extra]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _per_seed_with_mean(ax, points: pd.DataFrame, value: str, order: list[str], means, half_widths) -> None:
    """Seed points per method (one row each) and the mean with its interval on top."""
    sns.stripplot(data=points, x=value, y="name", order=order, color=SEED_COLOUR, size=5, jitter=0.12,
                  alpha=0.8, ax=ax)
    ax.errorbar(list(means), range(len(order)), xerr=[_finite(h) for h in half_widths], fmt="D",
                color=MEAN_COLOUR, ms=6, capsize=4, zorder=3)
    ax.set_ylim(len(order) - 0.5, -0.5)  # the error bars must not rescale the category rows
    ax.set_ylabel("")


def _final_accuracy(inp: _Inputs) -> Figure | str:
    if inp.runs.empty:
        return "no run finished ok"
    s = inp.summary
    order = list(s["name"])
    fig = Figure(figsize=(8.5, _height(len(order))))
    ax = fig.subplots()
    _per_seed_with_mean(ax, inp.runs, "final_acc", order, s["final_acc_mean"],
                        s["final_acc_mean"] - s["final_acc_ci_low"])
    extra = []
    if inp.facts.teacher.acc is not None:
        ax.axvline(inp.facts.teacher.acc, ls="--", color="0.5")
        extra.append(Line2D([], [], ls="--", color="0.5", label=f"teacher ({inp.facts.teacher.acc:.2f}%)"))
    left = ax.get_xlim()[0]
    for i, row in s.reset_index(drop=True).iterrows():
        if row["seeds_ok"] == 0:
            ax.text(left, i, "  no run finished ok", va="center", ha="left", color="tab:gray", fontsize=9)
    ax.set_xlabel("final-epoch test accuracy (%)")
    ax.set_title("Final-epoch accuracy per method, ranked")
    _seed_and_mean_legend(ax, extra)
    return fig


def _delta_vs_kd(inp: _Inputs) -> Figure | str:
    groups = group_by_label(inp.records)
    kd = final_by_seed(groups.get(KD, []))
    if not kd:
        return f"no {KD} run finished ok, so there is nothing to pair with"
    s = inp.summary[inp.summary["label"] != KD]
    names = dict(zip(s["label"], s["name"]))
    points = pd.DataFrame(
        [{"name": names[label], "seed": seed, "delta": d}
         for label in s["label"] for seed, d in paired_differences(final_by_seed(groups[label]), kd).items()],
        columns=["name", "seed", "delta"])
    if points.empty:
        return f"no other method has a seed that finished ok together with {KD}"
    s = s[s["name"].isin(points["name"])]
    order = list(s["name"])
    fig = Figure(figsize=(8.5, _height(len(order))))
    ax = fig.subplots()
    ax.axvline(0, color="0.2", lw=1)
    _per_seed_with_mean(ax, points, "delta", order, s[f"delta_vs_{KD}_mean"],
                        s[f"delta_vs_{KD}_mean"] - s[f"delta_vs_{KD}_ci_low"])
    ax.set_xlabel(f"paired Δ final-epoch accuracy vs {KD} (percentage points; > 0: better than {KD})")
    ax.set_title(f"Gain over {KD}, paired by seed")
    _seed_and_mean_legend(ax)
    return fig


def _accuracy_curves(inp: _Inputs) -> Figure | str:
    names = dict(zip(inp.summary["label"], inp.summary["name"]))
    rows = [{"name": names[r["label"]], "seed": r["seed"], "epoch": e["epoch"], "test_acc": e["test_acc"]}
            for r in inp.records if r["status"] == "ok" for e in r["epochs"]
            if isinstance(lookup(e, "epoch"), int) and isinstance(lookup(e, "test_acc"), (int, float))]
    if not rows:
        return "no run that finished ok recorded a test accuracy per epoch"
    curves = pd.DataFrame(rows)
    order = [n for n in inp.summary["name"] if n in set(curves["name"])]
    epochs = int(curves["epoch"].max())
    zoom_from = epochs - max(2, epochs // 4) + 1 if epochs >= 8 else None
    panels = 2 if zoom_from else 1
    fig = Figure(figsize=(6 * panels + 2.5, 4.8))
    axes = fig.subplots(1, panels, squeeze=False)
    style = {"x": "epoch", "y": "test_acc", "hue": "name", "hue_order": order,
             "errorbar": ("pi", 100), "marker": "o" if epochs <= 20 else None}
    for k, ax in enumerate(axes[0]):
        part = curves if k == 0 else curves[curves["epoch"] >= zoom_from]
        sns.lineplot(data=part, ax=ax, legend=k == panels - 1, **style)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        if zoom_from:
            ax.set_title("all epochs" if k == 0 else f"last {epochs - zoom_from + 1} epochs, zoomed")
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="method")
    title = "Test accuracy per epoch: mean over seeds, band from the lowest to the highest seed"
    if zoom_from:
        fig.suptitle(title)
    else:
        axes[0][0].set_title(title)
    return fig


def _side_by_side(xs: pd.Series, log: bool) -> pd.Series:
    """Offsets that spread methods with exactly the same cost a little apart, so their bars do not overlap."""
    u = xs.map(math.log10) if log else xs
    span = (u.max() - u.min()) or (0.1 if log else 0.1 * abs(u.iloc[0]) or 1.0)
    offsets = pd.Series(0.0, index=xs.index)
    for _, same in xs.groupby(xs):
        for i, idx in enumerate(same.index):
            offsets[idx] = (i - (len(same) - 1) / 2) * 0.04 * span
    return offsets


def _accuracy_against(column: str, run_column: str, what: str, label: str) -> Callable[[_Inputs], Figure | str]:
    """Mean accuracy of each method against one of its costs (``column`` of the summary)."""

    def draw(inp: _Inputs) -> Figure | str:
        s = inp.summary[inp.summary[column].map(lambda v: _finite(v) > 0)
                        & inp.summary["final_acc_mean"].notna()]
        if s.empty:
            return f"no run that finished ok recorded its {what}"
        order = list(s["name"])
        palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
        xs = s[column].astype(float)
        log = xs.max() / xs.min() > 20
        offsets = _side_by_side(xs, log)
        shift = dict(zip(s["name"], offsets))
        s = s.assign(x=(xs.map(math.log10) + offsets).map(lambda u: 10 ** u) if log else xs + offsets)
        runs = inp.runs[inp.runs["name"].isin(order)]
        runs = runs.assign(x=[10 ** (math.log10(x) + shift[n]) if log else x + shift[n]
                              for x, n in zip(runs[run_column].astype(float), runs["name"])])
        fig = Figure(figsize=(8.5, 5))
        ax = fig.subplots()
        sns.scatterplot(data=runs, x="x", y="final_acc", hue="name", hue_order=order, palette=palette,
                        s=18, alpha=0.35, legend=False, ax=ax)
        for _, row in s.iterrows():
            ax.errorbar(row["x"], row["final_acc_mean"],
                        yerr=_finite(row["final_acc_mean"] - row["final_acc_ci_low"]),
                        fmt="none", ecolor=palette[row["name"]], capsize=3)
        sns.scatterplot(data=s, x="x", y="final_acc_mean", hue="name", style="name", hue_order=order,
                        style_order=order, palette=palette, s=90, ax=ax)
        if log:
            ax.set_xscale("log")
        if xs.nunique() == 1:  # one cost for all: keep the axis about the value, not about the nudges
            ax.set_xlim(0.9 * xs.iloc[0], 1.1 * xs.iloc[0])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
        nudged = "; methods with the same value drawn slightly apart" if offsets.any() else ""
        ax.set_xlabel(label + nudged)
        ax.set_ylabel("final-epoch test accuracy (%)")
        ax.set_title("Accuracy against cost: mean ± 95% t-interval (large), each seed (small)")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="method")
        return fig

    return draw


FIGURES: list[tuple[str, str, Callable[[_Inputs], Figure | str]]] = [
    ("final_acc", "Final-epoch accuracy per method (every seed, mean, 95% interval)", _final_accuracy),
    ("delta_vs_vanilla_kd", f"Paired Δ vs {KD} per method", _delta_vs_kd),
    ("accuracy_curves", "Test accuracy per epoch", _accuracy_curves),
    ("acc_vs_cost", "Accuracy against cost (seconds per run, alone)",
     _accuracy_against("cost_s_mean", "cost_s", "cost", "seconds per run, the method alone (s)")),
    ("acc_vs_inference_params", "Accuracy against inference parameters",
     _accuracy_against("inference_params", "inference_params", "inference parameter count",
                       "parameters at inference (count)")),
]


def draw_figures(records: list[dict], summary: pd.DataFrame, facts: SuiteFacts,
                 out_dir: Path) -> list[ReportFigure]:
    """Draw every figure into ``out_dir``; a figure that cannot be drawn is skipped and its old file removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary.assign(name=[display_name(label, flag)
                                   for label, flag in zip(summary["label"], summary["reconstructed"])])
    inp = _Inputs(records, summary, _ok_runs(records, dict(zip(summary["label"], summary["name"]))), facts)
    drawn = []
    for stem, title, draw in FIGURES:
        path = out_dir / f"{stem}.png"
        with sns.axes_style("whitegrid"):
            fig = draw(inp)
        if isinstance(fig, str):
            path.unlink(missing_ok=True)
            drawn.append(ReportFigure(title, None, fig))
            continue
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        drawn.append(ReportFigure(title, path))
    return drawn
