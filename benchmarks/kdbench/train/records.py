"""Run records: one JSON file per (suite, method label, seed), and their schema.

Every field a record may hold is declared once, in :data:`FIELDS`, with its type, unit and meaning
(``docs/records.md`` is that table in prose, and a test keeps the two equal). The cell writes through
:func:`write_record`, which refuses a field that is not declared or has the wrong type, so the schema
cannot silently drift; the report reads through :func:`problem`, which says why a record cannot be
used (a field missing, of the wrong type, or outside its range). Writes are atomic
(:mod:`kdbench.api.atomic`): a run killed mid-write leaves the old record or the new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.api.atomic import write_json_atomic
from kdbench.api.json_file import read_json
from kdbench.api.paths import under

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "failed")

NUMBER = (float, int)
TEXT = (str,)
OBJECT = (dict,)
LIST = (list,)
NONE = (type(None),)
NON_FINITE = ("nan", "inf", "-inf")


@dataclass(frozen=True)
class Field:
    """A record field: ``path`` is dotted for a nested one (``time_split.eval_s``) and uses ``[]``
    for each element of a list (``epochs[].test_acc``)."""

    path: str
    types: tuple[type, ...]
    unit: str  # "" for a count, a name or an object
    meaning: str
    needed: str = ""  # "always": every record has it; "ok": every ok record has it; "": may be absent
    low: float | None = None  # the range a number must lie in, when it has one
    high: float | None = None


PERCENT = dict(low=0.0, high=100.0)
SECONDS = dict(low=0.0)
COUNT = dict(low=0.0)  # a count, a size or an index from 0
POSITIVE = dict(low=1.0)  # a count that is at least one (epochs of a budget, cells of a group)

FIELDS: tuple[Field, ...] = (
    Field("schema", (int,), "", "version of this schema", **POSITIVE),
    Field("suite", TEXT, "", "the suite's name"),
    Field("label", TEXT, "", "the method's label in the suite (its name unless the suite renames it)", "always"),
    Field("method", TEXT, "", "the registered method plugin", "always"),
    Field("paper", TEXT, "", "where the method comes from"),
    Field("reconstructed", (bool,), "", "true when no code was released and the method was rebuilt from its paper"),
    Field("hyperparameters", OBJECT, "", "every hyperparameter the method ran with, defaults filled in, as the "
          "suite asked for it"),
    Field("hyperparameters_resolved", OBJECT, "", "the value used for each hyperparameter the plugin chose "
          "itself (k: auto), by name; absent when it chose none"),
    Field("seed", (int,), "", "the cell's seed: student initialisation, data order, augmentation", "always",
       low=0.0, high=2.0**32 - 1),
    Field("trial", OBJECT, "", "a tuning trial's place in its method's search (trial records, under tuning/runs)"),
    Field("trial.index", (int,), "", "0: the method's settings; 1…: quasi-random points of its search space",
          **COUNT),
    Field("trial.of", (int,), "trials", "the method's number of trials", **POSITIVE),
    Field("trial.sampler", OBJECT, "", "how the points were drawn: sequence, scramble seed, dimensions"),
    Field("trial.validation", OBJECT, "", "the validation split: its fraction or size, and its seed"),
    Field("evaluated_on", TEXT, "", "validation: epochs[].test_acc, final_acc, best_acc are validation accuracies "
       "(trial records)"),
    Field("tuning", OBJECT, "", "where a tuned suite's cell got its hyperparameters (final cells)"),
    Field("tuning.trial", (int,), "", "the trial chosen", **COUNT),
    Field("tuning.trials", (int,), "trials", "the method's number of trials", **POSITIVE),
    Field("tuning.seeds", LIST, "", "the tuning seeds the choice was made on"),
    Field("tuning.validation", OBJECT, "", "the validation split (as in the trials' records)"),
    Field("tuning.validation_acc", NUMBER + NONE, "%", "the chosen trial's final validation accuracy, mean over "
       "tuning seeds; null when every trial failed", **PERCENT),
    Field("tuning.defaults_validation_acc", NUMBER + NONE, "%", "trial 0's (the settings') the same way", **PERCENT),
    Field("tuning.tuning_cost_s", NUMBER, "s", "the cost_s of all the method's trials, summed", **SECONDS),
    Field("tuning.chosen", OBJECT, "", "the hyperparameters the search changed, as chosen"),
    Field("tuning.defaults", OBJECT, "", "the same hyperparameters at the method's settings"),
    Field("status", TEXT, "", "ok, diverged (a non-finite loss) or failed (an exception)", "always"),
    Field("error", TEXT + NONE, "", "why the cell did not end ok; null when it did"),
    Field("traceback", TEXT, "", "the failure's traceback (failed cells)"),
    Field("diverged_at", OBJECT, "", "epoch, step and loss terms of the first non-finite step (diverged cells)"),
    Field("config_hash", TEXT, "", "sha256 of config: a rerun skips a cell whose record has the same hash"),
    Field("config", OBJECT, "", "everything that determines the result (config/hashing.py)"),
    Field("dataset", OBJECT, "", "the data the student saw"),
    Field("dataset.name", TEXT, "", "dataset name"),
    Field("dataset.source", TEXT, "", "where it was read from"),
    Field("dataset.sha256", TEXT, "", "hash of its pixels, labels and class names"),
    Field("dataset.n_train", (int,), "images", "training images the student used", **COUNT),
    Field("dataset.n_test", (int,), "images", "test images every accuracy is measured on", **COUNT),
    Field("dataset.mean", LIST, "", "per-channel mean used to normalise (training split)"),
    Field("dataset.std", LIST, "", "per-channel standard deviation used to normalise"),
    Field("dataset.classes", LIST, "", "class names (the user's data)"),
    Field("student_model", TEXT, "", "the student's model reference"),
    Field("teacher_model", TEXT, "", "the teacher's model reference"),
    Field("teacher_sha256", TEXT + NONE, "", "sha256 of the teacher's checkpoint; null without a teacher"),
    Field("teacher_acc", NUMBER + NONE, "%", "the teacher's test accuracy", **PERCENT),
    Field("teacher_n_train", (int,) + NONE, "images", "images the teacher trained on; null for a checkpoint teacher",
       **COUNT),
    Field("teacher_checkpoint", TEXT, "", "the checkpoint file the teacher was loaded from (the user's, or a "
          "built-in suite's), for a teacher the suite does not train"),
    Field("environment", OBJECT, "", "the machine and software that produced the record"),
    Field("environment.kdbench", TEXT, "", "kdbench version"),
    Field("environment.torch", TEXT, "", "PyTorch version"),
    Field("environment.python", TEXT, "", "Python version"),
    Field("environment.platform", TEXT, "", "operating system"),
    Field("environment.device", TEXT, "", "the torch device (cpu, cuda:0)"),
    Field("environment.device_name", TEXT, "", "GPU name, or the processor's architecture (x86_64)"),
    Field("environment.cpu_model", TEXT, "", "the processor's model (CPU bits hold per processor model and "
          "thread count)"),
    Field("environment.cpu_count", (int,), "CPUs", "logical CPUs the process could run on", **POSITIVE),
    Field("environment.threads", (int,), "threads", "torch CPU threads: CPU bits are equal only at equal threads",
       **POSITIVE),
    Field("environment.deterministic", (bool,), "", "deterministic kernels were on"),
    Field("fast_path", OBJECT, "", "how the networks were computed"),
    Field("fast_path.precision", TEXT, "", "fp32 or bf16"),
    Field("fast_path.channels_last", (bool,), "", "NHWC weights"),
    Field("fast_path.compile", (bool,), "", "torch.compile was asked for"),
    Field("fast_path.deterministic", (bool,), "", "the suite asked for deterministic kernels"),
    Field("fast_path.compile_note", TEXT, "", "why a network ran eagerly after all"),
    Field("budget_epochs", (int,), "epochs", "the training budget", **POSITIVE),
    Field("steps_per_epoch", (int,), "steps", "batches per epoch: n_train / batch_size rounded up, less a "
       "final batch of one image, which is dropped", low=1),
    Field("epochs", LIST, "", "one entry per finished epoch", "ok"),
    Field("epochs[].epoch", (int,), "", "1-based epoch number", **POSITIVE),
    Field("epochs[].lr_end", NUMBER, "", "learning rate at the epoch's last step", **COUNT),
    Field("epochs[].loss", OBJECT, "", "the epoch's mean of each loss term and of the total"),
    Field("epochs[].test_acc", NUMBER, "%", "test accuracy after the epoch", **PERCENT),
    Field("epochs[].train_own_s", NUMBER, "s", "the cell's own training time in the epoch", **SECONDS),
    Field("epochs[].teacher_s", NUMBER, "s", "teacher forward time the cell read in the epoch", **SECONDS),
    Field("final_acc", NUMBER + NONE, "%", "test accuracy after the last epoch (ok cells)", "ok", **PERCENT),
    Field("best_acc", NUMBER + NONE, "%", "best test accuracy over the epochs (for reference only)", "ok", **PERCENT),
    Field("best_epoch", (int,) + NONE, "", "the epoch of best_acc", **POSITIVE),
    Field("diagnostics", OBJECT, "", "measurements beside accuracy"),
    Field("diagnostics.kernel_gap_test", NUMBER + NONE, "", "distance between the student's and teacher's "
       "normalised feature kernels on the test set (0 = same)"),
    Field("prepare", OBJECT, "", "what the method's prepare() reported (offline targets, cache hits)"),
    Field("checkpoint_discarded", TEXT, "", "why an epoch checkpoint was not resumed from"),
    Field("resumed_from_epoch", (int,), "epochs", "epochs restored from a checkpoint after a kill", **COUNT),
    Field("resumed_from_sha256", TEXT, "", "sha256 of the epoch checkpoint file resumed from (the last resume)"),
    Field("params", OBJECT, "", "parameter counts"),
    Field("params.student", (int,), "parameters", "the student's", **COUNT),
    Field("params.extra_trainable", (int,), "parameters", "trainable parameters the method adds (connectors)",
       **COUNT),
    Field("params.inference", (int,), "parameters", "what the evaluated network holds", **COUNT),
    Field("inference_flops", (int,) + NONE, "FLOPs", "forward FLOPs of the evaluated network per image", **COUNT),
    Field("extras", OBJECT, "", "what the method adds to its record"),
    Field("cost_s", NUMBER, "s", "what the method costs alone: setup + train_s + evaluation", **SECONDS),
    Field("time_split", OBJECT, "", "cost_s split"),
    Field("time_split.setup_s", NUMBER, "s", "building, prepare(), resuming", **SECONDS),
    Field("time_split.train_own_s", NUMBER, "s", "the cell's own training steps", **SECONDS),
    Field("time_split.teacher_s", NUMBER, "s", "teacher forward passes the cell read", **SECONDS),
    Field("time_split.eval_s", NUMBER, "s", "evaluation and checkpoints", **SECONDS),
    Field("train_s", NUMBER, "s", "train_own_s + teacher_s", **SECONDS),
    Field("images_per_s", NUMBER, "images/s", "training images per second of train_s", **COUNT),
    Field("wall_s", NUMBER, "s", "wall time from the cell's start to its record, over every resume", **SECONDS),
    Field("group", OBJECT, "", "the lockstep group the cell trained in"),
    Field("group.lockstep", (bool,), "", "trained in a group sharing one data stream"),
    Field("group.size", (int,), "cells", "cells in the group", **POSITIVE),
    Field("group.wall_s", NUMBER, "s", "the group's wall time so far", **SECONDS),
    Field("peak_memory_mb", NUMBER, "MB", "peak memory of the group", **COUNT),
    Field("peak_memory_kind", TEXT, "", "what peak_memory_mb measures (CUDA allocator, or process RSS)"),
    Field("peak_memory_scope", TEXT, "", "whose peak it is (the group's)"),
    Field("started_at", TEXT, "", "UTC time the cell started (ISO 8601)"),
    Field("finished_at", TEXT, "", "UTC time the record was written (ISO 8601)"),
)
BY_PATH = {f.path: f for f in FIELDS}


def runs_dir(results_dir: Path, suite: str) -> Path:
    return under(results_dir, suite, "runs")


def record_file(folder: Path, stem: str) -> Path:
    """A cell's record in ``folder`` (a suite's, or its tuning trials'), by its ``RunSpec.stem``."""
    return under(folder, "runs", f"{stem}.json")


def record_path(results_dir: Path, suite: str, label: str, seed: int) -> Path:
    return record_file(under(results_dir, suite), f"{label}__seed{seed}")


def cell_key(rec: dict) -> tuple[str, int, int | None]:
    """Which cell a record is: its label, seed and trial index (None for a suite's own cells)."""
    trial = rec.get("trial")
    return rec["label"], rec["seed"], trial.get("index") if isinstance(trial, dict) else None


def _values(rec: dict, path: str) -> list[Any]:
    """Every value at ``path`` in ``rec`` (several under a list), skipping levels that are absent."""
    level = [rec]
    for part in path.split("."):
        key, each = part.removesuffix("[]"), part.endswith("[]")
        level = [v[key] for v in level if isinstance(v, dict) and key in v]
        if each:
            level = [x for v in level if isinstance(v, list) for x in v]
    return level


def _bad_value(f: Field, value: Any) -> str | None:
    if value in NON_FINITE and float in f.types:
        value = float(value)  # how a record stores a non-finite number (kdbench.api.atomic)
    if not isinstance(value, f.types) or (isinstance(value, bool) and bool not in f.types):
        kinds = " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in f.types}))
        return f"field {f.path!r} is not a {kinds}"
    if isinstance(value, NUMBER) and not isinstance(value, bool) and (f.low is not None or f.high is not None):
        if math.isnan(value) or (f.low is not None and value < f.low) or (f.high is not None and value > f.high):
            return f"field {f.path!r} is {value}, outside [{f.low}, {f.high if f.high is not None else '∞'}]"
    return None


def problem(rec: Any) -> str | None:
    """Why ``rec`` is not a usable record (a field missing, of another type, outside its range), or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for f in FIELDS:
        if f.needed == "always" and f.path not in rec:
            return f"missing field {f.path!r}"
    for f in FIELDS:
        for value in _values(rec, f.path):
            if (why := _bad_value(f, value)) is not None:
                return why
    if rec["status"] not in STATUSES:
        return f"unknown status {rec['status']!r}"
    if rec["status"] == "ok":
        for f in FIELDS:
            if f.needed == "ok" and rec.get(f.path) in (None, []):
                return f"status ok without {f.path!r}"
    return None


def undeclared(rec: dict) -> list[str]:
    """The fields of ``rec`` that the schema does not declare (objects a plugin fills are free-form)."""
    free = ("config", "hyperparameters", "hyperparameters_resolved", "prepare", "extras", "diverged_at", "epochs[].loss", "trial.sampler",
            "trial.validation", "tuning.validation", "tuning.chosen", "tuning.defaults")
    out = []

    def walk(obj: Any, prefix: str) -> None:
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if path not in BY_PATH:
                out.append(path)
            elif path not in free and isinstance(value, dict):
                walk(value, path + ".")
            elif path not in free and isinstance(value, list) and f"{path}[]" not in free:
                for item in value:
                    if isinstance(item, dict):
                        walk(item, path + "[].")

    walk(rec, "")
    return sorted(set(out))


def write_record(path: Path, record: dict) -> None:
    """Write ``record`` atomically, after checking that the schema declares each of its fields (one it
    does not is a bug in the harness: ``ValueError``, caught by the tests before any user meets it)."""
    if extra := undeclared(record):
        raise ValueError(f"record {path.name} has fields the schema does not declare: {', '.join(extra)}")
    write_json_atomic(path, record)


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing, unreadable or not a JSON object (a reader
    decides what to say)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
