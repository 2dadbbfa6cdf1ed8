"""Hyperparameter domains that a plugin declares beside its defaults, checked by the registry.

A domain is data, not a checking loop, so every plugin's bad values fail the same way (one line,
before any run) and ``kdbench methods`` can print what each value may be::

    defaults = {"T": 4.0, "rho": 0.25, "level": "stage"}
    domains = {"T": POSITIVE, "rho": Interval(0, 1, open_low=True), "level": OneOf("stage", "block")}

What a domain cannot say (a bound that depends on the dataset) goes in ``check_hyperparameters``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class Domain:
    """The set a hyperparameter's value must lie in."""

    def contains(self, value: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Domain):
    """low ≤ value ≤ high (either end ``None`` for unbounded; ``open_*`` makes an end strict)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return "unbounded" if self.low is None else f"{'>' if self.open_low else '≥'} {low}"
        if self.low is None:
            return f"{'<' if self.open_high else '≤'} {high}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


def _number(x: float | None) -> str:
    """An end as written: an integer in full (``100000000``, not ``1e+08``), a float shortest."""
    return str(x) if isinstance(x, int) else f"{x:g}" if x is not None else ""


@dataclass(frozen=True)
class OneOf(Domain):
    """One of a fixed set of choices (strings, usually)."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class AnyOf(Domain):
    """A value in any of the given domains: ``AnyOf(at_least(1), OneOf("auto"))`` is an integer
    from 1, or the word ``auto``. A value of another type than the default is taken as it is."""

    options: tuple[Domain, ...]

    def __init__(self, *options: Domain) -> None:
        object.__setattr__(self, "options", tuple(options))

    def contains(self, value: Any) -> bool:
        return any(o.contains(value) for o in self.options)

    def __str__(self) -> str:
        return " or ".join(str(o) for o in self.options)


POSITIVE = Interval(0, open_low=True)
NON_NEGATIVE = Interval(0)
UNIT = Interval(0, 1)


def at_least(n: int) -> Interval:
    return Interval(n)
