"""The user's own pair end to end, on real files: a torchvision ResNet-18 teacher from a checkpoint,
a student from the user's module, an ImageFolder of PNGs; and a tensors file with an in-suite
teacher. Every registered method runs the smoke budget on the pair or is refused when planned."""

from __future__ import annotations

import pytest
import yaml
from kdbench.api.errors import ConfigError
from kdbench.api.registry import method_names
from kdbench.config.suite import SUITES_DIR, load_suite
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest

from tests.user_files import CLASSES, pair_suite, tensors, write_student_module, write_suite

SMOKE_TRAIN = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())["train"]


def run(path, results, **kw):
    return run_suite(RunRequest(load_suite(str(path)), results_dir=results, progress=False, **kw), log=lambda _: None)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    suite = pair_suite(folder, train=SMOKE_TRAIN)
    return folder, suite, write_suite(folder, suite)


def test_every_method_runs_on_a_checkpoint_teacher_and_a_callable_student(pair):
    folder, suite, path = pair
    recs = run(path, folder / "results")
    assert sorted(r["method"] for r in recs) == method_names()
    assert all(r["status"] == "ok" and r["budget_epochs"] == SMOKE_TRAIN["epochs"] for r in recs), \
        [(r["method"], r["error"]) for r in recs]
    rec = recs[0]
    assert rec["teacher_checkpoint"] == str(folder / "teacher.pt") and rec["teacher_n_train"] is None
    assert rec["teacher_sha256"] == suite["teacher"]["sha256"] and 0 <= rec["teacher_acc"] <= 100
    assert rec["dataset"]["classes"] == list(CLASSES) and len(rec["dataset"]["mean"]) == 3
    assert rec["config"]["student_identity"]["taps"] == suite["student"]["taps"]
    assert len(rec["config"]["student_identity"]["code"]) == 64  # the module's sha256
    assert rec["config"]["dataset_spec"]["image_size"] == 32
    # the teacher's measured accuracy is kept beside its offline targets, not beside the user's file
    (meta,) = (folder / "results" / "teachers").glob("*-ckpt-*/teacher.json")
    assert yaml.safe_load(meta.read_text())["test_acc"] == rec["teacher_acc"]


def test_without_declared_taps_each_method_runs_or_is_refused_naming_its_tap(pair, tmp_path):
    folder, suite, _ = pair
    bare = {**suite, "name": "bare", "student": {"model": suite["student"]["model"]}}
    path = write_suite(folder, bare)
    accepted, refused = {}, {}
    for name in method_names():
        try:
            (accepted[name],) = run(path, tmp_path, methods=[name])
        except ConfigError as exc:
            refused[name] = str(exc)
    assert refused.keys() == {"kd_layer", "kr_sparse", "srrl"}
    assert "reads the student's 'prepool' tap" in refused["srrl"]
    assert "reads the student's 'blocks' and 'stages' taps" in refused["kr_sparse"]
    assert [r["status"] for r in accepted.values()] == ["ok"] * 4
    # a refused method wrote nothing: the only records are the accepted methods'
    assert sorted(p.stem.split("__")[0] for p in (tmp_path / "bare" / "runs").glob("*.json")) == sorted(accepted)


def test_a_tensors_file_with_a_teacher_trained_in_the_suite(tmp_path):
    import torch

    torch.save(tensors(channels=1), tmp_path / "data.pt")
    suite = {
        "name": "tensors", "dataset": {"format": "tensors", "path": "data.pt", "hflip": True},
        "teacher": {"model": "torchvision:resnet18", "seed": 0, "train": SMOKE_TRAIN},
        "student": {"model": "fmnist_student"}, "train": SMOKE_TRAIN,
        "methods": ["student_ce", "vanilla_kd"], "seeds": [0],
    }
    recs = run(write_suite(tmp_path, suite), tmp_path / "results")
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert recs[1]["teacher_n_train"] == 40 and "teacher_checkpoint" not in recs[1]
    assert recs[1]["config"]["dataset_spec"]["hflip"] is True and recs[1]["dataset"]["name"] == "data"


def test_a_last_batch_of_one_image_is_dropped_for_the_teacher_and_every_method(tmp_path):
    """17 training images at batch 8: the batch norm at the 1×1 end of the user's student (and of a
    ResNet-18 teacher) cannot train on the 17th image alone, so every epoch draws two batches of 8,
    for the teacher and the students alike. The rule is in the config hash (only where it drops an
    image) and the record says how many steps an epoch had."""
    import torch

    torch.save(tensors(n_train=17, size=32), tmp_path / "data.pt")
    train = {**SMOKE_TRAIN, "epochs": 1, "batch_size": 8}
    suite = {
        "name": "seventeen", "dataset": {"format": "tensors", "path": "data.pt"},
        "teacher": {"model": "torchvision:resnet18", "seed": 0, "train": train},
        "student": {"model": write_student_module(tmp_path)}, "train": train,
        "methods": ["student_ce", "vanilla_kd"], "seeds": [0],
    }
    recs = run(write_suite(tmp_path, suite), tmp_path / "results")
    assert [r["status"] for r in recs] == ["ok", "ok"], [r["error"] for r in recs]
    assert recs[1]["teacher_n_train"] == 17 and recs[1]["teacher_acc"] is not None
    assert all(r["steps_per_epoch"] == 2 and r["config"]["dropped_per_epoch"] == 1 for r in recs)
