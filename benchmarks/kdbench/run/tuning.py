"""The choice of each method's trial, and the final cells that run it.

The rule (AlgoPerf's, on a validation split): a trial's score is its final-epoch validation accuracy,
the mean over the tuning seeds; a trial that failed, diverged or has no record on some seed ranks
last; ties go to the lower trial index, so trial 0 (the method's settings) wins every tie. The rule
reads nothing but the trial records, so a worker re-derives the same choice from the records on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdbench.train.cell import RunSpec
from kdbench.train.records import cell_key


@dataclass(frozen=True)
class Chosen:
    trial: int
    score: float | None  # None: every trial ranked last
    defaults_score: float | None  # trial 0's
    cost_s: float  # every trial's cost_s, summed


def trial_score(by_seed: dict[int, dict], seeds: tuple[int, ...]) -> float | None:
    """The mean over ``seeds`` of the final validation accuracy; None unless every seed's trial is ok."""
    accs = [r.get("final_acc") for r in (by_seed.get(s) for s in seeds) if r and r.get("status") == "ok"]
    if len(accs) != len(seeds) or any(a is None for a in accs):
        return None
    return sum(accs) / len(accs)


def by_trial(records: list[dict]) -> dict[str, dict[int, dict[int, dict]]]:
    """Trial records as label -> trial index -> tuning seed -> record."""
    table: dict[str, dict[int, dict[int, dict]]] = {}
    for rec in records:
        label, seed, index = cell_key(rec)
        table.setdefault(label, {}).setdefault(index, {})[seed] = rec
    return table


def trial_count(trials: dict[int, dict[int, dict]]) -> int:
    """A method's number of trials, as its records say (a trial without a record still counts)."""
    return max(r["trial"]["of"] for by_seed in trials.values() for r in by_seed.values())


def select(records: list[dict], seeds: tuple[int, ...]) -> dict[str, Chosen]:
    """Each method label's chosen trial, from its trial records (any order)."""
    out = {}
    for label, trials in by_trial(records).items():
        scores = {k: trial_score(trials.get(k, {}), seeds) for k in range(trial_count(trials))}
        best = min(scores, key=lambda k: (scores[k] is None, -(scores[k] or 0.0), k))
        cost = sum(r.get("cost_s") or 0.0 for by_seed in trials.values() for r in by_seed.values())
        out[label] = Chosen(best, scores[best], scores[0], cost)
    return out


def tuned_specs(specs: list[RunSpec], trials: list[RunSpec], records: list[dict],
                seeds: tuple[int, ...]) -> list[RunSpec]:
    """``specs`` (the suite's cells) at their methods' chosen hyperparameters, each with its
    record's ``tuning``; a method without a trial record runs at trial 0."""
    chosen = select(records, seeds)
    by_trial = {(t.entry.label, t.trial["index"]): t for t in trials}
    out = []
    for s in specs:
        c = chosen.get(s.entry.label, Chosen(0, None, None, 0.0))
        t = by_trial[(s.entry.label, c.trial)]
        dims = t.trial["sampler"]["dimensions"]
        out.append(replace(s, hyperparameters=t.hyperparameters, tuning={
            "trial": c.trial, "trials": t.trial["of"], "seeds": list(seeds), "validation": t.trial["validation"],
            "validation_acc": c.score, "defaults_validation_acc": c.defaults_score, "tuning_cost_s": c.cost_s,
            "chosen": {k: t.hyperparameters[k] for k in dims}, "defaults": {k: s.hyperparameters[k] for k in dims},
        }))
    return out


def choice_line(spec: RunSpec) -> str:
    """What was chosen for ``spec``'s method, for the run's log."""
    t = spec.tuning
    acc = "no trial ended ok" if t["validation_acc"] is None else (
        f"validation {t['validation_acc']:.2f}% (settings {_pct(t['defaults_validation_acc'])})")
    values = ", ".join(f"{k}={v}" for k, v in t["chosen"].items()) or "nothing to tune"
    return f"{spec.entry.label}: trial {t['trial']} of {t['trials']} chosen, {acc}: {values}"


def _pct(x: float | None) -> str:
    return "failed" if x is None else f"{x:.2f}%"
