"""From a suite file to run records on real Fashion-MNIST, on a tiny budget (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from kdbench.api.registry import method_names
from kdbench.cli import main
from kdbench.config.suite import load_suite
from kdbench.run import rounds as runner
from kdbench.train import cell as cell_module
from kdbench.train.records import record_path

from tests.plugins import Explodes, FailsAtEpochEnd, FailsInPrepare, GoesNaN, registered

REQUIRED = {
    "suite", "method", "hyperparameters", "seed", "status", "config_hash", "teacher_sha256",
    "teacher_acc", "environment", "epochs", "final_acc", "best_acc", "wall_s", "images_per_s",
    "peak_memory_mb", "params", "inference_flops",
}


#: The first 600 training and 300 test images, for the tests whose point is not the budget.
SMALL = {"train_size": 600, "test_size": 300, "teacher": {"train_size": 600}}


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
        split = rec["time_split"]  # every second counted once: training steps apart from evaluation
        assert sum(e["train_own_s"] for e in rec["epochs"]) == pytest.approx(split["train_own_s"], rel=1e-9)
        assert rec["cost_s"] == pytest.approx(split["setup_s"] + split["train_own_s"] + split["teacher_s"]
                                              + split["eval_s"], rel=1e-9)
        assert (split["teacher_s"] > 0) == (rec["method"] != "student_ce")
    assert not list((smoke_records / "smoke").glob("checkpoints/*.pt")), "finished runs leave no checkpoint"


def test_student_init_is_paired_across_methods(needs_fashion_mnist, write_suite, tmp_path, monkeypatch):
    # Capture the student's weights at the moment each run builds its optimizer: for one seed they
    # must be identical whatever the method (vanilla_kd builds no extra module; the check is on the
    # student), and differ between seeds.
    captured = {}
    real_make_cell = cell_module.make_cell

    def spy(student, method, cfg, precision):
        captured[(method.name, len(captured))] = {k: v.clone() for k, v in student.state_dict().items()}
        return real_make_cell(student, method, cfg, precision)

    monkeypatch.setattr(cell_module, "make_cell", spy)
    path = write_suite(seeds=[0, 1], train={"epochs": 1, "batch_size": 128}, **SMALL)
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
    path = write_suite(seeds=[5], **SMALL)
    runs = []
    for d in ("a", "b"):
        assert run(path, tmp_path / d, "--methods", "vanilla_kd") == 0
        runs.append(json.loads(record_path(tmp_path / d, "tiny", "vanilla_kd", 5).read_text()))
    a, b = runs
    assert a["config_hash"] == b["config_hash"]
    assert a["final_acc"] == b["final_acc"] and a["best_acc"] == b["best_acc"]
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]


def test_failing_cells_end_alone_and_their_group_goes_on(needs_fashion_mnist, write_suite, tmp_path):
    bad = ["explodes", "goes_nan", "fails_in_prepare", "fails_at_epoch_end"]
    path = write_suite(seeds=[0], methods=[*bad, "student_ce", "vanilla_kd"], **SMALL)
    with registered(Explodes, GoesNaN, FailsInPrepare, FailsAtEpochEnd):
        assert run(path, tmp_path / "group") == 0
    assert run(path, tmp_path / "alone", "--methods", "vanilla_kd") == 0
    rec = {m: json.loads(record_path(tmp_path / "group", "tiny", m, 0).read_text())
           for m in [*bad, "student_ce", "vanilla_kd"]}
    assert all(r["group"] == {**r["group"], "lockstep": True, "size": 6} for r in rec.values())
    assert rec["explodes"]["status"] == "failed" and "boom in epoch 2" in rec["explodes"]["error"]
    assert len(rec["explodes"]["epochs"]) == 1 and rec["explodes"]["final_acc"] is None
    assert rec["goes_nan"]["status"] == "diverged" and rec["goes_nan"]["final_acc"] is None
    assert rec["goes_nan"]["best_acc"] == rec["goes_nan"]["epochs"][0]["test_acc"]
    at = rec["goes_nan"]["diverged_at"]
    assert (at["epoch"], at["step"], at["terms"]) == (2, 3, {"ce": "nan"})
    assert "at epoch 2, step 3" in rec["goes_nan"]["error"]
    leftover = {p.stem for p in (tmp_path / "group" / "tiny" / "checkpoints").glob("*.pt")}
    assert leftover == {"explodes__seed0"}, "a failed cell keeps its checkpoint for the retry; no other does"
    assert rec["fails_in_prepare"]["status"] == "failed" and "no targets today" in rec["fails_in_prepare"]["error"]
    assert rec["fails_in_prepare"]["epochs"] == []
    assert rec["fails_at_epoch_end"]["status"] == "failed" and "hook broke" in rec["fails_at_epoch_end"]["error"]
    assert rec["student_ce"]["status"] == "ok" and rec["vanilla_kd"]["status"] == "ok"
    alone = json.loads(record_path(tmp_path / "alone", "tiny", "vanilla_kd", 0).read_text())
    assert same_results(rec["vanilla_kd"], alone)  # its neighbours' failures changed nothing


def same_results(a: dict, b: dict) -> bool:
    """Everything a cell computes, bitwise; not its timings, cache hits or group."""
    def results(r):
        epochs = [{k: e[k] for k in ("epoch", "lr_end", "loss", "test_acc")} for e in r["epochs"]]
        return (r["config_hash"], r["status"], r["final_acc"], r["best_acc"], epochs, r["diagnostics"],
                r.get("params"), r.get("inference_flops"), r.get("extras"))
    return results(a) == results(b)


def test_lockstep_and_one_at_a_time_give_bitwise_identical_records(smoke_records, tmp_path):
    assert run("smoke", tmp_path, "--no-lockstep") == 0
    grouped = sorted((smoke_records / "smoke" / "runs").glob("*.json"))
    assert len(grouped) == len(method_names()) * 2
    for f in grouped:
        a, b = json.loads(f.read_text()), json.loads((tmp_path / "smoke" / "runs" / f.name).read_text())
        assert a["group"]["lockstep"] and a["group"]["size"] == len(method_names())
        assert not b["group"]["lockstep"] and b["group"]["size"] == 1
        assert same_results(a, b), f.name


def test_interrupted_run_resumes_to_the_same_result(needs_fashion_mnist, write_suite, tmp_path, monkeypatch):
    path = write_suite(seeds=[1], train={"epochs": 3, "batch_size": 128}, **SMALL)
    assert run(path, tmp_path / "whole", "--methods", "vanilla_kd") == 0
    whole = json.loads(record_path(tmp_path / "whole", "tiny", "vanilla_kd", 1).read_text())

    real_epoch = runner.train_epoch

    def dies_in_epoch_3(cells, teacher, data, train, seed, epoch, **kw):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(cells, teacher, data, train, seed, epoch, **kw)

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
    first = write_suite(seeds=[0], methods=["vanilla_kd"], **SMALL)
    assert run(first, tmp_path) == 0
    h1 = json.loads(record_path(tmp_path, "tiny", "vanilla_kd", 0).read_text())["config_hash"]
    second = write_suite(seeds=[0], methods=[{"method": "vanilla_kd", "hyperparameters": {"T": 2}}], **SMALL)
    assert run(second, tmp_path) == 0
    rec = json.loads(record_path(tmp_path, "tiny", "vanilla_kd", 0).read_text())
    assert rec["config_hash"] != h1 and rec["hyperparameters"]["T"] == 2.0


def test_tampered_teacher_checkpoint_is_an_error(needs_fashion_mnist, write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0], methods=["vanilla_kd"], **SMALL)
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


def test_lockstep_speed_benchmark_prints_its_ratios_and_splits(needs_fashion_mnist, write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0], methods=["student_ce", "vanilla_kd"], **SMALL)
    argv = ["--suite", str(path), "--rounds", "1", "--epochs", "1", "--results-dir", str(tmp_path)]
    assert main(["bench", "lockstep", *argv]) == 0
    out = capsys.readouterr().out
    assert "median ratio over 1 round(s):" in out
    assert "| vanilla_kd |" in out and "| student_ce |" in out
    assert list((tmp_path / "teachers").glob("*/teacher.pt")), "the teacher is cached for the next rounds"
