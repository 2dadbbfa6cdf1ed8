"""The report, from hand-written records with known values to the numbers, notes and files it produces.

Every expected number is computed by hand and written as a literal (t_{0.975,2} = 4.302653).
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from kdbench.cli import main
from kdbench.report import build_report
from kdbench.report.facts import suite_facts
from kdbench.report.published import published_table
from kdbench.report.stats import estimate, paired_differences, win_rate

FMNIST_TRAIN = {"epochs": 3, "batch_size": 128,
                "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
                "schedule": {"name": "cosine", "milestones": [], "gamma": 0.1}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_record(label, seed, final, *, method=None, status="ok", error=None, reconstructed=False,
                dataset="fashion_mnist", teacher="fmnist_teacher", student="fmnist_student", teacher_acc=90.0,
                train=FMNIST_TRAIN, inference_params=6866, cost_s=30.0):
    """A run record with the fields the report reads; ``final`` None: a run that never finished."""
    accs = [] if final is None else [final - 4.0, final + 0.5, final]
    if status == "diverged":
        accs = accs[:1]
    return {
        "suite": "t", "label": label, "method": method or label, "reconstructed": reconstructed, "seed": seed,
        "status": status, "error": error, "config_hash": f"{label}-{seed}",
        "config": {"dataset": dataset, "train": train, "seed": seed},
        "dataset": {"name": dataset, "source": "test", "sha256": "d" * 64, "n_train": 20000, "n_test": 10000},
        "student_model": student, "teacher_model": teacher,
        "teacher_sha256": None if label == "student_ce" else "ab" * 32,
        "teacher_acc": None if label == "student_ce" else teacher_acc,
        "teacher_n_train": None if label == "student_ce" else 60000,
        "environment": {"torch": "2.14.1", "device": "cpu", "device_name": "x86_64", "threads": 2,
                        "deterministic": True},
        "epochs": [{"epoch": i + 1, "lr_end": 0.01, "loss": {"total": 1.0}, "test_acc": a, "train_s": 1.0}
                   for i, a in enumerate(accs)],
        "final_acc": final if status == "ok" else None,
        "best_acc": max(accs) if accs else None,
        "params": {"student": 6866, "extra_trainable": 0, "inference": inference_params},
        "inference_flops": 903808, "cost_s": cost_s, "wall_s": 3 * cost_s,  # a lockstep group's wall time
        "images_per_s": 2000.0, "peak_memory_mb": 1000.0, "peak_memory_kind": "cpu_process_peak_rss",
    }


def write_records(results: Path, suite: str, records: list[dict]) -> Path:
    runs = results / suite / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for r in records:
        (runs / f"{r['label']}__seed{r['seed']}.json").write_text(json.dumps(r))
    return runs


# ---------------------------------------------------------------------------------- statistics


def test_estimate_of_three_seeds():
    e = estimate([80.0, 82.0, 84.0])
    assert (e.n, e.mean, e.std) == (3, 82.0, 2.0)
    assert e.half_width == pytest.approx(4.968275, abs=1e-6)  # 4.302653 * 2 / sqrt(3)
    assert (e.low, e.high) == pytest.approx((77.031725, 86.968275), abs=1e-6)


def test_one_or_no_value_has_no_interval():
    one, none = estimate([81.0]), estimate([])
    assert one.mean == 81.0 and one.std != one.std and one.half_width != one.half_width  # NaN
    assert none.n == 0 and none.mean != none.mean


def test_paired_differences_and_win_rate():
    d = paired_differences({0: 81.0, 1: 83.0, 2: 82.0, 3: 99.0}, {0: 80.0, 1: 81.0, 2: 82.0})
    assert d == {0: 1.0, 1: 2.0, 2: 0.0}  # seed 3 has no partner
    e = estimate(d.values())
    assert (e.mean, e.std) == (1.0, 1.0)
    assert e.half_width == pytest.approx(2.484138, abs=1e-6)  # 4.302653 / sqrt(3)
    assert win_rate(d.values()) == pytest.approx(2.5 / 3)


# ------------------------------------------------------------------------- one report, many checks


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """student_ce 80/81/82, vanilla_kd 81/83/85, kd_layer (reconstructed) 81/83/82, a diverged seed,
    a method whose runs all failed, a truncated record and one missing its status."""
    results = tmp_path_factory.mktemp("results")
    records = (
        [make_record("student_ce", s, a, cost_s=10.0) for s, a in enumerate([80.0, 81.0, 82.0])]
        + [make_record("vanilla_kd", s, a, cost_s=20.0) for s, a in enumerate([81.0, 83.0, 85.0])]
        + [make_record("kd_layer", s, a, reconstructed=True, inference_params=9000, cost_s=40.0)
           for s, a in enumerate([81.0, 83.0, 82.0])]
        + [make_record("srrl", 0, 85.0), make_record("srrl", 1, 85.5),
           make_record("srrl", 2, None, status="diverged", error="non-finite loss at epoch 2: {'kd': nan}")]
        + [make_record("boom", s, None, status="failed", error="RuntimeError: boom | in epoch 2") for s in (0, 1)]
    )
    runs = write_records(results, "t", records)
    (runs / "truncated__seed0.json").write_text(json.dumps(make_record("truncated", 0, 90.0))[:200])
    missing = make_record("nostatus", 0, 90.0)
    del missing["status"]
    (runs / "nostatus__seed0.json").write_text(json.dumps(missing))
    path = build_report("t", results, tmp_path_factory.mktemp("report"))
    summary = pd.read_csv(path.parent / "summary.csv").set_index("label")
    return path, summary


def test_summary_statistics_by_hand(report):
    _, s = report
    kd = s.loc["vanilla_kd"]
    assert (kd.seeds_ok, kd.seeds_total, kd.final_acc_mean, kd.final_acc_std) == (3, 3, 83.0, 2.0)
    assert (kd.final_acc_ci_low, kd.final_acc_ci_high) == pytest.approx((78.031725, 87.968275), abs=1e-6)
    layer = s.loc["kd_layer"]  # vs student_ce: d = 1, 2, 0
    assert (layer.delta_vs_student_ce_mean, layer.delta_vs_student_ce_std) == pytest.approx((1.0, 1.0))
    assert layer.delta_vs_student_ce_ci_high - 1.0 == pytest.approx(2.484138, abs=1e-6)
    assert layer.win_rate_vs_student_ce == pytest.approx(2.5 / 3)
    # vs vanilla_kd: d = 0, 0, -3: mean -1, std sqrt(3), half-width 4.302653 * sqrt(3) / sqrt(3); two ties
    assert layer.delta_vs_vanilla_kd_mean == pytest.approx(-1.0)
    assert layer.delta_vs_vanilla_kd_std == pytest.approx(1.732051, abs=1e-6)
    assert layer.delta_vs_vanilla_kd_ci_high == pytest.approx(-1.0 + 4.302653, abs=1e-6)
    assert layer.win_rate_vs_vanilla_kd == pytest.approx(1 / 3)
    srrl = s.loc["srrl"]  # the diverged seed 2 is out of the mean and out of the pairing
    assert (srrl.seeds_ok, srrl.seeds_total, srrl.final_acc_mean, srrl.delta_vs_student_ce_n) == (2, 3, 85.25, 2)
    assert srrl.delta_vs_student_ce_mean == pytest.approx(4.75)  # (85 - 80 + 85.5 - 81) / 2
    assert (layer.cost_s_mean, layer.inference_params, layer.extra_trainable_params) == (40.0, 9000, 0)
    assert list(s.index) == ["srrl", "vanilla_kd", "kd_layer", "student_ce", "boom"]  # ranked; no ok run last
    assert s.loc["boom", "seeds_ok"] == 0 and pd.isna(s.loc["boom", "rank"])


def markdown_tables(md: str) -> dict[str, dict[str, list[str]]]:
    """Each table of a markdown page under the heading above it (the first: "main"), as
    {heading: {method cell: the row's cells}}."""
    tables, heading = {}, "main"
    for line in md.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("| ") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            tables.setdefault(heading, {}).setdefault("_header", cells) if not tables.get(heading) else None
            tables[heading].setdefault(cells[1], cells)
    return tables


def test_leaderboard_rows_and_notes(report):
    path, _ = report
    md = path.read_text()
    t = markdown_tables(md)
    main_rows, details = t["main"], t["Details"]
    assert len(main_rows["_header"]) <= 8
    assert [(cells[0], name) for name, cells in main_rows.items() if name != "method"] == [
        ("rank", "_header"), ("–", "teacher: fmnist_teacher"), ("1–4", "srrl"), ("1–4", "vanilla_kd"),
        ("1–4", "kd_layer (reconstructed)"), ("1–4", "student_ce"), ("–", "boom")]
    layer = " | ".join(main_rows["kd_layer (reconstructed)"])
    assert "82.00 [79.52, 84.48]" in layer and "+1.00 [-1.48, +3.48]" in layer and "not separated (p " in layer
    assert "not separated: 2 paired seeds (a test needs 3)" in " | ".join(main_rows["srrl"])
    layer = " | ".join(details["kd_layer (reconstructed)"])
    assert "82.00 ± 1.00" in layer and "2.5/3" in layer and "-1.00 [-5.30, +3.30]" in layer and "1/3" in layer
    rows = {name: " | ".join(cells) for name, cells in details.items()}
    assert "83.00 [78.03, 87.97]" in " | ".join(main_rows["vanilla_kd"])
    assert "(baseline)" in rows["vanilla_kd"]
    assert "2/3" in " | ".join(main_rows["srrl"]) and "seed 2 diverged: non-finite loss at epoch 2" in rows["srrl"]
    boom = rows["boom"]  # all failed: a row with its status, no rank, the pipe escaped
    assert "0/2" in " | ".join(main_rows["boom"]) and r"seeds 0, 1 failed: RuntimeError: boom \| in epoch 2" in boom
    assert rows["teacher: fmnist_teacher"].count("90.00") == 1 and "sha256 abababababab" in md
    assert "## Runs that did not finish ok" in md and "`boom` seed 1: **failed**" in md
    assert "final-epoch accuracy ranks; best epoch is shown but never used for ranking" in md
    assert "3 epochs, batch 128, SGD (lr 0.05, momentum 0.9, weight decay 0.0005, Nesterov), cosine schedule" in md
    assert "20,000 images (n_train)" in md and "10,000 (n_test)" in md and "60,000 (teacher_n_train)" in md
    assert "cpu (x86_64), torch 2.14.1, 2 threads per cell, deterministic: True" in md
    assert "**Reconstructed**: kd_layer" in md
    assert "Warning" not in md


def test_unreadable_records_are_listed_and_skipped(report):
    path, _ = report
    md = path.read_text()
    assert "## Unreadable records (skipped)" in md
    assert "`truncated__seed0.json`: invalid JSON" in md and "`nostatus__seed0.json`: missing field 'status'" in md
    runs = pd.read_csv(path.parent / "runs.csv")
    assert set(runs["label"]) == {"student_ce", "vanilla_kd", "kd_layer", "srrl", "boom"} and len(runs) == 14


def test_records_that_are_not_json_files_within_limits_are_listed_and_skipped(tmp_path):
    """Issue 24: a record nested 100,000 levels deep, a link to /dev/zero and a FIFO are each listed
    with the reason, and the report is built from the readable record (a FIFO once blocked the
    report forever: a watchdog opens it for writing after 10 s, so a regression fails, not hangs)."""
    runs = write_records(tmp_path / "results", "s", [make_record("student_ce", 0, 80.0)])
    (runs / "deep__seed0.json").write_text("[" * 100_000 + "]" * 100_000)
    (runs / "zero__seed0.json").symlink_to("/dev/zero")
    os.mkfifo(runs / "fifo__seed0.json")
    done = threading.Event()
    threading.Thread(target=_unblock, args=(runs / "fifo__seed0.json", done), daemon=True).start()
    started = time.monotonic()
    try:
        code = main(["report", "s", "--results-dir", str(tmp_path / "results"), "--report-dir", str(tmp_path / "rep")])
    finally:
        done.set()
    assert code == 0 and time.monotonic() - started < 10
    md = (tmp_path / "rep" / "s" / "leaderboard.md").read_text()
    assert "`deep__seed0.json`: invalid JSON (nested more than 64 levels deep)" in md
    assert "`zero__seed0.json`: not a regular file (a character device)" in md
    assert "`fifo__seed0.json`: not a regular file (a FIFO)" in md


def _unblock(fifo: Path, done: threading.Event) -> None:
    if not done.wait(10):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader blocked in open() gets EOF
        except OSError:
            pass


def test_runs_csv_flattens_scalars_and_skips_lists(report):
    path, _ = report
    columns = pd.read_csv(path.parent / "runs.csv").columns
    assert {"params.student", "params.inference", "environment.device", "config.train.optimizer.lr"} <= set(columns)
    assert not any(c.startswith("epochs") or c.endswith("milestones") for c in columns)


def test_figures_are_drawn_and_linked(report):
    path, _ = report
    figures = sorted((path.parent / "figures").glob("*.png"))
    assert [f.name for f in figures] == ["acc_vs_cost.png", "acc_vs_inference_params.png",
                                         "accuracy_curves.png", "delta_vs_vanilla_kd.png", "final_acc.png"]
    for f in figures:
        data = f.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"(figures/{f.name})" in path.read_text()


# ---------------------------------------------------------------------------- published numbers


def test_published_numbers_beside_ours_and_a_skipped_figure(tmp_path):
    """cifar100 resnet32x4 -> resnet8x4 with no vanilla_kd: paper numbers and Δ shown, Δ-vs-KD figure skipped."""
    pair = {"dataset": "cifar100", "teacher": "resnet32x4", "student": "resnet8x4", "teacher_acc": 79.0}
    records = ([make_record("student_ce", s, a, **pair) for s, a in enumerate([72.0, 72.5, 73.0])]
               + [make_record("srrl", s, a, **pair) for s, a in enumerate([75.0, 76.0, 76.0])])
    write_records(tmp_path / "results", "c", records)
    stale = tmp_path / "report" / "c" / "figures" / "delta_vs_vanilla_kd.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC)
    md = build_report("c", tmp_path / "results", tmp_path / "report").read_text()
    rows = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "72.50 (last epoch)" in rows["student_ce"] and "| +0.00 " in rows["student_ce"]
    assert "75.39 (epoch not stated)" in rows["srrl"] and "+0.28" in rows["srrl"]  # 75.6667 - 75.39
    assert "79.42 (last epoch)" in rows["teacher: resnet32x4"] and "-0.42" in rows["teacher: resnet32x4"]
    assert "- dkd: 76.32 (best epoch) — Zhao et al., CVPR 2022 (DKD)" in md
    assert "third-party; CE 1 + KD 1 + SRRL 1" in md
    assert "Paired Δ vs vanilla_kd per method: not drawn — no vanilla_kd run finished ok" in md
    assert not stale.exists()


def test_published_table_rows_are_sourced():
    table = published_table()
    assert set(table["epoch_kind"]) <= {"last", "best", "unknown"} and table["source"].str.len().min() > 10
    teachers = table[table["method"] == "teacher"]
    assert len(teachers) == 13 and len(table[table["method"] == "student_ce"]) == 13
    with open(Path(__file__).parents[1] / "benchmarks" / "kdbench" / "report" / "published_cifar100.csv") as f:
        kd = [r for r in csv.DictReader(f) if (r["teacher"], r["student"], r["method"]) ==
              ("resnet32x4", "resnet8x4", "vanilla_kd")]
    assert [(r["acc"], r["epoch_kind"]) for r in kd] == [("73.33", "last")]


# ----------------------------------------------------------------------------------- protocol


def test_mixed_budgets_are_a_warning():
    longer = {**FMNIST_TRAIN, "epochs": 5}
    facts = suite_facts("t", [make_record("student_ce", 0, 80.0), make_record("vanilla_kd", 0, 81.0),
                              make_record("vanilla_kd", 1, 81.0, train=longer)])
    assert facts.train["epochs"] == 3
    assert any("training budget (config.train)" in w and "5 epochs" in w for w in facts.warnings)


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("content, fragment", [
    (None, "s/runs does not exist"), ({}, "holds no *.json file"),
    ({"a__seed0.json": '{"label": "a", "se'}, "no readable run record in"),
], ids=["missing", "empty", "all-unreadable"])
def test_no_records_is_a_one_line_error(capsys, tmp_path, content, fragment):
    if content is not None:
        runs = tmp_path / "results" / "s" / "runs"
        runs.mkdir(parents=True)
        for name, text in content.items():
            (runs / name).write_text(text)
    code = main(["report", "s", "--results-dir", str(tmp_path / "results"), "--report-dir", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("kdbench: error: "), err
    assert fragment in err, err
    assert not (tmp_path / "rep").exists()


def test_cli_prints_the_leaderboard_path(capsys, tmp_path):
    write_records(tmp_path / "results", "s", [make_record("student_ce", 0, 80.0)])
    code = main(["report", "s", "--results-dir", str(tmp_path / "results"), "--report-dir", str(tmp_path / "rep")])
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "rep" / "s" / "leaderboard.md")


def test_kernel_gap_is_averaged_over_ok_seeds_and_shown(tmp_path):
    recs = [make_record("vanilla_kd", s, f) for s, f in enumerate((82.0, 83.0, 84.0))]
    for r, gap in zip(recs, (0.30, 0.50, 0.70)):
        r["diagnostics"] = {"kernel_gap_test": gap}
    recs.append(make_record("vanilla_kd", 3, None, status="failed", error="RuntimeError: x"))
    recs[-1]["diagnostics"] = {"kernel_gap_test": None}
    write_records(tmp_path / "results", "t", recs)
    board = build_report("t", tmp_path / "results", tmp_path / "report").read_text()
    summary = pd.read_csv(tmp_path / "report" / "t" / "summary.csv")
    assert summary.loc[0, "kernel_gap_test_mean"] == pytest.approx(0.5)
    assert "kernel gap" in board and "0.500" in board


def test_cost_is_the_run_alone_and_falls_back_to_wall_time_for_older_records():
    from kdbench.report.tables import cost_seconds

    rec = make_record("vanilla_kd", 0, 80.0, cost_s=12.0)
    assert cost_seconds(rec) == 12.0  # not the group's wall time beside it
    del rec["cost_s"]
    assert cost_seconds(rec) == rec["wall_s"]
