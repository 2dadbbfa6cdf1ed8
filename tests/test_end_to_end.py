"""From a suite file to run records on real Fashion-MNIST, on a tiny budget (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from kdbench.cli import main
from kdbench.config import load_suite
from kdbench.errors import TeacherError
from kdbench.records import record_path
from kdbench import runner
from kdbench.registry import method_names
from tests.plugins import Explodes, GoesNaN, registered

REQUIRED = {
    "suite", "method", "hyperparameters", "seed", "status", "config_hash", "teacher_sha256",
    "teacher_acc", "environment", "epochs", "final_acc", "best_acc", "wall_s", "images_per_s",
    "peak_memory_mb", "params", "inference_flops",
}


def run(path, results, *extra):
    return main(["run", str(path), "--results-dir", str(results), "--no-progress", *extra])


@pytest.fixture(scope="module")
def smoke_records(needs_fashion_mnist, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    assert run("smoke", results) == 0
    return results


def test_smoke_writes_a_record_per_cell(smoke_records):
    suite = load_suite("smoke")
    files = sorted((smoke_records / "smoke" / "runs").glob("*.json"))
    assert len(files) == len(method_names()) * len(suite.seeds)
    for f in files:
        rec = json.loads(f.read_text())
        assert REQUIRED <= set(rec), REQUIRED - set(rec)
        assert rec["status"] == "ok", rec.get("error")
        assert len(rec["epochs"]) == suite.train.epochs
        assert 0 < rec["final_acc"] <= 100 and rec["best_acc"] >= rec["final_acc"]
        assert rec["final_acc"] == rec["epochs"][-1]["test_acc"]
        assert rec["params"]["student"] > 0 and rec["inference_flops"] > 0
        assert rec["environment"]["deterministic"] is True
        assert all("loss" in e and "total" in e["loss"] for e in rec["epochs"])
        if rec["method"] != "student_ce":
            assert len(rec["teacher_sha256"]) == 64
        assert 0 < rec["diagnostics"]["kernel_gap_test"] < 10
    assert not list((smoke_records / "smoke").glob("checkpoints/*.pt")), "finished runs leave no checkpoint"


def test_student_init_is_paired_across_methods(needs_fashion_mnist, write_suite, tmp_path, monkeypatch):
    # Capture the student's weights at the moment each run builds its optimizer: for one seed they
    # must be identical whatever the method (vanilla_kd builds no extra module; the check is on the
    # student), and differ between seeds.
    captured = {}
    real_make_cell = runner.make_cell

    def spy(student, method, cfg):
        captured[(method.name, len(captured))] = {k: v.clone() for k, v in student.state_dict().items()}
        return real_make_cell(student, method, cfg)

    monkeypatch.setattr(runner, "make_cell", spy)
    path = write_suite(seeds=[0, 1], train={"epochs": 1, "batch_size": 128})
    assert run(path, tmp_path, "--methods", "student_ce", "vanilla_kd") == 0
    states = list(captured.values())  # plan order: seed 0 (ce, kd), seed 1 (ce, kd)
    assert len(states) == 4

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(states[0], states[1]) and same(states[2], states[3])
    assert not same(states[0], states[2])


def test_rerun_skips_completed_cells(smoke_records, capsys):
    before = {p.name: p.read_text() for p in (smoke_records / "smoke" / "runs").glob("*.json")}
    assert run("smoke", smoke_records) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == len(before) and "training teacher" not in out
    after = {p.name: p.read_text() for p in (smoke_records / "smoke" / "runs").glob("*.json")}
    assert before == after


def test_same_cell_twice_is_bitwise_identical(needs_fashion_mnist, write_suite, tmp_path):
    path = write_suite(seeds=[5])
    runs = []
    for d in ("a", "b"):
        assert run(path, tmp_path / d, "--methods", "vanilla_kd") == 0
        runs.append(json.loads(record_path(tmp_path / d, "tiny", "vanilla_kd", 5).read_text()))
    a, b = runs
    assert a["config_hash"] == b["config_hash"]
    assert a["final_acc"] == b["final_acc"] and a["best_acc"] == b["best_acc"]
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]


def test_failed_and_diverged_runs_are_recorded_and_suite_goes_on(needs_fashion_mnist, write_suite, tmp_path):
    path = write_suite(seeds=[0], methods=["explodes", "goes_nan", "student_ce"])
    with registered(Explodes, GoesNaN):
        assert run(path, tmp_path) == 0
    rec = {m: json.loads(record_path(tmp_path, "tiny", m, 0).read_text())
           for m in ("explodes", "goes_nan", "student_ce")}
    assert rec["explodes"]["status"] == "failed" and "boom in epoch 2" in rec["explodes"]["error"]
    assert len(rec["explodes"]["epochs"]) == 1 and rec["explodes"]["final_acc"] is None
    assert rec["goes_nan"]["status"] == "diverged" and rec["goes_nan"]["final_acc"] is None
    assert rec["goes_nan"]["best_acc"] == rec["goes_nan"]["epochs"][0]["test_acc"]
    assert rec["student_ce"]["status"] == "ok"


def test_interrupted_run_resumes_to_the_same_result(needs_fashion_mnist, write_suite, tmp_path, monkeypatch):
    path = write_suite(seeds=[1], train={"epochs": 3, "batch_size": 128})
    assert run(path, tmp_path / "whole", "--methods", "vanilla_kd") == 0
    whole = json.loads(record_path(tmp_path / "whole", "tiny", "vanilla_kd", 1).read_text())

    real_epoch = runner.train_epoch

    def dies_in_epoch_3(cells, teacher, data, train, seed, epoch, on_step=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(cells, teacher, data, train, seed, epoch, on_step)

    monkeypatch.setattr(runner, "train_epoch", dies_in_epoch_3)
    assert run(path, tmp_path / "cut", "--methods", "vanilla_kd") == 130
    assert not record_path(tmp_path / "cut", "tiny", "vanilla_kd", 1).exists()
    monkeypatch.setattr(runner, "train_epoch", real_epoch)
    assert run(path, tmp_path / "cut", "--methods", "vanilla_kd") == 0
    resumed = json.loads(record_path(tmp_path / "cut", "tiny", "vanilla_kd", 1).read_text())
    assert resumed["resumed_from_epoch"] == 2
    assert resumed["final_acc"] == whole["final_acc"]
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in whole["epochs"]]


def test_changed_hyperparameter_reruns_the_cell(needs_fashion_mnist, write_suite, tmp_path):
    first = write_suite(seeds=[0], methods=["vanilla_kd"])
    assert run(first, tmp_path) == 0
    h1 = json.loads(record_path(tmp_path, "tiny", "vanilla_kd", 0).read_text())["config_hash"]
    second = write_suite(seeds=[0], methods=[{"method": "vanilla_kd", "hyperparameters": {"T": 2}}])
    assert run(second, tmp_path) == 0
    rec = json.loads(record_path(tmp_path, "tiny", "vanilla_kd", 0).read_text())
    assert rec["config_hash"] != h1 and rec["hyperparameters"]["T"] == 2.0


def test_tampered_teacher_checkpoint_is_an_error(needs_fashion_mnist, write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0], methods=["vanilla_kd"])
    assert run(path, tmp_path) == 0
    (ckpt,) = (tmp_path / "teachers").glob("*/teacher.pt")
    state = torch.load(ckpt, weights_only=True)
    state["classifier.bias"] += 1.0
    torch.save(state, ckpt)
    capsys.readouterr()
    assert run(path, tmp_path, "--seeds", "1") == 2
    err = capsys.readouterr().err
    assert "sha256" in err and len(err.strip().splitlines()) == 1
    assert not record_path(tmp_path, "tiny", "vanilla_kd", 1).exists()
