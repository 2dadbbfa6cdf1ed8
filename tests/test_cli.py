"""The command line's own behaviour; its bad-input matrix is in test_bad_input.py."""

from __future__ import annotations

from kdbench.data import datasets as D
from kdbench.cli import main


def test_methods_filter_accepts_suite_labels(tmp_path, write_suite):
    from kdbench.config.suite import load_suite
    from kdbench.run.plan import plan

    path = write_suite(methods=["student_ce", {"method": "vanilla_kd", "label": "kd_T2",
                                               "hyperparameters": {"T": 2}}])
    cells = plan(load_suite(str(path)), ["kd_T2"], [0])
    assert [(c.entry.label, c.hyperparameters["T"]) for c in cells] == [("kd_T2", 2.0)]


def test_without_data_the_error_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    assert main(["run", "smoke", "--results-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "r").exists()


def test_methods_lists_every_plugin(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "vanilla_kd" in out and "T=4.0 (> 0), gamma=0.1 (≥ 0), alpha=0.9 (≥ 0)" in out and "student_ce" in out
