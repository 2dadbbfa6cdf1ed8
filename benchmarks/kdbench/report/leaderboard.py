"""``leaderboard.md``: the ranked table and the legend that says exactly what its numbers mean.

Ranking is by final-epoch accuracy only. Every method gets a row, including one whose runs all failed;
every run that did not finish ok is listed with its error; every skipped record file is named. The
legend states the protocol (seeds, budget, data, teacher, environment) so a number is never read
without its conditions.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import pandas as pd

from kdbench.report.facts import SuiteFacts, describe_budget
from kdbench.report.figures import ReportFigure
from kdbench.report.load import LoadedRuns
from kdbench.report.tables import BASELINES, display_name

NOTE_WIDTH = 90
EPOCH_KIND = {"last": "last epoch", "best": "best epoch", "unknown": "epoch not stated"}
RANKING_RULE = ("final-epoch accuracy ranks; best epoch is shown but never used for ranking "
                "(selecting it is selection on the test set)")


def _ok(x) -> bool:
    """A finite number (numpy scalars included), as opposed to NaN, None or a missing value."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _f(x, digits: int = 2, sign: bool = False) -> str:
    if not _ok(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _count(x) -> str:
    return f"{int(x):,}" if _ok(x) else "–"


def _flops(x) -> str:
    if not _ok(x):
        return "–"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{int(x)}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cell(text: str, width: int) -> str:
    """One markdown table cell: no pipe or newline can break the row; long notes are cut (full text below)."""
    text = _one_line(text)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def _delta(row: pd.Series, baseline: str) -> str:
    p = f"delta_vs_{baseline}"
    if row["label"] == baseline:
        return "(baseline)"
    n = row[f"{p}_n"]
    if n == 0:
        return "no paired seed"
    if n == 1:
        return f"{_f(row[f'{p}_mean'], sign=True)} (1 seed)"
    low, high = _f(row[f"{p}_ci_low"], sign=True), _f(row[f"{p}_ci_high"], sign=True)
    return f"{_f(row[f'{p}_mean'], sign=True)} [{low}, {high}]"


def _wins(row: pd.Series, baseline: str) -> str:
    n = row[f"delta_vs_{baseline}_n"]
    if row["label"] == baseline or n == 0:
        return "–"
    return f"{row[f'win_rate_vs_{baseline}'] * n:g}/{n}"


def _paper_cells(published: pd.DataFrame, method: str, ours: float) -> tuple[str, str]:
    rows = published[published["method"] == method]
    if rows.empty:
        return "", ""
    paper = " / ".join(f"{r.acc:.2f} ({EPOCH_KIND.get(r.epoch_kind, r.epoch_kind)})" for r in rows.itertuples())
    delta = " / ".join(_f(ours - r.acc, sign=True) for r in rows.itertuples())
    return paper, delta


def _table(summary: pd.DataFrame, facts: SuiteFacts, published: pd.DataFrame) -> str:
    rows = []
    for _, s in summary.iterrows():
        std = f" ± {_f(s['final_acc_std'])}" if _ok(s["final_acc_std"]) else ""
        low, high = s["final_acc_ci_low"], s["final_acc_ci_high"]
        ci = f"[{_f(low)}, {_f(high)}]" if _ok(low) else "–"
        row = {
            "rank": str(s["rank"]) if not pd.isna(s["rank"]) else "–",
            "method": display_name(s["label"], bool(s["reconstructed"])),
            "final acc % (mean ± std)": _f(s["final_acc_mean"]) + std if _ok(s["final_acc_mean"]) else "–",
            "95% CI": ci,
            "best-epoch acc % (not ranked)": _f(s["best_acc_mean"]),
        }
        for b in BASELINES:
            row[f"Δ vs {b} [95% CI]"] = _delta(s, b)
        for b in BASELINES:
            row[f"wins vs {b}"] = _wins(s, b)
        row.update({
            "seeds ok/total": f"{s['seeds_ok']}/{s['seeds_total']}",
            "status": _cell(s["status_notes"], NOTE_WIDTH) if s["status_notes"] else "ok",
            "cost s (alone)": _f(s["cost_s_mean"], 1),
            "img/s": _f(s["images_per_s_mean"], 0),
            "peak MiB": _f(s["peak_memory_mb_mean"], 0),
            "extra params": _count(s["extra_trainable_params"]),
            "inference params": _count(s["inference_params"]),
            "inference FLOPs": _flops(s["inference_flops"]),
            "kernel gap": _f(s["kernel_gap_test_mean"], 3),
        })
        if not published.empty:
            row["paper (epoch)"], row["Δ to paper"] = _paper_cells(published, s["label"], s["final_acc_mean"])
        rows.append(row)
    table = pd.DataFrame(rows)
    t = facts.teacher
    teacher = {c: "" for c in table.columns}
    teacher.update({
        "rank": "–",
        "method": f"teacher: {t.model}",
        "final acc % (mean ± std)": _f(t.acc) if t.acc is not None else "no teacher run",
        "status": f"sha256 {t.sha256[:12]}" if t.sha256 else "no method used a teacher",
    })
    if not published.empty and t.acc is not None:
        teacher["paper (epoch)"], teacher["Δ to paper"] = _paper_cells(published, "teacher", t.acc)
    table = pd.concat([pd.DataFrame([teacher]), table], ignore_index=True)
    return table.to_markdown(index=False, disable_numparse=True)


def _environment(facts: SuiteFacts) -> str:
    env = {k: ", ".join(map(str, v)) if v else "unknown" for k, v in facts.environment.items()}
    memory = ", ".join(facts.peak_memory_kinds) or "unknown"
    return (f"{env['device']} ({env['device_name']}), torch {env['torch']}, {env['threads']} threads, "
            f"deterministic: {env['deterministic']}; peak memory measured as {memory}")


def _dataset(facts: SuiteFacts) -> str:
    teacher_n = (f"trained on {_count(facts.teacher.n_train)} (teacher_n_train)" if facts.teacher.n_train is not None
                 else f"came from the checkpoint {facts.teacher.checkpoint}, trained outside the suite"
                 if facts.teacher.checkpoint else
                 "trained on an unrecorded number of images (no teacher_n_train in the records)")
    sha = f" (sha256 {facts.data_sha256[:12]}…)" if facts.data_sha256 else ""
    return (f"{facts.dataset}{sha}: students train on {_count(facts.n_train)} images (n_train) and are tested on "
            f"{_count(facts.n_test)} (n_test); the teacher {teacher_n}")


def _legend(summary: pd.DataFrame, facts: SuiteFacts) -> list[str]:
    t = facts.teacher
    teacher = (f"{t.model}, {_f(t.acc)}% test accuracy, sha256 `{t.sha256}`" if t.sha256
               else f"{t.model}, not used by any run here")
    lines = [
        "## Legend",
        "",
        f"- **Protocol**: {RANKING_RULE}. Rank, mean and std are over the seeds that finished ok.",
        "- **95% CI**: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (Student's t, s the sample std over seeds).",
        "- **Δ vs student_ce / vanilla_kd**: paired by seed, over the seeds where both runs finished ok: the mean "
        "of the per-seed differences (percentage points) with its 95% t-interval. **wins**: seeds won out of "
        "paired seeds (a tie counts ½).",
        "- **Cost**, mean over ok seeds: *cost s (alone)* is what one run of the method costs on its own: "
        "its own measured time (building, offline targets, its training steps, evaluation) plus the teacher "
        "passes it reads, charged in full even when the cells of a seed trained in lockstep and shared "
        "them; img/s is training images per second on that basis; peak memory (MiB; what is measured "
        "is named under Environment) is that of the group of cells the run trained with; extra params: "
        "trainable parameters beyond the student (training-only modules and modules injected into it); "
        "inference params and FLOPs: the network evaluated at test time, for one input "
        "(a multiply-accumulate counts 2 FLOPs).",
        "- **Kernel gap**: ‖K_S − K_T‖_F / ‖K_T‖_F of the linear kernels K = F Fᵀ of the student's and the "
        "teacher's pooled features on the test set, mean over ok seeds (lower: the student's feature geometry "
        "is closer to the teacher's; what kernel_nystrom transfers).",
        f"- **Seeds**: {', '.join(map(str, facts.seeds))}",
        f"- **Budget** (config.train): {describe_budget(facts.train)}",
        f"- **Dataset**: {_dataset(facts)}",
        f"- **Student**: {facts.student_model}",
        f"- **Teacher**: {teacher}",
        f"- **Environment**: {_environment(facts)}",
    ]
    if summary["reconstructed"].any():
        flagged = ", ".join(summary.loc[summary["reconstructed"], "label"])
        lines.append(f"- **Reconstructed**: {flagged} — built on a reconstruction of the paper's method that "
                     "neither its text nor released code confirms; read its numbers as those of the "
                     "reconstruction, not of the paper.")
    return lines


def _published_section(published: pd.DataFrame, facts: SuiteFacts) -> list[str]:
    if published.empty:
        return []
    lines = ["", f"## Published numbers for {facts.dataset}, {facts.teacher.model} → {facts.student_model}", "",
             "Shown beside rows whose label is the published method's name; Δ to paper is our final-epoch mean "
             "minus the paper's number (several numbers for one method: in the order listed here). A best-epoch "
             "number, or one whose epoch the source does not state, is not directly comparable to our final-epoch "
             "one. CRD and DKD are context, not plugins here.", ""]
    for r in published.itertuples():
        note = f"; {r.note}" if r.note else ""
        lines.append(f"- {r.method}: {r.acc:.2f} ({EPOCH_KIND.get(r.epoch_kind, r.epoch_kind)}) — {r.source}{note}")
    return lines


def _not_ok_section(records: list[dict]) -> list[str]:
    bad = sorted((r for r in records if r["status"] != "ok"), key=lambda r: (r["label"], r["seed"]))
    if not bad:
        return []
    lines = ["", "## Runs that did not finish ok", "",
             "Kept in the table's seed counts and status; not in its means.", ""]
    for r in bad:
        lines.append(f"- `{r['label']}` seed {r['seed']}: **{r['status']}** — "
                     f"{_one_line(r.get('error') or 'no error recorded')}")
    return lines


def _unreadable_section(loaded: LoadedRuns) -> list[str]:
    if not loaded.unreadable:
        return []
    lines = ["", "## Unreadable records (skipped)", ""]
    for u in loaded.unreadable:
        lines.append(f"- `{u.path.name}`: {_one_line(u.reason)}")
    return lines


def _figures_section(figures: list[ReportFigure], report_dir: Path) -> list[str]:
    lines = ["", "## Figures", ""]
    for fig in figures:
        if fig.path is None:
            lines.append(f"- {fig.title}: not drawn — {fig.skipped}")
        else:
            lines.append(f"- [{fig.title}]({fig.path.relative_to(report_dir).as_posix()})")
    return lines


def leaderboard_markdown(summary: pd.DataFrame, facts: SuiteFacts, published: pd.DataFrame,
                         figures: list[ReportFigure], loaded: LoadedRuns, report_dir: Path) -> str:
    statuses = pd.Series([r["status"] for r in loaded.records]).value_counts()
    counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
    header = [
        f"# Leaderboard: {facts.suite}",
        "",
        f"{facts.dataset}, {facts.teacher.model} → {facts.student_model}; {len(summary)} methods, "
        f"{len(loaded.records)} runs ({counts}) read from `{loaded.runs_dir}`"
        + (f"; {len(loaded.unreadable)} unreadable record(s) skipped" if loaded.unreadable else "") + ".",
        f"Ranked by mean final-epoch test accuracy (%): {RANKING_RULE}.",
        "",
    ]
    if facts.warnings:
        header += [f"> **Warning**: {w}." for w in facts.warnings] + [""]
    lines = (header + [_table(summary, facts, published), ""] + _legend(summary, facts)
             + _published_section(published, facts) + _not_ok_section(loaded.records)
             + _unreadable_section(loaded) + _figures_section(figures, report_dir))
    return "\n".join(lines) + "\n"
