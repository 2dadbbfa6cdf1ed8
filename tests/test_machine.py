"""The machine in every record and in the leaderboard: CPU bits hold per processor model and thread
count, so a record names the processor's model (not only ``x86_64``) and how many logical CPUs it had."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from kdbench.cli import main
from kdbench.report import build_report, build_reports
from kdbench.train.environment import cpu_count, cpu_model, environment
from kdbench.train.records import undeclared

from tests.test_report import make_record, write_records

ROOT = Path(__file__).resolve().parents[1]


def test_the_record_names_the_processor_model_and_its_logical_cpus():
    env = environment(torch.device("cpu"), True)
    assert env["cpu_model"] == cpu_model() and env["cpu_count"] == cpu_count() >= 1
    assert undeclared({"environment": env}) == []
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE) if cpuinfo.exists() else []
    if names:  # Linux on x86: the model, where platform.processor() gives only the architecture
        assert env["cpu_model"] == names[0].strip() and env["cpu_model"] != env["device_name"]
    if hasattr(os, "sched_getaffinity"):
        assert env["cpu_count"] == len(os.sched_getaffinity(0))


def _with_machine(rec: dict, model: str, cpus: int) -> dict:
    return {**rec, "environment": {**rec["environment"], "cpu_model": model, "cpu_count": cpus}}


def test_the_leaderboard_names_the_machine_and_warns_when_records_come_from_two(tmp_path):
    recs = [_with_machine(make_record(m, s, 80.0 + s), "AMD EPYC 7B13", 16)
            for m in ("student_ce", "vanilla_kd") for s in range(3)]
    write_records(tmp_path / "r", "t", recs)
    md = build_report("t", tmp_path / "r", tmp_path / "rep").read_text()
    assert "cpu (x86_64; processor AMD EPYC 7B13, 16 logical CPUs), torch 2.14.1, 2 threads" in md
    assert "different environments" not in md
    recs[0] = _with_machine(recs[0], "Intel(R) Xeon(R) CPU @ 2.00GHz", 2)
    write_records(tmp_path / "r", "t", recs)
    md = build_report("t", tmp_path / "r", tmp_path / "rep").read_text()
    assert "the runs come from different environments (cpu_model: AMD EPYC 7B13, Intel(R) Xeon(R) CPU @ 2.00GHz)" in md


def test_the_committed_reference_reports_are_regenerated_identically(tmp_path, monkeypatch):
    """Its records predate the processor fields: the report of them is what was committed."""
    monkeypatch.chdir(ROOT)
    build_reports(["default", "default-tuned"], Path("report/reference/results"), tmp_path)
    reference = ROOT / "report" / "reference"
    for name in ("default/leaderboard.md", "default/summary.csv", "default/runs.csv", "default/comparisons.csv",
                 "default-tuned/leaderboard.md", "default-tuned/summary.csv", "combined.md", "combined.csv"):
        assert (tmp_path / name).read_text() == (reference / name).read_text(), name


def test_compare_names_a_processor_difference(tmp_path, capsys):
    recs = [make_record(m, s, 80.0 + s) for m in ("student_ce", "vanilla_kd") for s in range(3)]
    write_records(tmp_path / "a", "default", recs)
    write_records(tmp_path / "b", "default", [_with_machine(r, "AMD EPYC 7B13", 16) for r in recs])
    main(["compare", str(tmp_path / "a" / "default"), str(tmp_path / "b" / "default")])
    out = capsys.readouterr().out
    assert "processor differs: environment.cpu_model: None vs AMD EPYC 7B13; environment.cpu_count: None vs 16" in out
