"""``kdbench bench suite`` (time to result, split by phase) and ``kdbench bench wait-policy`` (OpenMP
wait settings, idle and loaded), each on a tiny suite."""

from __future__ import annotations

import json
import re

import pytest
from kdbench.bench.suite import cpu_ticks, steal_line
from kdbench.cli import main
from kdbench.config.executor import cores
from kdbench.train.environment import cpu_model

from tests.test_end_to_end import SMALL


def test_suite_bench_times_every_phase_and_names_the_machine(needs_fashion_mnist, write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0, 1], methods=["student_ce", "kd_layer"], train={"epochs": 1, "batch_size": 128},
                       **SMALL)
    assert main(["bench", "suite", str(path), "--threads", "1", "--keep", str(tmp_path / "kept"),
                 "--results-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert f"machine: {cpu_model()}" in out and "cells: local, 1 thread(s) per cell" in out
    assert re.search(r"load average before: [\d.]+ [\d.]+ [\d.]+", out)
    assert re.search(r"load average after: [\d.]+ [\d.]+ [\d.]+", out)
    assert re.search(r"CPU time stolen by the hypervisor during the run: (\d+% of the machine's|not reported)", out)
    assert "teacher trained from scratch" in out and "4 records, 4 ok" in out
    rows = dict(re.findall(r"^\| (.+?) \| \**([\d.]+)\** \|", out, re.MULTILINE))
    total = float(re.search(r"wall time of the whole suite: ([\d.]+) s", out).group(1))
    parts = ["data and checks", "teacher (trained or verified)", "seed 0 group (2 cells)", "seed 1 group (2 cells)",
             "records and claims between groups", "report"]
    assert set(parts) <= set(rows) and float(rows["**total**"]) == total
    assert sum(float(rows[p]) for p in parts) == pytest.approx(total, abs=0.1 * len(parts))
    assert float(rows["teacher (trained or verified)"]) > 0
    kept = sorted((tmp_path / "kept" / "tiny" / "runs").glob("*.json"))
    assert [f.name for f in kept] == ["kd_layer__seed0.json", "kd_layer__seed1.json",
                                      "student_ce__seed0.json", "student_ce__seed1.json"]
    assert json.loads(kept[0].read_text())["status"] == "ok"
    assert not (tmp_path / "cache").exists(), "from scratch: the teacher cache is neither read nor written"


def test_steal_is_the_share_of_all_ticks_between_two_readings_of_proc_stat():
    """Two made-up /proc/stat readings: 30 of the 190 ticks in between stolen is 16% (guest ticks, the
    last two fields, are not counted twice)."""
    before = cpu_ticks("cpu  100 5 20 800 10 0 5 40 7 0\ncpu0 50 2 10 400 5 0 2 20 3 0\nintr 1\n")
    after = cpu_ticks("cpu  160 5 40 880 10 0 5 70 9 0\ncpu0 80 2 20 440 5 0 2 35 4 0\n")
    assert before == (40, 980) and after == (70, 1170)
    assert steal_line(before, after).endswith(": 16% of the machine's (/proc/stat)")
    assert cpu_ticks("cpu  1 2 3 4\n") is None and cpu_ticks("") is None
    assert steal_line(None, after).endswith("not reported on this system")
    assert steal_line(after, after).endswith("not reported on this system")


def test_suite_bench_refuses_a_keep_folder_it_cannot_write_before_it_trains(write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0], methods=["student_ce"], train={"epochs": 1, "batch_size": 128}, **SMALL)
    (tmp_path / "a_file").write_text("")
    assert main(["bench", "suite", str(path), "--keep", str(tmp_path / "a_file")]) == 2
    out, err = capsys.readouterr()
    assert "--keep" in err and len(err.strip().splitlines()) == 1
    assert "training" not in out and "teacher" not in out


def test_wait_policy_bench_times_each_setting_idle_and_loaded(needs_fashion_mnist, write_suite, tmp_path, capsys):
    path = write_suite(seeds=[0], methods=["student_ce", "vanilla_kd"], **SMALL)
    assert main(["bench", "wait-policy", "--suite", str(path), "--train-size", "256", "--rounds", "1", "--load", "1",
                 "--threads", "1", "--settings", "passive", "spin 10k", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the records were the same under every setting, idle and loaded" in out
    for setting in ("passive", "spin 10k"):
        for condition in ("idle", "loaded"):
            assert re.search(rf"round 1, {condition}, {setting}: [\d.]+ s", out)
        assert re.search(rf"^\| {setting} \| [\d.]+ s \([\d.]+\) \| [\d.]+ s \([\d.]+\) \| [\d.]+ \|$", out, re.MULTILINE)


@pytest.mark.skipif(cores() < 2, reason="two worker processes need two cores")
def test_suite_bench_runs_on_the_suites_executor_and_gives_the_overlapping_groups_under_the_cells(
        needs_fashion_mnist, write_suite, tmp_path, capsys):
    """A suite whose ``executor:`` section names worker processes is timed on them, as ``kdbench run``
    would run it: one seed on two workers, its group cut in two."""
    path = write_suite(seeds=[0], methods=["student_ce", "vanilla_kd"], train={"epochs": 1, "batch_size": 128},
                       executor={"name": "processes", "threads": 1}, **SMALL)
    assert main(["bench", "suite", str(path), "--results-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "cells: processes:2, 1 thread(s) per cell" in out and "2 records, 2 ok" in out
    rows = dict(re.findall(r"^\| (.+?) \| \**([\d.]+)\** \|", out, re.MULTILINE))
    phases = ["data and checks", "teacher (trained or verified)", "cells, on 2 worker processes at once", "report"]
    assert set(phases) <= set(rows), rows
    assert sum(float(rows[p]) for p in phases) == pytest.approx(float(rows["**total**"]), abs=0.1 * len(phases))
    longest = float(rows["  seed 0 (2 cells in groups of 1 + 1), its longest group"])
    assert 0 < longest < float(rows["cells, on 2 worker processes at once"])
    assert "records and claims between groups" not in rows
