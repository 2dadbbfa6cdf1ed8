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
    on both sides for each seed both sides hold. A value that is NaN on both sides counts as equal."""
    runs_a, runs_b = _by_run(a), _by_run(b)
    labels = list(dict.fromkeys([k[0] for k in runs_a] + [k[0] for k in runs_b]))
    gaps = []
    for label in labels:
        seeds, values, loss, rel, where, acc = 0, 0, 0.0, 0.0, "", 0.0
        for (lab, seed), va in sorted(runs_a.items(), key=lambda kv: kv[0][1]):
            vb = runs_b.get((lab, seed))
            if lab != label or vb is None or not (va.keys() & vb.keys()):
                continue
            seeds += 1
            for epoch, name in sorted(va.keys() & vb.keys(), key=lambda k: (k[0] or 0, k[1])):
                x, y = va[(epoch, name)], vb[(epoch, name)]
                values += 1
                gap = 0.0 if (math.isnan(x) and math.isnan(y)) else abs(y - x)
                if math.isnan(gap):
                    gap = math.inf
                if name == "test_acc":
                    acc = max(acc, gap)
                elif gap > loss:
                    loss, rel = gap, gap / abs(x) if x else math.inf
                    where = f"seed {seed}, epoch {epoch}, `{name}`"
        gaps.append(CurveGap(label, seeds, values, loss, rel, where, acc))
    return gaps


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
