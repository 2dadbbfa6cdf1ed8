"""Search spaces that a plugin declares beside its defaults, for fair tuning.

A space is data, like a domain: the same for every suite (workload-agnostic, as in AlgoPerf's
external tuning), checked by the registry against the hyperparameter's domain, and turned into a
value by :meth:`Space.scale` from a point of a quasi-random sequence in [0, 1)::

    search_space = {"T": LogUniform(1, 8), "alpha": Uniform(0.1, 1), "rho": Choice(0.1, 0.25, 0.5, 1.0)}

Floats are rounded to 4 significant digits, so a record's hyperparameters read as a person would
write them, and clamped to the range so rounding never leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kdbench.api.domains import OneOf

SIGNIFICANT = 4


def _round(value: float, low: float, high: float) -> float:
    return min(max(float(f"{value:.{SIGNIFICANT}g}"), low), high)


class Space:
    """The values one hyperparameter is tuned over."""

    def scale(self, u: float) -> Any:
        """The value at ``u`` in [0, 1)."""
        raise NotImplementedError

    def extremes(self) -> tuple[Any, ...]:
        """Every value the domain check must accept: both ends of a range, every choice."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why this space is malformed (an empty or reversed range), or None."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Range(Space):
    low: float
    high: float

    def extremes(self) -> tuple[Any, ...]:
        return self.low, self.high

    def problem(self) -> str | None:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (self.low, self.high))
        if not numbers or not self.low < self.high:
            return f"{self} needs finite numbers low < high"
        return None


class LogUniform(_Range):
    """Uniform in log space between ``low`` > 0 and ``high``: for scales (weights, temperatures)."""

    def scale(self, u: float) -> float:
        log_low, log_high = math.log(self.low), math.log(self.high)
        return _round(math.exp(log_low + u * (log_high - log_low)), self.low, self.high)

    def problem(self) -> str | None:
        return super().problem() or (f"{self} needs low > 0" if self.low <= 0 else None)

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


class Uniform(_Range):
    """Uniform between ``low`` and ``high``: for mixing weights and fractions."""

    def scale(self, u: float) -> float:
        return _round(self.low + u * (self.high - self.low), self.low, self.high)

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


class IntRange(_Range):
    """An integer from ``low`` to ``high``, both included, each equally likely."""

    def scale(self, u: float) -> int:
        return min(int(self.low + math.floor(u * (self.high - self.low + 1))), int(self.high))

    def problem(self) -> str | None:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        return super().problem() or (None if ints else f"{self} needs integer ends")

    def __str__(self) -> str:
        return f"integer {self.low}..{self.high}"


@dataclass(frozen=True, init=False)
class Choice(OneOf, Space):
    """One of a few values, each equally likely: for sizes and discrete settings."""

    def scale(self, u: float) -> Any:
        return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]

    def extremes(self) -> tuple[Any, ...]:
        return self.choices

    def problem(self) -> str | None:
        return None if self.choices else "Choice() needs at least one option"

    def __str__(self) -> str:
        return "one of " + ", ".join(f"{o:g}" if isinstance(o, float) else repr(o) for o in self.choices)
