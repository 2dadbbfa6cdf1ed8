"""What the records say about the protocol: dataset, pair, teacher, budget, seeds, environment.

A results folder can mix runs from different budgets or teachers (an edited suite, a copied file);
the report still groups by label but must say so, so every fact is taken as the most common value
and each disagreement becomes a warning line.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from kdbench.report.load import lookup

ENVIRONMENT_KEYS = ("device", "device_name", "cpu_model", "cpu_count", "torch", "threads", "deterministic")


@dataclass(frozen=True)
class Teacher:
    model: str | None
    acc: float | None
    sha256: str | None
    n_train: int | None
    checkpoint: str | None = None  # the user's checkpoint, when it was not trained in the suite


@dataclass(frozen=True)
class SuiteFacts:
    suite: str
    dataset: str | None
    n_train: int | None
    n_test: int | None
    data_sha256: str | None
    student_model: str | None
    teacher: Teacher
    seeds: list[int]
    train: dict | None
    environment: dict[str, list[Any]]
    peak_memory_kinds: list[str]
    warnings: list[str]


def _counts(records: list[dict], getter: Callable[[dict], Any]) -> list[tuple[Any, int]]:
    """Distinct values (None left out) with how many records hold each, most common first."""
    counter: Counter = Counter()
    values = {}
    for rec in records:
        value = getter(rec)
        if value is None:
            continue
        key = json.dumps(value, sort_keys=True)
        counter[key] += 1
        values[key] = value
    return [(values[k], n) for k, n in counter.most_common()]


def _most_common(records: list[dict], getter: Callable[[dict], Any], what: str, warnings: list[str],
                 show: Callable[[Any], str] = str) -> Any:
    counts = _counts(records, getter)
    if len(counts) > 1:
        parts = "; ".join(f"{show(v)} ({n} records)" for v, n in counts)
        warnings.append(f"the records disagree on the {what}: {parts}")
    return counts[0][0] if counts else None


def describe_budget(train: dict | None) -> str:
    """``3 epochs, batch 128, SGD (lr 0.05, momentum 0.9, weight decay 0.0005, Nesterov), cosine schedule``
    or ``…, lr ×0.1 at epochs 150, 180, 210``."""
    if not train:
        return "unknown (no config.train in the records)"
    opt, sched = train.get("optimizer", {}), train.get("schedule", {})
    name = str(opt.get("name", "?"))
    opt_parts = [f"lr {opt['lr']}"] if "lr" in opt else []
    if name == "sgd" and "momentum" in opt:
        opt_parts.append(f"momentum {opt['momentum']}")
    if "weight_decay" in opt:
        opt_parts.append(f"weight decay {opt['weight_decay']}")
    if opt.get("nesterov"):
        opt_parts.append("Nesterov")
    schedule = f"{sched.get('name', 'unknown')} schedule"
    if sched.get("name") == "multistep":
        steps = ", ".join(str(m) for m in sched.get("milestones", []))
        schedule = f"lr ×{sched.get('gamma')} at epochs {steps}"
    return (f"{train.get('epochs')} epochs, batch {train.get('batch_size')}, "
            f"{name.upper() if name == 'sgd' else name} ({', '.join(opt_parts)}), {schedule}")


def suite_facts(suite: str, records: list[dict]) -> SuiteFacts:
    warnings: list[str] = []
    with_teacher = [r for r in records if r.get("teacher_sha256")]
    teacher_sha = _most_common(with_teacher, lambda r: r.get("teacher_sha256"), "teacher (sha256)", warnings)
    of_teacher = [r for r in with_teacher if r.get("teacher_sha256") == teacher_sha]
    teacher = Teacher(
        model=_most_common(records, lambda r: r.get("teacher_model"), "teacher model", warnings),
        acc=_counts(of_teacher, lambda r: r.get("teacher_acc"))[0][0] if of_teacher else None,
        sha256=teacher_sha,
        n_train=next((r["teacher_n_train"] for r in of_teacher if r.get("teacher_n_train") is not None), None),
        checkpoint=next((r["teacher_checkpoint"] for r in of_teacher if r.get("teacher_checkpoint")), None),
    )
    train = _most_common(records, lambda r: lookup(r, "config", "train"), "training budget (config.train)",
                         warnings, describe_budget)
    environment = {key: [v for v, _ in _counts(records, lambda r, k=key: lookup(r, "environment", k))]
                   for key in ENVIRONMENT_KEYS}
    for key, values in environment.items():
        if len(values) > 1:
            warnings.append(f"the runs come from different environments ({key}: {', '.join(map(str, values))})")
    return SuiteFacts(
        suite=suite,
        dataset=_most_common(records, lambda r: lookup(r, "dataset", "name"), "dataset", warnings),
        n_train=_most_common(records, lambda r: lookup(r, "dataset", "n_train"), "training images", warnings),
        n_test=_most_common(records, lambda r: lookup(r, "dataset", "n_test"), "test images", warnings),
        data_sha256=_most_common(records, lambda r: lookup(r, "dataset", "sha256"), "data (sha256)", warnings),
        student_model=_most_common(records, lambda r: r.get("student_model"), "student model", warnings),
        teacher=teacher,
        seeds=sorted({r["seed"] for r in records}),
        train=train,
        environment=environment,
        peak_memory_kinds=[v for v, _ in _counts(records, lambda r: r.get("peak_memory_kind"))],
        warnings=warnings,
    )
