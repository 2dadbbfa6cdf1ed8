"""A teacher.pt that kdbench trained, given back to it as the user's checkpoint for the same model:
the adapter's whole state dict (keys under ``net.``) is accepted, as the bare network's is."""

from __future__ import annotations

import hashlib

import torch
import yaml
from kdbench.config.suite import SUITES_DIR, load_suite
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest

from tests.user_files import tensors, write_suite

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
