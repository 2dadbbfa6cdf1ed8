"""``kdbench compare``: the same records compare equal (exit 0), a shifted method does not (exit 1), a
budget difference is named, every kind of folder is read, and bad input is a one-line error (exit 2)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from kdbench.cli import main
from kdbench.report import build_report
from kdbench.report.curves import curve_gaps

from tests.test_report import FMNIST_TRAIN, make_record, write_records

ACCS = {"student_ce": [80.0, 80.2, 80.4], "vanilla_kd": [82.0, 82.3, 82.1], "srrl": [83.0, 82.8, 83.1]}


def _records(shift: dict[str, float] = {}, train=FMNIST_TRAIN):
    return [make_record(label, s, a + shift.get(label, 0.0), train=train)
            for label, accs in ACCS.items() for s, a in enumerate(accs)]


def _compare(capsys, *args):
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_two_copies_of_the_same_records_are_within_the_margin(capsys, tmp_path):
    write_records(tmp_path / "a", "default", _records())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    code, out, _ = _compare(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 0, out
    assert "**Every method within ±1 points** (exit 0)." in out and "None: same budget" in out
    assert "Teacher test accuracy: A 90%, B 90%; B − A = +0.00" in out


def test_a_copy_of_the_reference_is_a_reproduction_and_a_changed_seed_goes_to_the_test(capsys, tmp_path):
    """The committed reference's 3 seeds spread too widely for a ±1 test to pass even against itself;
    equal accuracies seed by seed are a reproduction all the same. Change one seed and the test decides."""
    reference = Path(__file__).resolve().parents[1] / "report" / "reference" / "results" / "default"
    shutil.copytree(reference / "runs", tmp_path / "b" / "runs")
    code, out, _ = _compare(capsys, reference, tmp_path / "b")
    assert code == 0, out
    assert out.count("identical: every seed's accuracy equal") == 7
    path = tmp_path / "b" / "runs" / "srrl__seed1.json"
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "final_acc": rec["final_acc"] + 0.01}))
    code, out, _ = _compare(capsys, reference, tmp_path / "b")
    srrl = next(line for line in out.splitlines() if line.startswith("| srrl"))
    # the margin shown: the larger end of the 90% Welch interval of B − A, computed here independently
    a = [json.loads((reference / "runs" / f"srrl__seed{s}.json").read_text())["final_acc"] for s in range(3)]
    b = [acc + (0.01 if s == 1 else 0.0) for s, acc in enumerate(a)]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.95, df) * math.sqrt(va + vb)
    shown = max(abs(np.mean(b) - np.mean(a) - half), abs(np.mean(b) - np.mean(a) + half))
    assert code == 1 and f"not shown within ±1 (the data show ±{shown:.2f})" in srrl, srrl


def test_a_method_shifted_by_five_points_is_not(capsys, tmp_path):
    write_records(tmp_path / "a", "default", _records())
    write_records(tmp_path / "b", "default", _records({"srrl": 5.0}))
    code, out, _ = _compare(capsys, tmp_path / "a" / "default", tmp_path / "b" / "default" / "runs")
    assert code == 1
    srrl = next(line for line in out.splitlines() if line.startswith("| srrl"))
    assert "+5.00 [" in srrl and "not shown within ±1" in srrl
    assert "**1 of 3 methods not shown within ±1 points**: srrl (exit 1)." in out
    code, _, _ = _compare(capsys, tmp_path / "a", tmp_path / "b", "--margin", "6")
    assert code == 0  # a wide enough margin takes it in


def test_a_budget_difference_is_named(capsys, tmp_path):
    write_records(tmp_path / "a", "default", _records())
    write_records(tmp_path / "b", "default", _records(train={**FMNIST_TRAIN, "epochs": 5}))
    _, out, _ = _compare(capsys, tmp_path / "a", tmp_path / "b")
    assert "- budget differs: config.train.epochs: 3 vs 5" in out


def test_a_report_folder_compares_with_the_records_it_was_built_from(capsys, tmp_path):
    write_records(tmp_path / "results", "default", _records())
    build_report("default", tmp_path / "results", tmp_path / "report")
    code, out, _ = _compare(capsys, tmp_path / "report" / "default", tmp_path / "results")
    assert code == 0 and "runs.csv" in out and "None: same budget" in out, out


def _with_losses(records, bump=0.0, at=("srrl", 1, 2, "kr")):
    """Records with per-epoch loss terms; ``bump`` added to one (label, seed, epoch, term)."""
    out = []
    for r in records:
        epochs = []
        for e in r["epochs"]:
            loss = {"ce": 2.0 / e["epoch"], "kr": 10.0 + r["seed"], "total": 1.0}
            if (r["label"], r["seed"], e["epoch"], "kr") == at:
                loss["kr"] += bump
            epochs.append({**e, "loss": loss})
        out.append({**r, "epochs": epochs})
    return out


def test_curve_gaps_are_the_largest_per_epoch_differences():
    a = _with_losses(_records())
    b = _with_losses(_records({"vanilla_kd": 0.25}), bump=3e-6)
    gaps = {g.label: g for g in curve_gaps(a, b)}
    assert gaps["student_ce"].equal and gaps["student_ce"].seeds == 3
    # 3 seeds x 3 epochs x (3 loss terms + test accuracy) compared
    assert gaps["srrl"].values == 36 and not gaps["srrl"].equal
    assert gaps["srrl"].loss == pytest.approx(3e-6, abs=1e-12) and gaps["srrl"].accuracy == 0
    assert gaps["srrl"].loss_relative == pytest.approx(3e-6 / 11.0, rel=1e-5)  # seed 1's kr term is 11.0
    assert gaps["srrl"].loss_where == "seed 1, epoch 2, `kr`"
    assert gaps["vanilla_kd"].loss == 0 and gaps["vanilla_kd"].accuracy == pytest.approx(0.25)
    assert not curve_gaps(a[:3], b[3:])[0].seeds  # no seed on both sides: nothing compared
    nan = float("nan")
    a[0]["epochs"][0]["loss"]["ce"] = b[0]["epochs"][0]["loss"]["ce"] = nan  # the same divergence
    assert {g.label: g for g in curve_gaps(a, b)}["student_ce"].equal
    b[0]["epochs"][1]["loss"]["ce"] = nan  # one side only
    assert {g.label: g for g in curve_gaps(a, b)}["student_ce"].loss == math.inf


def test_curves_within_a_loss_gap_sets_the_exit_status(capsys, tmp_path):
    write_records(tmp_path / "a", "default", _with_losses(_records()))
    write_records(tmp_path / "b", "default", _with_losses(_records(), bump=3e-6))
    code, out, _ = _compare(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 0, out  # the accuracy test alone: every seed equal
    srrl = next(line for line in out.split("## Training curves")[1].splitlines() if line.startswith("| srrl"))
    assert "3e-06 (relative 2.7e-07)" in srrl and "seed 1, epoch 2, `kr`" in srrl, srrl
    assert "| student_ce | 3       | 0 (the same bits)" in out
    code, out, _ = _compare(capsys, tmp_path / "a", tmp_path / "b", "--curves-within", "1e-6")
    assert code == 1 and out.rstrip().endswith(
        "**Every method within ±1 points**. **Training curves further apart than 1e-06**: srrl (exit 1)."), out
    code, _, _ = _compare(capsys, tmp_path / "a", tmp_path / "b", "--curves-within", "1e-5")
    assert code == 0


def test_a_report_folder_has_no_curves_to_compare(capsys, tmp_path):
    write_records(tmp_path / "results", "default", _records())
    build_report("default", tmp_path / "results", tmp_path / "report")
    code, out, _ = _compare(capsys, tmp_path / "report" / "default", tmp_path / "results", "--curves-within", "0")
    assert code == 1 and "holds final figures only (runs.csv)" in out, out
    assert out.rstrip().endswith("**Every method within ±1 points**. **Training curves not compared** (exit 1).")


@pytest.mark.parametrize("make, args, fragment", [
    (lambda p: None, ["missing"], "not a folder"),
    (lambda p: (p / "x").mkdir(), ["x"], "holds no runs/, runs.csv or *.json"),
    (lambda p: [write_records(p / "r", s, _records()) for s in ("s1", "s2")], ["r"], "name one with --suite"),
    (lambda p: write_records(p / "r", "s1", _records()), ["r", "--suite", "s9"], "no suite 's9' there"),
    (lambda p: write_records(p / "r", "s1", _records()), ["r", "--margin", "0"], "--margin must be a positive"),
    (lambda p: write_records(p / "r", "s1", _records()), ["r", "--curves-within", "-1"], "--curves-within must be"),
], ids=["missing", "empty", "two-suites", "wrong-suite", "margin", "curves-within"])
def test_bad_input_is_a_one_line_error(capsys, tmp_path, monkeypatch, make, args, fragment):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    code, _, err = _compare(capsys, args[0], args[0], *args[1:])
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
