"""The run matrix: every (method, seed) cell of a suite, each ending in one honest JSON record.

Guarantees:
- all input is validated before the first record is written (unknown method, bad hyperparameter,
  missing data, unavailable device): a bad invocation leaves ``results/`` untouched;
- paired runs: for a seed, every method's student starts from the same initialisation and sees the
  same batches in the same order with the same augmentation;
- lockstep: the pending cells of a seed train as one group on one data stream, the teacher running
  once per batch for all of them; a cell's record is bitwise what it would be trained alone
  (``lockstep=False``), and its cost is what it would cost alone;
- idempotent: a cell whose record exists with the same ``config_hash`` (and status ``ok`` or
  ``diverged``) is skipped; ``failed`` cells are retried;
- nothing lost: each epoch ends with a checkpoint per cell, and an interrupted group resumes every
  unfinished cell from its own; a NaN loss ends a cell as ``diverged``; an exception ends it as
  ``failed`` with the error, and the others go on;
- shareable: a cell runs under its claim, so processes sharing a results folder (two runs, or the
  workers of an executor, see :mod:`kdbench.execute.driver`) never run one twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from kdbench.api.method import Task
from kdbench.api.paths import check_writable_folder, under
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.config.hashing import training_config
from kdbench.config.sources import plugin_sources_sha256
from kdbench.config.suite import MethodEntry, SuiteConfig, check_seeds, check_tuning_seeds
from kdbench.data.datasets import (
    DATASETS, TRAIN_IMAGES, Dataset, DatasetSpec, head, load_dataset, steps_per_epoch,
)
from kdbench.data.validation import hold_out
from kdbench.models.pair import build_student, build_teacher, check_taps, model_identity
from kdbench.run import claims
from kdbench.run.request import RunRequest
from kdbench.run.trials import trial_specs
from kdbench.train.cell import RunSpec
from kdbench.train.environment import resolve_device
from kdbench.train.teacher import TeacherInfo, checkpoint_state, load_checkpoint


def plan(
    suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None, spec: DatasetSpec | None = None,
    n_train: int | None = None,
) -> list[RunSpec]:
    """The cells to run, validated: every method registered, every hyperparameter known and checked
    against the data (the dataset ``spec``; default: the suite's built-in dataset) and the budget
    (``n_train`` training images; default: what the suite and the dataset say)."""
    entries = list(suite.methods)
    if methods:
        known = {e.label for e in entries} | {e.method for e in entries}
        for m in methods:
            if m not in known:
                get_method(m)  # neither a suite label nor registered: ConfigError naming the registered
                entries.append(MethodEntry(m, m))
        entries = [e for e in entries if e.label in methods or e.method in methods]
    if spec is None and isinstance(suite.dataset, str):
        spec = DATASETS[suite.dataset]
    if spec is None:
        raise ValueError("plan() needs the spec of the user's dataset, known once it is loaded")
    task = task_of(spec, suite, n_train)
    resolved = {e.label: resolve_hyperparameters(e.method, e.overrides, task) for e in entries}
    if seeds:
        check_seeds(seeds, "--seeds")
    seed_list = list(seeds) if seeds else list(suite.seeds)
    if suite.tuning:
        check_tuning_seeds(suite.tuning.seeds, tuple(seed_list), f"{suite.path}: tuning.seeds")
    return [
        RunSpec(e, get_method(e.method), resolved[e.label], s) for s in seed_list for e in entries
    ]


def training_images(suite: SuiteConfig, spec: DatasetSpec, loaded: int | None = None) -> int | None:
    """How many images the students train on: the suite's ``train_size``, else the whole training set
    (``loaded``, or a built-in's known size before its files are read)."""
    return suite.train_size if suite.train_size is not None else loaded if loaded is not None \
        else TRAIN_IMAGES.get(spec.name)


def task_of(spec: DatasetSpec, suite: SuiteConfig | None = None, n_train: int | None = None) -> Task:
    """What a plugin's ``check_hyperparameters`` sees: the data and, given the suite, the budget."""
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    n_train = training_images(suite, spec, n_train) if suite is not None else None
    if n_train is None:
        return Task(spec.num_classes, shape)
    return Task(spec.num_classes, shape, suite.train.epochs, steps_per_epoch(n_train, suite.train.batch_size))


#: What of a final cell's ``tuning`` its hash holds: where its hyperparameters come from (not the
#: accuracies and costs, which are measurements).
TUNING_HASHED = ("trial", "trials", "seeds", "validation")


def cell_config(suite: SuiteConfig, cell: RunSpec, data: Dataset, teacher: TeacherInfo | None) -> dict:
    """Everything that determines a cell's result; its hash is the record's ``config_hash`` (a trial's
    names its validation split; a tuned suite's final cell, the trial it runs)."""
    student = model_identity(suite.student_model, suite.student_taps, suite)
    return training_config(
        data, suite.train, suite.fast_path,
        model={"student_model": suite.student_model, **({"student_identity": student} if student else {})},
        own={
            "method": cell.entry.method,
            "hyperparameters": cell.hyperparameters,
            "method_sources_sha256": plugin_sources_sha256(cell.method_cls),
            "seed": cell.seed,
            "teacher_sha256": teacher.sha256 if (teacher and cell.method_cls.needs_teacher()) else None,
            **({"validation": cell.trial["validation"]} if cell.trial else {}),
            **({"tuning": {k: cell.tuning[k] for k in TUNING_HASHED}} if cell.tuning else {}),
        },
    )


@dataclass(frozen=True)
class Prepared:
    """A run validated and ready: the request, its cells, device, data and results folder (and the
    user's teacher checkpoint, read once while it was verified). A tuned suite's run also has its
    trials and their data (the training images split in two; no test split); its ``specs`` are
    then at their settings until the trials choose."""

    request: RunRequest
    specs: list[RunSpec]
    device: torch.device
    data: Dataset
    teacher_data: Dataset
    results_dir: Path
    teacher_state: dict | None = None
    trials: list[RunSpec] = field(default_factory=list)
    trial_data: Dataset | None = None

    @property
    def suite(self) -> SuiteConfig:
        return self.request.suite


def prepare(request: RunRequest) -> Prepared:
    """Every check a run makes before its first write, in order; the last is the results folder.
    A built-in dataset's cells and models are checked before its data is read; the user's data
    is read first, since its classes and image size are what they are checked against."""
    suite, methods, seeds = request.suite, request.methods, request.seeds
    builtin = DATASETS.get(suite.dataset) if isinstance(suite.dataset, str) else None
    checked = checked_plan(suite, methods, seeds, builtin) if builtin else None
    torch_device = resolve_device(request.device)
    full = load_dataset(suite.dataset, request.data_dir, torch_device, request.download)
    n_train = training_images(suite, full.spec, len(full.train))
    if checked is None or n_train != training_images(suite, full.spec):  # built-in files of another size
        checked = checked_plan(suite, methods, seeds, full.spec, n_train)
    specs, state = checked
    data = head(full, suite.train_size, suite.test_size, f"{suite.path}: ")
    teacher_data = head(full, suite.teacher.train_size, suite.test_size, f"{suite.path}: teacher.")
    trials, trial_data = [], None
    if (tuning := suite.tuning) is not None:
        v = tuning.validation
        trial_data = hold_out(data, v.fraction, v.size, v.seed, f"{suite.path}: tuning.validation")
        trials = trial_specs(tuning, specs, task_of(full.spec, suite, len(trial_data.train)))
    results = check_writable_folder(request.results_dir)
    claims.check(under(results, suite.name), specs)
    claims.check(under(results, suite.name, "tuning"), trials)
    return Prepared(request, specs, torch_device, data, teacher_data, results, state, trials, trial_data)


def checked_plan(
    suite: SuiteConfig, methods: list[str] | None, seeds: list[int] | None, spec: DatasetSpec,
    n_train: int | None = None,
) -> tuple[list[RunSpec], dict | None]:
    """:func:`plan`, then the networks built (unknown references and bad taps fail here), each
    method's taps checked against them, and the user's teacher checkpoint verified; returns the
    cells and that checkpoint's state dict (None without one)."""
    specs = plan(suite, methods, seeds, spec, n_train)
    student = build_student(suite, spec)
    teacher = build_teacher(suite, spec) if any(c.method_cls.needs_teacher() for c in specs) else None
    check_taps(specs, suite, student, teacher)
    state = None
    if teacher is not None and suite.teacher.checkpoint:
        state = checkpoint_state(suite)
        load_checkpoint(teacher, state, suite)
    return specs, state
