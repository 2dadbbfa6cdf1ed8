"""One table across suites (``combined.md``, ``combined.csv``): methods as rows, suites as columns.

Each cell is the method's gain over ``student_ce`` in that suite with its verdict's mark, from the same
verdicts as that suite's leaderboard. Methods are ranked by mean final accuracy within each suite (1 the
best, ties averaged) among the methods every suite has, and the ranks are averaged; with 3 suites or
more, Friedman's test says whether the methods differ at all and Nemenyi's critical difference which
average ranks are apart (drawn as a critical-difference figure, Demšar 2006).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from kdbench.report.stats import ALPHA, friedman_p, nemenyi_cd
from kdbench.report.tables import BASELINES
from kdbench.report.verdicts import BETTER, NOT_SEPARATED, WORSE
from matplotlib.figure import Figure

MARKS = {BETTER: "▲", WORSE: "▼", NOT_SEPARATED: "○"}
MIN_SUITES_FOR_FRIEDMAN = 3
FIGURE = "combined_critical_difference.png"


def _cell(row: pd.Series) -> str:
    gain = row[f"delta_vs_{BASELINES[0]}_mean"]
    if row.name == BASELINES[0]:  # the row of a summary indexed by label
        return "(baseline)"
    if pd.isna(gain):
        return "–"
    return f"{gain:+.2f} {MARKS.get(row[f'verdict_vs_{BASELINES[0]}'], '')}".strip()


def average_ranks(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rank of each method in each suite (1 the best mean final accuracy, ties averaged) among the methods
    with a mean in every suite; rows: methods, columns: suites."""
    means = pd.DataFrame({suite: s.set_index("label")["final_acc_mean"] for suite, s in summaries.items()})
    complete = means.dropna()
    return complete.rank(ascending=False, method="average")


def combined_table(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``combined.csv``: per method and suite the gain over student_ce, its verdict and the rank; the
    average rank last (empty for a method some suite lacks)."""
    ranks = average_ranks(summaries)
    labels = list(dict.fromkeys(label for s in summaries.values() for label in s["label"]))
    table = pd.DataFrame({"method": labels})
    for suite, s in summaries.items():
        by = s.set_index("label")
        table[f"{suite}: gain"] = [by.loc[x, f"delta_vs_{BASELINES[0]}_mean"] if x in by.index else None for x in labels]
        table[f"{suite}: verdict"] = [by.loc[x, f"verdict_vs_{BASELINES[0]}"] if x in by.index else "" for x in labels]
        table[f"{suite}: cell"] = [_cell(by.loc[x]) if x in by.index else "–" for x in labels]
        table[f"{suite}: rank"] = [ranks.loc[x, suite] if x in ranks.index else None for x in labels]
    table["average rank"] = [ranks.loc[x].mean() if x in ranks.index else None for x in labels]
    return table.sort_values("average rank", na_position="last", kind="stable").reset_index(drop=True)


def friedman_line(ranks: pd.DataFrame) -> tuple[str, float | None]:
    """The Friedman sentence and Nemenyi's CD (None where the test is not run)."""
    k, n = ranks.shape
    if n < MIN_SUITES_FOR_FRIEDMAN or k < 3:
        return (f"No Friedman test: it needs {MIN_SUITES_FOR_FRIEDMAN} suites or more and 3 methods or more "
                f"present in every suite (here {n} suites, {k} methods)."), None
    chi2, p = friedman_p({m: list(ranks.loc[m]) for m in ranks.index})
    cd = nemenyi_cd(k, n)
    return (f"Friedman test over {n} suites and {k} methods: χ²_F = {chi2:.3f}, p = {p:.3g} "
            f"({'the methods differ' if p < ALPHA else 'no difference shown'} at α = {ALPHA:g}); Nemenyi's "
            f"critical difference of average ranks at α = {ALPHA:g}: CD = {cd:.3f}."), cd


def cd_figure(average: pd.Series, cd: float) -> Figure:
    """Average ranks on a line (1 at the left), the CD as a bar above, and a thick line under every
    maximal group of methods whose average ranks lie within CD of each other (not told apart)."""
    order = average.sort_values()
    k = len(order)
    fig = Figure(figsize=(8, 1.6 + 0.32 * k))
    ax = fig.subplots()
    ax.set_xlim(0.5, max(k, 2) + 0.5)
    ax.set_ylim(-(k + 1), 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black")
        ax.text(r, 0.25, str(r), ha="center", va="bottom", fontsize=8)
    ax.hlines(1.2, 1, 1 + cd, color="tab:red", lw=2)
    ax.text(1 + cd / 2, 1.3, f"CD = {cd:.2f}", ha="center", va="bottom", color="tab:red", fontsize=8)
    for i, (name, rank) in enumerate(order.items()):
        ax.vlines(rank, -(i + 1), 0, color="0.4", lw=0.8)
        ax.text(k + 0.45 if i >= k / 2 else 0.55, -(i + 1), f"{name} ({rank:.2f})", va="center",
                ha="right" if i >= k / 2 else "left", fontsize=8)
    values, last_end, level = list(order.values), -1, 0
    for i, start in enumerate(values):
        end = max(j for j in range(i, k) if values[j] - start <= cd)
        if end > i and end > last_end:
            ax.hlines(-0.4 - 0.25 * level, start, values[end], color="black", lw=3)
            last_end, level = end, level + 1
    ax.set_title(f"Average rank across suites, Nemenyi CD at α = {ALPHA:g} (lines join methods not told apart)",
                 fontsize=9)
    return fig


def write_combined(summaries: dict[str, pd.DataFrame], out: Path) -> Path:
    """``combined.md``, ``combined.csv`` and, with 3 suites or more, the CD figure, in ``out``."""
    table = combined_table(summaries)
    table.to_csv(out / "combined.csv", index=False)
    line, cd = friedman_line(average_ranks(summaries))
    figure = out / FIGURE
    figure.unlink(missing_ok=True)
    if cd is not None:
        avg = table.dropna(subset=["average rank"]).set_index("method")["average rank"]
        cd_figure(avg, cd).savefig(figure, dpi=130, bbox_inches="tight")
    shown = table[["method"] + [f"{s}: cell" for s in summaries] + ["average rank"]]
    shown = shown.rename(columns={f"{s}: cell": s for s in summaries})
    shown["average rank"] = [f"{r:.2f}" if pd.notna(r) else "– (not in every suite)" for r in shown["average rank"]]
    lines = [f"# Across suites: {', '.join(summaries)}", "",
             f"Gain over {BASELINES[0]} (points, mean of paired seeds) with its verdict in that suite's "
             f"leaderboard: ▲ better, ▼ worse, ○ not separated (Holm-corrected paired tests). Average rank: "
             "the mean over suites of the method's rank by mean final accuracy (1 the best), among the "
             "methods every suite has.", "", shown.to_markdown(index=False, disable_numparse=True), "", line]
    if cd is not None:
        lines += ["", f"![Critical difference]({FIGURE})"]
    path = out / "combined.md"
    path.write_text("\n".join(lines) + "\n")
    return path
