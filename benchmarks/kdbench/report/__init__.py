"""``kdbench report``: CSVs, figures and a markdown leaderboard, built from the raw run records alone.

The report reads nothing but ``<results>/<suite>/runs/*.json``, so it can be regenerated at any time,
on any machine, from the records a run left behind.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from kdbench.api.paths import check_writable_folder, checked_path, plain_name, under
from kdbench.report.combined import write_combined
from kdbench.report.facts import suite_facts
from kdbench.report.figures import draw_figures
from kdbench.report.leaderboard import leaderboard_markdown
from kdbench.report.load import load_runs
from kdbench.report.published import published_for
from kdbench.report.tables import final_by_seed, group_by_label, runs_table, summary_table
from kdbench.report.tuning import TuningInputs, tuning_section
from kdbench.report.verdicts import EFFECT, compare_family, comparisons_table, with_verdicts


def build_reports(suites: list[str], results_dir: str | Path = "results", report_dir: str | Path = "report",
                  effect: float = EFFECT) -> list[Path]:
    """Every suite's report and, with more than one suite, ``<report_dir>/combined.md`` and ``combined.csv``
    (one table across them); returns the leaderboards' paths, then combined.md's."""
    checked_path(results_dir, "--results-dir")
    checked_path(report_dir, "--report-dir")
    built = [_suite_report(suite, results_dir, report_dir, effect) for suite in suites]
    paths = [path for path, _ in built]
    if len(suites) > 1:
        paths.append(write_combined({suite: summary for suite, (_, summary) in zip(suites, built)}, Path(report_dir)))
    return paths


def build_report(suite: str, results_dir: str | Path = "results", report_dir: str | Path = "report",
                 effect: float = EFFECT) -> Path:
    """Write ``<report_dir>/<suite>/`` (runs.csv, summary.csv, comparisons.csv, figures/, leaderboard.md);
    returns the leaderboard."""
    return _suite_report(suite, results_dir, report_dir, effect)[0]


def _suite_report(suite: str, results_dir: str | Path, report_dir: str | Path, effect: float) -> tuple[Path, pd.DataFrame]:
    plain_name(suite, "suite")
    loaded = load_runs(results_dir, suite)
    out = under(check_writable_folder(report_dir, "--report-dir"), suite)
    out.mkdir(parents=True, exist_ok=True)
    runs_table(loaded.records).to_csv(out / "runs.csv", index=False)
    finals = {label: final_by_seed(recs) for label, recs in group_by_label(loaded.records).items()}
    comparisons = compare_family(finals, effect)
    comparisons_table(comparisons).to_csv(out / "comparisons.csv", index=False)
    summary = with_verdicts(summary_table(loaded.records), comparisons)
    summary.to_csv(out / "summary.csv", index=False)
    facts = suite_facts(suite, loaded.records)
    published = published_for(facts.dataset, facts.teacher.model, facts.student_model)
    figures = draw_figures(loaded.records, summary, facts, out / "figures")
    path = out / "leaderboard.md"
    tuning = tuning_section(TuningInputs(loaded.records, Path(results_dir), suite, out))
    path.write_text(leaderboard_markdown(summary, facts, published, figures, loaded, out, comparisons, effect) + tuning)
    return path, summary
