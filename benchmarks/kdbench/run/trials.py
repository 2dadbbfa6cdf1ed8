"""A tuned suite's trials: for each method, trial 0 at its settings and trials 1… at quasi-random
points of its search space, on each tuning seed.

The points come from a scrambled Halton sequence (``scipy.stats.qmc``; Halton has no power-of-two
rule, unlike Sobol), with the scramble seed recorded, so a method's trials are the same on every
machine and in every worker. A hyperparameter the suite fixes is not tuned, nor is an entry with
``tune: false``; a method left with nothing to tune has one trial. Each point is checked like a
suite's own setting, at plan time, so a bad one fails before anything is written.
"""

from __future__ import annotations

from typing import Any

from kdbench.api.errors import ConfigError
from kdbench.api.method import Task
from kdbench.api.registry import resolve_hyperparameters
from kdbench.config.tuning import SAMPLER_SEED, TuningConfig
from kdbench.train.cell import RunSpec
from scipy.stats import qmc


def tuned_dimensions(spec: RunSpec) -> list[str]:
    """The hyperparameters a method's trials vary, in its search space's order."""
    if not spec.entry.tune:
        return []
    return [k for k in spec.method_cls.search_space if k not in spec.entry.overrides]


def trial_points(tuning: TuningConfig, spec: RunSpec, task: Task) -> list[dict[str, Any]]:
    """The resolved hyperparameters of each trial of ``spec``'s method: its settings first."""
    dims = tuned_dimensions(spec)
    if not dims:
        return [spec.hyperparameters]
    space, entry = spec.method_cls.search_space, spec.entry
    points = qmc.Halton(d=len(dims), scramble=True, seed=SAMPLER_SEED).random(tuning.trials - 1)
    out = [spec.hyperparameters]
    for k, row in enumerate(points, start=1):
        sampled = {name: space[name].scale(float(u)) for name, u in zip(dims, row)}
        try:
            out.append(resolve_hyperparameters(entry.method, {**entry.overrides, **sampled}, task))
        except ConfigError as exc:
            raise ConfigError(f"{entry.label} trial {k} of its search space ({sampled}): {exc}") from None
    return out


def trial_specs(tuning: TuningConfig, specs: list[RunSpec], task: Task) -> list[RunSpec]:
    """Every trial cell: for each tuning seed, each method's trials, in plan order (a seed's trials
    are one lockstep group)."""
    first: dict[str, RunSpec] = {}
    for s in specs:
        first.setdefault(s.entry.label, s)
    planned = {label: trial_points(tuning, s, task) for label, s in first.items()}
    validation = tuning.validation.identity()
    return [
        RunSpec(s.entry, s.method_cls, hp, seed, trial={
            "index": k, "of": len(planned[label]), "sampler": tuning.sampler(tuned_dimensions(s)),
            "validation": validation,
        })
        for seed in tuning.seeds for label, s in first.items() for k, hp in enumerate(planned[label])
    ]
