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


def test_every_field_is_documented_with_its_unit_and_nothing_else_is():
    rows = documented_rows()
    assert sorted(rows) == sorted(f.path for f in FIELDS)
    for f in FIELDS:
        assert rows[f.path][1] == f.unit, f.path
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
