"""The report's two CSVs: ``runs.csv`` (every scalar of every record) and ``summary.csv`` (per method).

``runs.csv`` is the raw material for anyone who wants a statistic we do not compute; ``summary.csv``
holds the numbers the leaderboard prints, unrounded, ranked by final-epoch accuracy.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
from kdbench.report.load import lookup
from kdbench.report.stats import clip_interval, estimate, paired_differences, win_rate

#: The two reference points every method is compared against, by label, paired by seed.
BASELINES = ("student_ce", "vanilla_kd")

_FIRST_RUN_COLUMNS = ["label", "method", "seed", "status", "error", "final_acc", "best_acc", "best_epoch"]


def flatten(obj: dict, prefix: str = "") -> dict:
    """Nested dicts become dotted keys (``params.student``); lists (``epochs``) are left out."""
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif not isinstance(value, list):
            out[name] = value
    return out


def runs_table(records: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame([flatten(r) for r in records])
    first = [c for c in _FIRST_RUN_COLUMNS if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(["label", "seed"], kind="stable").reset_index(drop=True)


def group_by_label(records: Iterable[dict]) -> dict[str, list[dict]]:
    """Records per method label, in order of first appearance, each list sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec["label"], []).append(rec)
    return {label: sorted(recs, key=lambda r: r["seed"]) for label, recs in groups.items()}


def final_by_seed(records: Iterable[dict]) -> dict[int, float]:
    """Final accuracy per seed of the runs that finished ok."""
    return {r["seed"]: float(r["final_acc"]) for r in records if r["status"] == "ok"}


def _delta_columns(finals: dict[str, dict[int, float]], label: str, baseline: str) -> dict:
    paired = label != baseline and baseline in finals
    diffs = paired_differences(finals[label], finals[baseline]) if paired else {}
    est = estimate(diffs.values())
    return {
        f"delta_vs_{baseline}_mean": est.mean,
        f"delta_vs_{baseline}_std": est.std,
        f"delta_vs_{baseline}_ci_low": est.low,
        f"delta_vs_{baseline}_ci_high": est.high,
        f"delta_vs_{baseline}_n": est.n,
        f"win_rate_vs_{baseline}": win_rate(diffs.values()),
    }


def _mean_of(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else math.nan


def cost_seconds(rec: dict) -> float | None:
    """What the run costs alone: ``cost_s`` (its own time plus the teacher passes it read, whatever
    group it trained in); records written before lockstep groups have only ``wall_s``, the same thing."""
    value = rec.get("cost_s", rec.get("wall_s"))
    return value if isinstance(value, (int, float)) else None


def _first_of(records: list[dict], *path: str) -> float:
    """A per-method constant (a parameter count): the first record that holds it, ok runs first."""
    for rec in sorted(records, key=lambda r: r["status"] != "ok"):
        value = lookup(rec, *path)
        if isinstance(value, (int, float)):
            return value
    return math.nan


def status_notes(records: Iterable[dict]) -> str:
    """``seeds 1, 2 diverged: <error>`` for the runs that did not finish ok, seeds with the same error together."""
    seeds: dict[tuple[str, str], list[int]] = {}
    for r in records:
        if r["status"] != "ok":
            seeds.setdefault((r["status"], r.get("error") or "no error recorded"), []).append(r["seed"])
    return "; ".join(f"seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))} {status}: {error}"
                     for (status, error), ss in seeds.items())


def summary_table(records: Iterable[dict]) -> pd.DataFrame:
    """One row per method label, ranked by mean final-epoch accuracy (methods with no ok run last, unranked)."""
    groups = group_by_label(records)
    finals = {label: final_by_seed(recs) for label, recs in groups.items()}
    rows = []
    for label, recs in groups.items():
        ok = [r for r in recs if r["status"] == "ok"]
        final = estimate(finals[label].values())
        low, high = clip_interval(final.low, final.high)  # an accuracy interval stays in [0, 100]
        row = {
            "label": label,
            "method": recs[0]["method"],
            "reconstructed": any(r.get("reconstructed") is True for r in recs),
            "seeds_ok": len(ok),
            "seeds_total": len(recs),
            "final_acc_mean": final.mean,
            "final_acc_std": final.std,
            "final_acc_ci_low": low,
            "final_acc_ci_high": high,
            "best_acc_mean": estimate(r["best_acc"] for r in ok).mean,
        }
        for baseline in BASELINES:
            row.update(_delta_columns(finals, label, baseline))
        row.update({
            "cost_s_mean": _mean_of([{"c": cost_seconds(r)} for r in ok], "c"),
            "images_per_s_mean": _mean_of(ok, "images_per_s"),
            "peak_memory_mb_mean": _mean_of(ok, "peak_memory_mb"),
            "extra_trainable_params": _first_of(recs, "params", "extra_trainable"),
            "inference_params": _first_of(recs, "params", "inference"),
            "inference_flops": _first_of(recs, "inference_flops"),
            "kernel_gap_test_mean": _mean_of([r.get("diagnostics") or {} for r in ok], "kernel_gap_test"),
            "status_notes": status_notes(recs),
        })
        rows.append(row)
    df = pd.DataFrame(rows)
    df.insert(0, "rank", df["final_acc_mean"].rank(ascending=False, method="min").astype("Int64"))
    df = df.sort_values(["final_acc_mean", "label"], ascending=[False, True], na_position="last")
    return df.reset_index(drop=True)


def display_name(label: str, reconstructed: bool) -> str:
    """A method built on a reconstruction of its paper carries the flag wherever it is named."""
    return f"{label} (reconstructed)" if reconstructed else label
