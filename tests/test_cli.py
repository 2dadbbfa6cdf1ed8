"""The command line's own behaviour; its bad-input matrix is in test_bad_input.py."""

from __future__ import annotations

import pytest
from kdbench.bench import BENCHES
from kdbench.cli import main
from kdbench.data import datasets as D

BENCH_NAMES = ["suite", "speed", "lockstep", "layout", "executors", "kernel-cost", "bregman-sweep", "wait-policy"]


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


def exit_code(argv: list[str]) -> int:
    """``main``'s status, or argparse's (it exits for --help and usage errors)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_bench_help_lists_every_bench_with_one_line_each(capsys):
    assert list(BENCHES) == BENCH_NAMES
    assert exit_code(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for name, module in BENCHES.items():
        assert f"{name} {module.SUMMARY}" in out, name
        assert "\n" not in module.SUMMARY and len(module.SUMMARY) < 110, name


@pytest.mark.parametrize("name, option", [("speed", "--steps"), ("lockstep", "--rounds"), ("layout", "--iters"),
                                          ("executors", "--workers"), ("kernel-cost", "--reps"),
                                          ("bregman-sweep", "--ks"), ("suite", "--reuse-teacher"),
                                          ("wait-policy", "--settings")])
def test_bench_name_help_shows_its_options(capsys, name, option):
    assert exit_code(["bench", name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kdbench bench {name} ") and option in out and "python -m" not in out


@pytest.mark.parametrize("argv, fragment", [
    (["bench"], "required: NAME"),
    (["bench", "no-such-bench"], "invalid choice: 'no-such-bench'"),
    (["bench", "speed", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["bench", "speed", "--steps", "0"], "argument --steps: must be at least 1, not 0"),
    (["bench", "lockstep", "--rounds", "0"], "argument --rounds: must be at least 1, not 0"),
    (["bench", "layout", "--iters", "many"], "argument --iters: 'many' is not a whole number"),
    (["bench", "executors", "--workers", "0"], "argument --workers: must be at least 1"),
    (["bench", "kernel-cost", "--batches", "8", "0"], "argument --batches: must be at least 1"),
    (["bench", "bregman-sweep", "--ks", "0"], "argument --ks: must be at least 1"),
    (["bench", "speed", "--loader-workers", "-1"], "argument --loader-workers: must be at least 0"),
])
def test_bench_usage_errors_are_one_line_exit_2(capsys, argv, fragment):
    assert exit_code(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbench: error:") and fragment in lines[0], captured.err
    assert captured.out == ""


def test_a_bench_error_is_one_line_exit_2(capsys, tmp_path):
    """Input argparse cannot check (here an unknown suite) is a KDBenchError that main prints."""
    assert main(["bench", "lockstep", "--suite", "no-such-suite", "--results-dir", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbench: error:") and "no-such-suite" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--executor", "ray"], "--executor ray: bench suite times this machine's executors, local or processes"),
    (["--executor", "processes:4096"], "processes:4096 with 1 thread(s) each needs 4,096 cores"),
    (["--executor", "nowhere"], "unknown executor 'nowhere'"),
])
def test_bench_suite_refuses_an_executor_it_cannot_time_in_one_line_before_any_work(capsys, tmp_path, extra, fragment):
    assert main(["bench", "suite", "default", "--results-dir", str(tmp_path / "r"), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbench: error:") and fragment in lines[0], captured.err
    assert "teacher" not in captured.out and not (tmp_path / "r").exists()
