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
