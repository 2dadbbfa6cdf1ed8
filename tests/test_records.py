"""The run record's schema: declared once (``kdbench.train.records.FIELDS``), documented in
docs/records.md, enforced when a record is written and when the report reads one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kdbench.train import records
from kdbench.train.records import FIELDS, problem, undeclared, write_record

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RUNS = sorted((ROOT / "report" / "reference" / "results").rglob("runs/*.json"))


def documented_rows() -> dict[str, list[str]]:
    """docs/records.md's field table: path -> the row's cells."""
    rows = {}
    for line in (ROOT / "docs" / "records.md").read_text().splitlines():
        if m := re.match(r"\| `([^`]+)` \|(.*)\|\s*$", line):
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def documented_range(f) -> str:
    """How docs/records.md writes a field's range: ``0 to 100``, ``≥ 0``, or nothing."""
    if f.low is None and f.high is None:
        return ""
    def number(x: float) -> str:
        return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

    if f.high is None:
        return f"≥ {number(f.low)}"
    return f"{number(f.low)} to {number(f.high)}"


def test_every_field_is_documented_with_its_unit_range_and_meaning_and_nothing_else_is():
    rows = documented_rows()
    assert sorted(rows) == sorted(f.path for f in FIELDS)
    for f in FIELDS:
        assert rows[f.path][1] == f.unit, f.path
        assert rows[f.path][2] == documented_range(f), f.path
        assert rows[f.path][4] == f.meaning, f.path


def test_the_committed_reference_records_fit_the_schema():
    assert len(REFERENCE_RUNS) >= 21
    for path in REFERENCE_RUNS:
        rec = json.loads(path.read_text())
        assert undeclared(rec) == [], path.name
        assert problem(rec) is None, path.name


def good_record() -> dict:
    return json.loads(REFERENCE_RUNS[0].read_text())


def test_writing_an_undeclared_field_is_refused_and_writes_nothing(tmp_path):
    rec = good_record()
    write_record(tmp_path / "ok.json", rec)
    assert json.loads((tmp_path / "ok.json").read_text()) == rec
    for extra in ({"surprise": 1}, {"time_split": {**rec["time_split"], "gpu_s": 1.0}},
                  {"epochs": [{**rec["epochs"][0], "val_acc": 50.0}]}):
        with pytest.raises(ValueError, match="does not declare"):
            write_record(tmp_path / "bad.json", {**rec, **extra})
        assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("change, why", [
    ({"final_acc": 500.0}, "'final_acc' is 500.0, outside"),
    ({"final_acc": None}, "status ok without 'final_acc'"),
    ({"epochs": []}, "status ok without 'epochs'"),
    ({"seed": "0"}, "'seed' is not a int"),
    ({"seed": True}, "'seed' is not a int"),
    ({"status": "great"}, "unknown status"),
    ({"cost_s": -1.0}, "'cost_s' is -1.0, outside"),
    ({"teacher_acc": "nan"}, "'teacher_acc' is nan, outside"),
    ({"epochs": [{"epoch": 1, "test_acc": 101.0}]}, "'epochs[].test_acc' is 101.0"),
])
def test_a_record_out_of_its_schema_is_named(change, why):
    assert why in problem({**good_record(), **change})


def test_what_may_be_absent_or_non_finite_is_accepted():
    rec = good_record()
    assert problem({k: v for k, v in rec.items() if k in ("label", "method", "seed", "status")}
                   | {"status": "failed"}) is None
    assert problem({**rec, "diagnostics": {"kernel_gap_test": "nan"}}) is None
    assert problem({k: v for k, v in rec.items() if k != "label"}) == "missing field 'label'"
    assert records.SCHEMA_VERSION == rec["schema"]


# --- issue 24: ranges on read


def placed(rec: dict, path: str, value) -> dict:
    """``rec`` with ``value`` at ``path`` (dotted; ``[]``: in the first element of that list, made
    when the list is empty)."""
    rec = json.loads(json.dumps(rec))
    node, *parts = [rec, *path.split(".")]
    for i, part in enumerate(parts):
        key, each, last = part.removesuffix("[]"), part.endswith("[]"), i == len(parts) - 1
        if last:
            node[key] = value
        elif each:
            node[key] = node.get(key) or [{}]
            node = node[key][0]
        else:
            node[key] = node[key] if isinstance(node.get(key), dict) else {}
            node = node[key]
    return rec


RANGED = [f for f in FIELDS if f.low is not None or f.high is not None]


def test_counts_times_and_accuracies_all_have_ranges():
    """Every number that is a count, a time, a size or a percentage is declared with its range."""
    for f in FIELDS:
        if f.unit in ("%", "s", "images", "parameters", "FLOPs", "epochs", "cells", "threads", "trials", "MB",
                      "images/s"):
            assert f in RANGED, f.path
    assert len(RANGED) >= 39


@pytest.mark.parametrize("field", RANGED, ids=[f.path for f in RANGED])
def test_every_declared_range_is_enforced_on_read(field):
    good = good_record()
    inside = field.low if field.low is not None else field.high
    assert problem(placed(good, field.path, int(inside) if int in field.types else inside)) is None
    for outside in ([field.low - 1] if field.low is not None else []) + ([field.high + 1] if field.high is not None else []):
        value = int(outside) if int in field.types and float not in field.types else float(outside)
        why = problem(placed(good, field.path, value))
        assert why is not None and f"field {field.path!r} is {value}, outside" in why, (field.path, why)


def test_the_report_lists_a_record_out_of_range_as_invalid_and_ranks_the_rest(tmp_path, capsys):
    from kdbench.cli import main

    runs = tmp_path / "r" / "default" / "runs"
    runs.mkdir(parents=True)
    for path in REFERENCE_RUNS:
        if path.parent.parent.name == "default":
            (runs / path.name).write_text(path.read_text())
    forged = runs / "student_ce__seed0.json"
    forged.write_text(json.dumps({**json.loads(forged.read_text()), "final_acc": 500.0}))
    inflated = runs / "vanilla_kd__seed0.json"
    inflated.write_text(json.dumps({**json.loads(inflated.read_text()), "params": {"student": -5, "extra_trainable": 0,
                                                                                  "inference": 1}}))
    assert main(["report", "default", "--results-dir", str(tmp_path / "r"), "--report-dir", str(tmp_path / "rep")]) == 0
    board = (tmp_path / "rep" / "default" / "leaderboard.md").read_text()
    assert "`student_ce__seed0.json`: field 'final_acc' is 500.0, outside [0.0, 100.0]" in board
    assert "`vanilla_kd__seed0.json`: field 'params.student' is -5, outside [0.0, ∞]" in board
    assert "500" not in board.split("## Unreadable")[0]
