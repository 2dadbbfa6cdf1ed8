"""``kdbench report``: CSVs, figures and a markdown leaderboard, built from the raw run records alone.

The report reads nothing but ``<results>/<suite>/runs/*.json``, so it can be regenerated at any time,
on any machine, from the records a run left behind.
"""

from __future__ import annotations

from pathlib import Path

from kdbench.api.paths import check_writable_folder, plain_name, under
from kdbench.report.facts import suite_facts
from kdbench.report.figures import draw_figures
from kdbench.report.leaderboard import leaderboard_markdown
from kdbench.report.load import load_runs
from kdbench.report.published import published_for
from kdbench.report.tables import runs_table, summary_table
from kdbench.report.tuning import TuningInputs, tuning_section


def build_report(suite: str, results_dir: str | Path = "results", report_dir: str | Path = "report") -> Path:
    """Write ``<report_dir>/<suite>/`` (runs.csv, summary.csv, figures/, leaderboard.md); returns the leaderboard."""
    plain_name(suite, "suite")
    loaded = load_runs(results_dir, suite)
    out = under(check_writable_folder(report_dir, "--report-dir"), suite)
    out.mkdir(parents=True, exist_ok=True)
    runs_table(loaded.records).to_csv(out / "runs.csv", index=False)
    summary = summary_table(loaded.records)
    summary.to_csv(out / "summary.csv", index=False)
    facts = suite_facts(suite, loaded.records)
    published = published_for(facts.dataset, facts.teacher.model, facts.student_model)
    figures = draw_figures(loaded.records, summary, facts, out / "figures")
    path = out / "leaderboard.md"
    tuning = tuning_section(TuningInputs(loaded.records, Path(results_dir), suite, out))
    path.write_text(leaderboard_markdown(summary, facts, published, figures, loaded, out) + tuning)
    return path
