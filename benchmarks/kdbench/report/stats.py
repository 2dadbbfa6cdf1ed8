"""The report's statistics as small pure functions, so each number in a table can be checked by hand.

With 3–5 seeds a normal interval is too narrow: intervals use Student's t with n−1 degrees of
freedom. Methods are compared *paired by seed* (same initialisation and data stream), which removes
the seed-to-seed spread that both runs share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from scipy import stats as _scipy_stats
from scipy.optimize import brentq as _brentq

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean of n values with their sample standard deviation and a t-based interval (NaN where undefined)."""

    n: int
    mean: float
    std: float
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_quantile(n: int, level: float = LEVEL) -> float:
    """t_{(1+level)/2, n−1}: the multiplier of s/√n for a two-sided interval from n values."""
    return float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) if n >= 2 else math.nan


def estimate(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """mean ± t_{0.975,n−1}·s/√n; one value has a mean but no spread, none has nothing."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(n, mean, std, t_quantile(n, level) * std / math.sqrt(n))


def paired_differences(method: Mapping[int, float], baseline: Mapping[int, float]) -> dict[int, float]:
    """method − baseline for every seed both have, in seed order."""
    return {s: method[s] - baseline[s] for s in sorted(set(method) & set(baseline))}


def win_rate(differences: Iterable[float]) -> float:
    """Share of paired seeds the method wins: d > 0 counts 1, a tie 0.5, a loss 0 (NaN when none)."""
    ds = list(differences)
    if not ds:
        return math.nan
    return sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in ds) / len(ds)


# ------------------------------------------------------------------------------ tests and verdicts

ALPHA = 0.05
POWER = 0.80
WILCOXON_MIN_SEEDS = 6
MIN_PAIRED_SEEDS = 3


def clip_interval(low: float, high: float, floor: float = 0.0, ceiling: float = 100.0) -> tuple[float, float]:
    """[max(low, floor), min(high, ceiling)]: an accuracy interval never leaves [0, 100] (NaN stays NaN)."""
    return (low if math.isnan(low) else max(low, floor), high if math.isnan(high) else min(high, ceiling))


def binomial_se(acc_pct: float, n_test: int) -> float:
    """100·√(p(1−p)/n) with p = acc/100: the standard error, in points, of an accuracy measured on n images."""
    p = acc_pct / 100
    return 100 * math.sqrt(p * (1 - p) / n_test)


def paired_t_p(differences: Iterable[float]) -> float:
    """Two-sided p of the paired t-test: t = d̄ / (s_d/√n), p = 2·P(T_{n−1} > |t|) (scipy's ttest_rel)."""
    ds = [float(d) for d in differences]
    return float(_scipy_stats.ttest_rel(ds, [0.0] * len(ds)).pvalue)


def wilcoxon_p(differences: Iterable[float]) -> float:
    """Two-sided p of Wilcoxon's signed-rank test on the paired differences (exact for small n, no ties;
    zero differences dropped, as Wilcoxon's original test)."""
    return float(_scipy_stats.wilcoxon([float(d) for d in differences]).pvalue)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values, in their given order (NaN: not tested, left NaN, not counted
    in m): sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, p̃₍ᵢ₎ = min(1, max_{j≤i} (m − j + 1)·p₍ⱼ₎)."""
    ps = list(pvalues)
    tested = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    m, running, out = len(tested), 0.0, [math.nan] * len(ps)
    for j, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level α to detect a true mean difference δ from n pairs whose
    differences have standard deviation σ: with df = n−1, λ = δ/(σ/√n), c = t_{1−α/2,df},
    power = P(T'_{df,λ} > c) + P(T'_{df,λ} < −c), T' the noncentral t; the second term is computed as
    P(T'_{df,−λ} > c), which is the same by symmetry and stays finite where scipy's far tail does not."""
    df, nc = n - 1, abs(effect) / (sd / math.sqrt(n))
    c = float(_scipy_stats.t.ppf(1 - alpha / 2, df))
    return float(_scipy_stats.nct.sf(c, df, nc) + _scipy_stats.nct.sf(c, df, -nc))


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference δ that n paired seeds detect with the given power: the root of
    paired_t_power(δ, σ, n, α) = power (Brent's method; NaN for n < 2 or σ not > 0)."""
    if n < 2 or not sd > 0:
        return math.nan
    high = sd
    while paired_t_power(high, sd, n, alpha) < power:
        high *= 2
    return float(_brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, high))


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER, most: int = 10_000) -> float:
    """The smallest n ≥ 2 with paired_t_power(δ, σ, n, α) ≥ power (NaN when σ is not > 0, δ is 0 or
    more than ``most`` seeds would be needed). Close to, and a little above, the normal approximation
    n ≈ ((z_{1−α/2} + z_power)·σ/δ)²."""
    if not sd > 0 or effect == 0:
        return math.nan
    guess = ((_scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power)) * sd / abs(effect)) ** 2
    n = max(2, int(guess))
    while n <= most and paired_t_power(effect, sd, n, alpha) < power:
        n += 1
    return float(n) if n <= most else math.nan


# ------------------------------------------------------------------- two runs of a suite, unpaired


@dataclass(frozen=True)
class Welch:
    """B − A for two independent samples: the difference of means, its standard error and Welch's df."""

    diff: float
    se: float
    df: float

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """diff ± t_{(1+level)/2, df}·se (the difference itself, of zero width, when se is 0)."""
        if self.se == 0:
            return self.diff, self.diff
        h = float(_scipy_stats.t.ppf((1 + level) / 2, self.df)) * self.se
        return self.diff - h, self.diff + h


def welch(a: Iterable[float], b: Iterable[float]) -> Welch:
    """x̄_B − x̄_A, se = √(s_A²/n_A + s_B²/n_B), Welch–Satterthwaite
    df = se⁴ / ((s_A²/n_A)²/(n_A−1) + (s_B²/n_B)²/(n_B−1)); NaN where a side has fewer than 2 values."""
    ea, eb = estimate(a), estimate(b)
    if ea.n < 2 or eb.n < 2:
        return Welch(eb.mean - ea.mean, math.nan, math.nan)
    va, vb = ea.std ** 2 / ea.n, eb.std ** 2 / eb.n
    se = math.sqrt(va + vb)
    df = se ** 4 / (va ** 2 / (ea.n - 1) + vb ** 2 / (eb.n - 1)) if se > 0 else math.inf
    return Welch(eb.mean - ea.mean, se, df)


def tost_p(w: Welch, margin: float) -> float:
    """Two one-sided tests of |μ_B − μ_A| < m: p = max(P(T_df > (d + m)/se), P(T_df < (d − m)/se));
    p < α is equivalence at level α, the same as the (1 − 2α) interval lying inside (−m, m).
    With se = 0 the difference is known: p is 0 inside the margin, 1 outside; NaN without an se."""
    if math.isnan(w.se):
        return math.nan
    if w.se == 0:
        return 0.0 if abs(w.diff) < margin else 1.0
    lower = _scipy_stats.t.sf((w.diff + margin) / w.se, w.df)
    upper = _scipy_stats.t.cdf((w.diff - margin) / w.se, w.df)
    return float(max(lower, upper))


# ---------------------------------------------------------------------------- several suites at once


def friedman_p(ranks_by_method: Mapping[str, list[float]]) -> tuple[float, float]:
    """Friedman's test over N blocks (suites) and k treatments (methods), from each method's values per
    block: χ²_F = 12N/(k(k+1))·Σⱼ R̄ⱼ² − 3N(k+1) (R̄ⱼ the mean rank; scipy adds a tie correction),
    p = P(χ²_{k−1} > χ²_F). Returns (χ²_F, p)."""
    res = _scipy_stats.friedmanchisquare(*ranks_by_method.values())
    return float(res.statistic), float(res.pvalue)


def nemenyi_cd(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks (Demšar 2006): CD = q_α·√(k(k+1)/(6N)), with
    q_α = q_{1−α}(k, ∞)/√2 from the studentized range (q_0.05 = 2.343 for k = 3, 2.949 for k = 7)."""
    q = float(_scipy_stats.studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n_blocks))
