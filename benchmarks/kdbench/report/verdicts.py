"""Verdicts with stated confidence: every method against each baseline, tested, corrected, and ranked no
more finely than those tests allow.

The family is every comparison the leaderboard shows: each method against ``student_ce`` and against
``vanilla_kd``, the two baselines against each other once. Each is a paired test over the seeds both
finished ok (stats.paired_t_p; with 6 seeds or more Wilcoxon's signed-rank test too, and the larger p
counts), its p Holm-adjusted over the comparisons tested. A comparison with fewer than 3 paired seeds,
or whose difference is the same on every seed (no spread to test against), is not tested: it is
"not separated" with that reason. For one not separated, the smallest difference these seeds detect at
80% power and the seeds a stated effect needs are computed from its observed spread at level α/m
(Holm's first, strictest step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from kdbench.report.stats import (ALPHA, MIN_PAIRED_SEEDS, WILCOXON_MIN_SEEDS, detectable_difference, estimate, holm,
                                  paired_differences, paired_t_p, seeds_needed, wilcoxon_p)
from kdbench.report.tables import BASELINES

EFFECT = 0.5  # points: the effect whose seeds-needed a "not separated" comparison states (kdbench report --effect)
BETTER, WORSE, NOT_SEPARATED = "better", "worse", "not separated"
MIRROR = {BETTER: WORSE, WORSE: BETTER, NOT_SEPARATED: NOT_SEPARATED}


@dataclass(frozen=True)
class Comparison:
    """``label`` − ``baseline``, paired by seed, and what the family's tests say of it."""

    label: str
    baseline: str
    n: int
    mean: float
    low: float
    high: float
    sd: float
    p_t: float
    p_wilcoxon: float  # NaN below WILCOXON_MIN_SEEDS
    p_adjusted: float  # NaN: not tested (see reason)
    verdict: str
    reason: str  # why not tested; empty when tested
    detectable: float  # smallest true difference detected at 80% power (NaN when separated or untested)
    seeds_needed: float  # seeds to detect ±effect at 80% power (same)


def family(finals: dict[str, dict[int, float]]) -> list[tuple[str, str]]:
    """(label, baseline) for every method against every baseline present, a pair of baselines once."""
    pairs = []
    for baseline in (b for b in BASELINES if b in finals):
        pairs += [(label, baseline) for label in finals
                  if label != baseline and (baseline, label) not in pairs]
    return pairs


def _untested_reason(n: int, sd: float) -> str:
    if n < MIN_PAIRED_SEEDS:
        return f"{n} paired seed{'' if n == 1 else 's'} (a test needs {MIN_PAIRED_SEEDS})"
    if not sd > 0:
        return "zero variance: the difference is the same on every seed"
    return ""


def _tested(diffs: list[float]) -> tuple[float, float, float]:
    """(p of the t-test, p of Wilcoxon or NaN, the p that counts: the larger)."""
    p_t = paired_t_p(diffs)
    p_w = wilcoxon_p(diffs) if len(diffs) >= WILCOXON_MIN_SEEDS else math.nan
    return p_t, p_w, max(p_t, p_w) if not math.isnan(p_w) else p_t


def compare_family(finals: dict[str, dict[int, float]], effect: float = EFFECT,
                   alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons of ``family(finals)`` with Holm-adjusted verdicts at level α."""
    rows = []
    for label, baseline in family(finals):
        diffs = list(paired_differences(finals[label], finals[baseline]).values())
        est = estimate(diffs)
        reason = _untested_reason(est.n, est.std)
        p_t, p_w, p = _tested(diffs) if not reason else (math.nan, math.nan, math.nan)
        rows.append((label, baseline, est, reason, p_t, p_w, p))
    adjusted = holm([r[-1] for r in rows])
    m = max(1, sum(not math.isnan(p) for p in adjusted))
    out = []
    for (label, baseline, est, reason, p_t, p_w, _), p_adj in zip(rows, adjusted):
        separated = p_adj < alpha
        verdict = (BETTER if est.mean > 0 else WORSE) if separated else NOT_SEPARATED
        power_of = not separated and not reason
        out.append(Comparison(
            label, baseline, est.n, est.mean, est.low, est.high, est.std, p_t, p_w, p_adj, verdict, reason,
            detectable_difference(est.std, est.n, alpha / m) if power_of else math.nan,
            seeds_needed(effect, est.std, alpha / m) if power_of else math.nan))
    return out


def verdict_of(comparisons: list[Comparison], label: str, baseline: str) -> Comparison | None:
    """The comparison of ``label`` with ``baseline``, mirrored (sign and verdict) when the family holds it
    the other way round; None when there is none."""
    for c in comparisons:
        if (c.label, c.baseline) == (label, baseline):
            return c
        if (c.label, c.baseline) == (baseline, label):
            return Comparison(label, baseline, c.n, -c.mean, -c.high, -c.low, c.sd, c.p_t, c.p_wilcoxon,
                              c.p_adjusted, MIRROR[c.verdict], c.reason, c.detectable, c.seeds_needed)
    return None


def rank_ranges(order: list[str], comparisons: list[Comparison]) -> dict[str, tuple[int, int]]:
    """For the ranked labels (best mean first), the ranks the tests allow: from 1 + the number of methods
    separated above it to N − the number separated below it. Methods no test separates share ranks."""
    above = {label: 0 for label in order}
    below = dict(above)
    for c in comparisons:
        if c.verdict == NOT_SEPARATED or c.label not in above or c.baseline not in above:
            continue
        winner, loser = (c.label, c.baseline) if c.verdict == BETTER else (c.baseline, c.label)
        above[loser] += 1
        below[winner] += 1
    return {label: (1 + above[label], len(order) - below[label]) for label in order}


def format_rank(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}–{high}"


def comparisons_table(comparisons: list[Comparison]) -> pd.DataFrame:
    """``comparisons.csv``: one row per comparison, unrounded."""
    return pd.DataFrame([c.__dict__ for c in comparisons],
                        columns=list(Comparison.__dataclass_fields__))


def verdict_text(c: Comparison | None) -> str:
    """The leaderboard's cell: ``better (p 0.012)``, ``not separated (p 0.31)``, ``not separated: 2 paired
    seeds (…)``; p is Holm-adjusted."""
    if c is None:
        return "no paired seed"
    if c.reason:
        return f"{NOT_SEPARATED}: {c.reason}"
    return f"{c.verdict} (p {c.p_adjusted:.3g})"


def with_verdicts(summary: pd.DataFrame, comparisons: list[Comparison]) -> pd.DataFrame:
    """The summary with rank_low/rank_high (the ranks the tests allow) and, per baseline, the verdict,
    its cell text and the adjusted p."""
    ranked = summary[summary["rank"].notna()]["label"].tolist()
    ranges = rank_ranges(ranked, comparisons)
    out = summary.copy()
    out["rank_low"] = [ranges[x][0] if x in ranges else pd.NA for x in out["label"]]
    out["rank_high"] = [ranges[x][1] if x in ranges else pd.NA for x in out["label"]]
    for b in BASELINES:
        found = [verdict_of(comparisons, x, b) if x != b else None for x in out["label"]]
        out[f"verdict_vs_{b}"] = [c.verdict if c else "" for c in found]
        out[f"verdict_text_vs_{b}"] = ["(baseline)" if x == b else verdict_text(c) for x, c in zip(out["label"], found)]
        out[f"p_adjusted_vs_{b}"] = [c.p_adjusted if c else math.nan for c in found]
    return out
