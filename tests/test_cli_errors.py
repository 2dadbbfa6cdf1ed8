"""Bad input: one line on stderr, a non-zero exit, and no record written."""

from __future__ import annotations

import pytest
import yaml

from kdbench import data as D
from kdbench.cli import main


def check_one_line_error(capsys, argv, fragment, results):
    code = main(argv + ["--results-dir", str(results), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("kdbench: error:"), err
    assert fragment in err, err
    assert not results.exists() or not list(results.rglob("*.json")), "a record was written"


def test_unknown_suite(capsys, tmp_path):
    check_one_line_error(capsys, ["run", "no-such-suite"], "unknown suite 'no-such-suite'", tmp_path / "r")


def test_unknown_method(capsys, tmp_path):
    check_one_line_error(capsys, ["run", "smoke", "--methods", "nope"], "unknown method 'nope'", tmp_path / "r")


def test_methods_filter_accepts_suite_labels(tmp_path, write_suite):
    from kdbench.config import load_suite
    from kdbench.runner import plan

    path = write_suite(methods=["student_ce", {"method": "vanilla_kd", "label": "kd_T2",
                                               "hyperparameters": {"T": 2}}])
    cells = plan(load_suite(str(path)), ["kd_T2"], [0])
    assert [(c.entry.label, c.hyperparameters["T"]) for c in cells] == [("kd_T2", 2.0)]


def test_unknown_hyperparameter(capsys, tmp_path, write_suite):
    path = write_suite(methods=[{"method": "vanilla_kd", "hyperparameters": {"temperature": 4}}])
    check_one_line_error(capsys, ["run", str(path)], "no hyperparameter 'temperature'", tmp_path / "r")


def test_missing_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    check_one_line_error(
        capsys, ["run", "smoke", "--data-dir", str(tmp_path)], "apt-get install dataset-fashion-mnist",
        tmp_path / "r",
    )


def test_missing_cifar(capsys, tmp_path):
    check_one_line_error(capsys, ["run", "cifar10", "--data-dir", str(tmp_path)], "cifar10 not found",
                         tmp_path / "r")


def test_malformed_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nteacher: [unclosed\n")
    check_one_line_error(capsys, ["run", str(bad)], "not valid YAML", tmp_path / "r")


@pytest.mark.parametrize("override,fragment", [
    ({"train": {"epochs": -1, "batch_size": 128}}, "epochs must be at least 1"),
    ({"train": {"epochs": 0, "batch_size": 128}}, "epochs must be at least 1"),
    ({"train": {"epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd", "lr": -0.1}}}, "lr must be positive"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"student": {"model": "resnet1000"}}, "unknown model 'resnet1000'"),
    ({"extra_key": 1}, "unknown key(s) extra_key"),
    ({"methods": [{"method": "kernel_nystrom", "hyperparameters": {"feature": "middle"}}]},
     "'feature' must be one of"),
    ({"methods": [{"method": "vanilla_kd", "hyperparameters": {"T": 0}}]}, "'T' must be > 0, got 0"),
    ({"methods": [{"method": "vanilla_kd", "hyperparameters": {"T": -1}}]}, "'T' must be > 0, got -1"),
    ({"methods": [{"method": "vanilla_kd", "hyperparameters": {"alpha": float("nan")}}]}, "'alpha' must be finite"),
    ({"methods": [{"method": "kr_sparse", "hyperparameters": {"rho": 0}}]}, "'rho' must be in (0, 1], got 0"),
    ({"methods": [{"method": "bregman_pca", "hyperparameters": {"k": 10}}]}, "k must be at most classes − 1 = 9"),
    ({"train": {"epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd", "nesterov": "false"}}},
     "optimizer.nesterov must be true or false, got 'false'"),
])
def test_bad_suite_values(capsys, tmp_path, write_suite, override, fragment):
    path = write_suite(**override)
    check_one_line_error(capsys, ["run", str(path)], fragment, tmp_path / "r")


def test_negative_seed_on_command_line(capsys, tmp_path):
    check_one_line_error(capsys, ["run", "smoke", "--seeds", "-3"], "non-negative", tmp_path / "r")


def test_unavailable_device(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    check_one_line_error(capsys, ["run", "smoke", "--device", "cuda"], "CUDA is not available", tmp_path / "r")


def test_methods_lists_every_plugin(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "vanilla_kd" in out and "T=4.0 (> 0), gamma=0.1 (≥ 0), alpha=0.9 (≥ 0)" in out and "student_ce" in out
