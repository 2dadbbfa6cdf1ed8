"""A teacher.pt that kdbench trained, given back to it as the user's checkpoint for the same model:
the adapter's whole state dict (keys under ``net.``) is accepted, as the bare network's is; the
default suites' own teacher is such a file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import yaml
from kdbench.config.suite import SUITES_DIR, load_suite
from kdbench.data.datasets import load_dataset
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest
from kdbench.train.teacher import get_teacher

from tests.user_files import tensors, write_suite

REFERENCE_RUNS = Path(__file__).resolve().parents[1] / "report" / "reference" / "results" / "default" / "runs"
TRAIN = {**yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())["train"], "epochs": 1}


def run(path, results):
    return run_suite(RunRequest(load_suite(str(path)), results_dir=results, progress=False), log=lambda _: None)


def test_our_own_trained_teacher_is_accepted_as_a_checkpoint_for_its_model(tmp_path):
    torch.save(tensors(channels=1), tmp_path / "data.pt")
    suite = {
        "name": "trains", "dataset": {"format": "tensors", "path": "data.pt"},
        "teacher": {"model": "torchvision:resnet18", "seed": 0, "train": TRAIN},
        "student": {"model": "fmnist_student"}, "train": TRAIN, "methods": ["vanilla_kd"], "seeds": [0],
    }
    (trained,) = run(write_suite(tmp_path, suite), tmp_path / "results")
    (ours,) = (tmp_path / "results" / "teachers").glob("*/teacher.pt")
    assert next(iter(torch.load(ours, weights_only=True))).startswith("net.")  # the adapter's, as saved
    sha = hashlib.sha256(ours.read_bytes()).hexdigest()
    again = {**suite, "name": "reuses", "teacher": {"model": "torchvision:resnet18", "checkpoint": str(ours),
                                                    "sha256": sha}}
    (rec,) = run(write_suite(tmp_path, again), tmp_path / "results")
    assert rec["status"] == "ok" and rec["teacher_checkpoint"] == str(ours) and rec["teacher_sha256"] == sha
    assert rec["teacher_acc"] == trained["teacher_acc"]  # the same weights, measured on the same test set


def test_the_default_suites_teacher_is_the_committed_file_and_measures_what_the_reference_says(
    needs_fashion_mnist, tmp_path
):
    """Version 2 of the default suites: their teacher is the file beside them, checked by its sha256,
    never trained, and at the test accuracy the committed reference records (one image either way:
    another processor may round a borderline logit the other way)."""
    default, tuned = load_suite("default"), load_suite("default-tuned")
    assert default.teacher == tuned.teacher and default.teacher.train is None
    assert Path(default.teacher.checkpoint) == SUITES_DIR / "fmnist_teacher.pt"
    data = load_dataset("fashion_mnist")
    teacher = get_teacher(default, data, torch.device("cpu"), tmp_path, True, log=lambda _: None)
    assert teacher.info.sha256 == default.teacher.sha256 and teacher.info.n_train is None
    reference = json.loads((REFERENCE_RUNS / "vanilla_kd__seed0.json").read_text())
    assert reference["teacher_sha256"] == default.teacher.sha256
    assert abs(teacher.info.test_acc - reference["teacher_acc"]) <= 0.01 + 1e-9
