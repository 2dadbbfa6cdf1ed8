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
from kdbench.report.stats import ALPHA, MIN_PAIRED_SEEDS, WILCOXON_MIN_SEEDS, binomial_se
from kdbench.report.tables import BASELINES, display_name
from kdbench.report.verdicts import Comparison, format_rank, verdict_text

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


def _rank(s: pd.Series) -> str:
    return format_rank(int(s["rank_low"]), int(s["rank_high"])) if not pd.isna(s["rank_low"]) else "–"


def _final(s: pd.Series) -> str:
    """``83.79 [82.22, 85.37]``: the mean with its 95% interval, clipped to [0, 100]."""
    if not _ok(s["final_acc_mean"]):
        return "–"
    low, high = s["final_acc_ci_low"], s["final_acc_ci_high"]
    return _f(s["final_acc_mean"]) + (f" [{_f(low)}, {_f(high)}]" if _ok(low) else "")


def _teacher_row(columns: list[str], facts: SuiteFacts, cells: dict) -> dict:
    row = {c: "" for c in columns}
    row.update({"rank": "–", "method": f"teacher: {facts.teacher.model}", **cells})
    return row


def _main_table(summary: pd.DataFrame, facts: SuiteFacts) -> str:
    """At most 8 columns: rank range, method, accuracy, gain over student_ce, the two verdicts, seeds, cost."""
    rows = [{
        "rank": _rank(s),
        "method": display_name(s["label"], bool(s["reconstructed"])),
        "final acc % [95% CI]": _final(s),
        f"gain over {BASELINES[0]} [95% CI]": _delta(s, BASELINES[0]),
        **{f"verdict vs {b}": s[f"verdict_text_vs_{b}"] for b in BASELINES},
        "seeds ok/total": f"{s['seeds_ok']}/{s['seeds_total']}",
        "cost s (alone)": _f(s["cost_s_mean"], 1),
    } for _, s in summary.iterrows()]
    table = pd.DataFrame(rows)
    t = facts.teacher
    teacher = _teacher_row(list(table.columns), facts, {
        "final acc % [95% CI]": _f(t.acc) if t.acc is not None else "no teacher run"})
    table = pd.concat([pd.DataFrame([teacher]), table], ignore_index=True)
    return table.to_markdown(index=False, disable_numparse=True)


def _p(x) -> str:
    return f"{x:.3g}" if _ok(x) else "–"


def _comparisons_table(comparisons: list[Comparison], summary: pd.DataFrame, effect: float) -> str:
    names = dict(zip(summary["label"], (display_name(x, bool(r)) for x, r in zip(summary["label"],
                                                                              summary["reconstructed"]))))
    rows = [{
        "method": names.get(c.label, c.label),
        "vs": c.baseline,
        "paired seeds": str(c.n),
        "Δ [95% CI]": (f"{_f(c.mean, sign=True)} [{_f(c.low, sign=True)}, {_f(c.high, sign=True)}]"
                       if _ok(c.low) else _f(c.mean, sign=True)),
        "sd of Δ": _f(c.sd),
        "p (t)": _p(c.p_t),
        "p (Wilcoxon)": _p(c.p_wilcoxon),
        "p (Holm)": _p(c.p_adjusted),
        "verdict": verdict_text(c),
        "detectable Δ (80% power)": _f(c.detectable),
        f"seeds for ±{effect:g}": _count(c.seeds_needed),
    } for c in comparisons]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "No comparison."


def _details_table(summary: pd.DataFrame, facts: SuiteFacts, published: pd.DataFrame) -> str:
    """Every other number per method: nothing the leaderboard showed before is lost."""
    rows = []
    for _, s in summary.iterrows():
        row = {
            "rank": _rank(s),
            "method": display_name(s["label"], bool(s["reconstructed"])),
            "final acc % (mean ± std)": _f(s["final_acc_mean"]) + (
                f" ± {_f(s['final_acc_std'])}" if _ok(s["final_acc_std"]) else ""),
            "best-epoch acc % (not ranked)": _f(s["best_acc_mean"]),
            f"Δ vs {BASELINES[1]} [95% CI]": _delta(s, BASELINES[1]),
            **{f"wins vs {b}": _wins(s, b) for b in BASELINES},
            "status": _cell(s["status_notes"], NOTE_WIDTH) if s["status_notes"] else "ok",
            "img/s": _f(s["images_per_s_mean"], 0),
            "peak MiB": _f(s["peak_memory_mb_mean"], 0),
            "extra params": _count(s["extra_trainable_params"]),
            "inference params": _count(s["inference_params"]),
            "inference FLOPs": _flops(s["inference_flops"]),
            "kernel gap": _f(s["kernel_gap_test_mean"], 3),
        }
        if not published.empty:
            row["paper (epoch)"], row["Δ to paper"] = _paper_cells(published, s["label"], s["final_acc_mean"])
        rows.append(row)
    table = pd.DataFrame(rows)
    t = facts.teacher
    teacher = _teacher_row(list(table.columns), facts, {
        "final acc % (mean ± std)": _f(t.acc) if t.acc is not None else "no teacher run",
        "status": f"sha256 {t.sha256[:12]}" if t.sha256 else "no method used a teacher"})
    if not published.empty and t.acc is not None:
        teacher["paper (epoch)"], teacher["Δ to paper"] = _paper_cells(published, "teacher", t.acc)
    table = pd.concat([pd.DataFrame([teacher]), table], ignore_index=True)
    return table.to_markdown(index=False, disable_numparse=True)


def _environment(facts: SuiteFacts) -> str:
    """The device and the machine: CPU bits hold per processor model and thread count, so both are
    named (the processor only where the records hold it; older records do not)."""
    env = {k: ", ".join(map(str, v)) if v else "unknown" for k, v in facts.environment.items()}
    memory = ", ".join(facts.peak_memory_kinds) or "unknown"
    machine = (f"; processor {env['cpu_model']}, {env['cpu_count']} logical CPUs"
               if facts.environment.get("cpu_model") else "")
    threads = f"{env['threads']} thread{'' if env['threads'] == '1' else 's'}"
    return (f"{env['device']} ({env['device_name']}{machine}), torch {env['torch']}, {threads} per cell, "
            f"deterministic: {env['deterministic']}; peak memory measured as {memory}")


def _dataset(facts: SuiteFacts) -> str:
    teacher_n = (f"trained on {_count(facts.teacher.n_train)} (teacher_n_train)" if facts.teacher.n_train is not None
                 else f"came from the checkpoint {facts.teacher.checkpoint}, trained outside the suite"
                 if facts.teacher.checkpoint else
                 "trained on an unrecorded number of images (no teacher_n_train in the records)")
    sha = f" (sha256 {facts.data_sha256[:12]}…)" if facts.data_sha256 else ""
    return (f"{facts.dataset}{sha}: students train on {_count(facts.n_train)} images (n_train) and are tested on "
            f"{_count(facts.n_test)} (n_test); the teacher {teacher_n}")


def _sampling(summary: pd.DataFrame, facts: SuiteFacts) -> str:
    """One test image in points, and the binomial standard error at the accuracies observed."""
    if not facts.n_test:
        return "unknown (no dataset.n_test in the records)."
    means = summary["final_acc_mean"].dropna()
    if means.empty:
        return f"one test image is 100/{facts.n_test:,} = {100 / facts.n_test:.3g} points."
    lo, hi = sorted((binomial_se(means.min(), facts.n_test), binomial_se(means.max(), facts.n_test)))
    se = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"
    return (f"one test image is 100/{facts.n_test:,} = {100 / facts.n_test:.3g} points; the binomial standard "
            f"error 100·√(p(1−p)/n_test) of an accuracy measured on this test set is {se} points at the means "
            f"observed ({_f(means.min())}–{_f(means.max())}%), the noise of one run that no seed averages away.")


def _legend(summary: pd.DataFrame, facts: SuiteFacts, tested: int, effect: float) -> list[str]:
    t = facts.teacher
    teacher = (f"{t.model}, {_f(t.acc)}% test accuracy, sha256 `{t.sha256}`" if t.sha256
               else f"{t.model}, not used by any run here")
    lines = [
        "## Legend",
        "",
        f"- **Protocol**: {RANKING_RULE}. Mean and interval are over the seeds that finished ok.",
        f"- **Verdict**: each method against {BASELINES[0]} and against {BASELINES[1]}, by a paired t-test over "
        f"seeds (with {WILCOXON_MIN_SEEDS} seeds or more also Wilcoxon's signed-rank test; the larger p counts), "
        f"p Holm-adjusted over the {tested} comparison(s) tested in this table; **better** or **worse** when the "
        f"adjusted p < {ALPHA:g}, else **not separated**.",
        f"- A comparison with fewer than {MIN_PAIRED_SEEDS} paired seeds, or whose difference is the same on every "
        "seed, is not tested and is not separated, with the reason. For one not separated the Comparisons table "
        f"gives the smallest difference these seeds would detect at 80% power and the seeds needed to detect "
        f"±{effect:g} points (level α/m, from the observed sd of Δ).",
        "- **Rank**: the ranks the tests allow, from 1 + the methods separated above to N − the methods separated "
        "below; methods no test separates share ranks (\"1–3\"). Rows are ordered by mean.",
        "- **95% CI**: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (Student's t, s the sample std over seeds), clipped to [0, 100].",
        f"- **Test-set sampling error**: {_sampling(summary, facts)}",
        f"- **gain over {BASELINES[0]} / Δ vs {BASELINES[1]}**: paired by seed, over the seeds where both runs "
        "finished ok: the mean of the per-seed differences (percentage points) with its 95% t-interval. "
        "**wins**: seeds won out of paired seeds (a tie counts ½).",
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
                         figures: list[ReportFigure], loaded: LoadedRuns, report_dir: Path,
                         comparisons: list[Comparison], effect: float) -> str:
    statuses = pd.Series([r["status"] for r in loaded.records]).value_counts()
    counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
    header = [
        f"# Leaderboard: {facts.suite}",
        "",
        f"{facts.dataset}, {facts.teacher.model} → {facts.student_model}; {len(summary)} methods, "
        f"{len(loaded.records)} runs ({counts}) read from `{loaded.runs_dir}`"
        + (f"; {len(loaded.unreadable)} unreadable record(s) skipped" if loaded.unreadable else "") + ".",
        f"Ordered by mean final-epoch test accuracy (%): {RANKING_RULE}. Verdicts and ranks are from paired "
        "tests corrected for the whole table (Legend).",
        "",
    ]
    if any(isinstance(r.get("tuning"), dict) for r in loaded.records):
        header[-1:] = ["**Tuned suite**: every number and verdict here is over the final cells only (each method's "
                       "chosen settings on the suite's seeds); the trials that chose them are in the Tuning "
                       "section below.", ""]
    if facts.warnings:
        header += [f"> **Warning**: {w}." for w in facts.warnings] + [""]
    tested = sum(not c.reason for c in comparisons)
    lines = (header + [_main_table(summary, facts), ""] + _legend(summary, facts, tested, effect)
             + ["", "## Comparisons", "", _comparisons_table(comparisons, summary, effect),
                "", "## Details", "", _details_table(summary, facts, published)]
             + _published_section(published, facts) + _not_ok_section(loaded.records)
             + _unreadable_section(loaded) + _figures_section(figures, report_dir))
    return "\n".join(lines) + "\n"
