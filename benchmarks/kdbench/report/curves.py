"""How far apart two runs' training curves are, seed by seed: the check for a rewrite of a plugin.

A rewrite that only reorders float arithmetic changes no value, but it can change bits, and SGD
carries a rounding difference forward from step to step. Comparing the per-epoch losses and test
accuracies of the same (method, seed) on both sides turns "equal up to rounding" into a printed
number. On one processor model at one thread count an unchanged method gives 0 (the same bits);
across machines the bits differ anyway, and the accuracy test of :mod:`kdbench.report.compare` is
the one to read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CurveGap:
    """The largest per-epoch differences B − A of one method over the seeds both sides ran."""

    label: str
    seeds: int  # seeds with epochs on both sides
    values: int  # per-epoch values compared (loss terms and test accuracy)
    loss: float  # the largest |B − A| of a per-epoch loss term
    loss_relative: float  # that difference over |A|
    loss_where: str  # "seed 0, epoch 2, `ce`"
    accuracy: float  # the largest |B − A| of a per-epoch test accuracy, in points

    @property
    def equal(self) -> bool:
        return self.seeds > 0 and self.loss == 0 and self.accuracy == 0


def epoch_values(record: dict) -> dict[tuple[int, str], float]:
    """(epoch, name) → value for every loss term (``total`` too) and the test accuracy of each epoch."""
    out: dict[tuple[int, str], float] = {}
    for entry in record.get("epochs") or []:
        epoch = entry.get("epoch")
        for term, value in (entry.get("loss") or {}).items():
            if isinstance(value, (int, float)):
                out[(epoch, term)] = float(value)
        if isinstance(entry.get("test_acc"), (int, float)):
            out[(epoch, "test_acc")] = float(entry["test_acc"])
    return out


def _by_run(records: list[dict]) -> dict[tuple[str, int], dict[tuple[int, str], float]]:
    return {(r["label"], r["seed"]): epoch_values(r) for r in records}


def curve_gaps(a: list[dict], b: list[dict]) -> list[CurveGap]:
    """One :class:`CurveGap` per method label of A (then of B), over the (epoch, value) pairs present
    on both sides for each seed both sides hold."""
    runs_a, runs_b = _by_run(a), _by_run(b)
    labels = list(dict.fromkeys([k[0] for k in runs_a] + [k[0] for k in runs_b]))
    paired = sorted((seed, label, va, runs_b[(label, seed)]) for (label, seed), va in runs_a.items()
                    if va.keys() & runs_b.get((label, seed), {}).keys())
    return [_gap(label, [(seed, va, vb) for seed, lab, va, vb in paired if lab == label]) for label in labels]


def _difference(x: float, y: float) -> float:
    """|y − x|; 0 where both are NaN (the same divergence), infinite where only one is."""
    if math.isnan(x) or math.isnan(y):
        return 0.0 if math.isnan(x) and math.isnan(y) else math.inf
    return abs(y - x)


def _gap(label: str, seeds: list[tuple[int, dict, dict]]) -> CurveGap:
    values, loss, relative, where, accuracy = 0, 0.0, 0.0, "", 0.0
    for seed, va, vb in seeds:
        for epoch, name in sorted(va.keys() & vb.keys(), key=lambda k: (k[0] or 0, k[1])):
            x, gap = va[(epoch, name)], _difference(va[(epoch, name)], vb[(epoch, name)])
            values += 1
            if name == "test_acc":
                accuracy = max(accuracy, gap)
            elif gap > loss:
                loss, relative = gap, gap / abs(x) if x else math.inf
                where = f"seed {seed}, epoch {epoch}, `{name}`"
    return CurveGap(label, len(seeds), values, loss, relative, where, accuracy)


def curves_table(gaps: list[CurveGap]) -> list[dict]:
    """The rows ``kdbench compare`` prints."""
    rows = []
    for g in gaps:
        if not g.seeds:
            rows.append({"method": g.label, "seeds": "0", "largest loss gap": "–", "where": "no seed on both sides",
                         "largest accuracy gap": "–"})
            continue
        rows.append({"method": g.label, "seeds": str(g.seeds),
                     "largest loss gap": "0 (the same bits)" if g.loss == 0 else f"{g.loss:.3g} (relative {g.loss_relative:.2g})",
                     "where": g.loss_where or "–", "largest accuracy gap": f"{g.accuracy:.3g}"})
    return rows
