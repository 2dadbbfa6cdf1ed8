"""Fair tuning (issue 21): trials on a validation split that never see the test split, a choice made
by a fixed rule from the trial records alone, and final cells at that choice; resumable, and the
same through an executor as in one process (CPU, one thread per cell).

For CI's time: 600 training images, 2 epochs, 3 trials, two tuning seeds, three methods (one without
a teacher and nothing to tune, one with, one with offline targets and a discrete space).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from kdbench.cli import main
from kdbench.config.suite import SUITES_DIR, load_suite
from kdbench.data.datasets import DATASETS
from kdbench.data.validation import hold_out, validation_counts
from kdbench.run import rounds as runner
from kdbench.run.plan import plan, prepare, task_of
from kdbench.run.progress import Progress
from kdbench.run.request import RunRequest
from kdbench.run.rounds import groups, run_cells, shared_runs, trial_run
from kdbench.run.trials import trial_points
from kdbench.run.tuning import Chosen, select

from tests import test_executors as executors
from tests.test_end_to_end import same_results
from tests.test_executors import kdbench

METHODS = ["student_ce", "vanilla_kd", "bregman_pca"]
TUNING = {"trials": 3, "seeds": [1000, 1001], "validation": {"fraction": 0.1, "seed": 0}}


def tiny(raw: dict, **changes) -> dict:
    raw.update(name="tiny", train_size=600, test_size=300, **changes)
    raw["teacher"].pop("min_acc", None)
    if "checkpoint" in raw["teacher"]:  # the default suites' committed file, named from the copy's folder
        raw["teacher"]["checkpoint"] = str(SUITES_DIR / raw["teacher"]["checkpoint"])
    else:
        raw["teacher"].update(train_size=600)
        raw["teacher"]["train"]["epochs"] = 1
    raw["train"]["epochs"] = 2
    return raw


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> str:
    raw = tiny(yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text()), methods=METHODS, seeds=[0], tuning=TUNING)
    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def records(results: Path) -> dict[str, dict]:
    return {p.relative_to(results).as_posix(): json.loads(p.read_text())
            for p in sorted(results.glob("tiny/**/runs/*.json"))}


def choices(results: Path) -> dict[str, dict]:
    """Each method's choice, without its cost (a measurement: it differs between two runs)."""
    return {r["label"]: {k: v for k, v in r["tuning"].items() if k != "tuning_cost_s"}
            for r in records(results).values() if "tuning" in r and r["seed"] == 0}


@pytest.fixture(scope="module")
def in_process(needs_fashion_mnist, suite, tmp_path_factory):
    results = tmp_path_factory.mktemp("local")
    done = subprocess.run(kdbench(suite, "--results-dir", str(results)), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    recs = records(results)
    assert len(recs) == (1 + 3 + 3) * 2 + 3 and all(r["status"] == "ok" for r in recs.values())
    return results


def same_as_in_process(results: Path, in_process: Path) -> None:
    executors.same_as_in_process(results, in_process, read=records)
    assert choices(results) == choices(in_process)


def test_a_tuned_run_records_trials_then_final_cells_at_the_choice(in_process):
    recs = records(in_process)
    trials = {k: r for k, r in recs.items() if "/tuning/" in k}
    assert sorted(k.split("/")[-1] for k in trials) == sorted(
        f"{m}__trial{i}__seed{s}.json" for m, n in (("student_ce", 1), ("vanilla_kd", 3), ("bregman_pca", 3))
        for i in range(n) for s in (1000, 1001))
    for r in trials.values():
        assert r["evaluated_on"] == "validation" and r["dataset"]["n_train"] + r["dataset"]["n_test"] == 600
        assert r["dataset"]["n_test"] == next(iter(trials.values()))["dataset"]["n_test"] > 0
        assert r["group"]["size"] == 7 and "tuning" not in r
    kd = {r["trial"]["index"]: r for r in trials.values() if r["label"] == "vanilla_kd" and r["seed"] == 1000}
    assert kd[0]["hyperparameters"] == {"T": 4.0, "gamma": 0.1, "alpha": 0.9}
    assert len({json.dumps(r["hyperparameters"], sort_keys=True) for r in kd.values()}) == 3
    assert kd[1]["trial"]["sampler"] == {"name": "halton", "scramble": True, "seed": 0,
                                         "dimensions": ["T", "alpha", "gamma"]}
    for label, t in choices(in_process).items():
        final = recs[f"tiny/runs/{label}__seed0.json"]
        chosen = recs[f"tiny/tuning/runs/{label}__trial{t['trial']}__seed1000.json"]
        assert final["hyperparameters"] == chosen["hyperparameters"] and final["dataset"]["n_train"] == 600
        assert "evaluated_on" not in final and final["config"]["tuning"]["trial"] == t["trial"]
        mine = [r for r in trials.values() if r["label"] == label]
        assert final["tuning"]["tuning_cost_s"] == pytest.approx(sum(r["cost_s"] for r in mine))
        assert select(list(trials.values()), (1000, 1001))[label].trial == t["trial"]


def test_trials_cannot_read_the_test_split(needs_fashion_mnist, suite, tmp_path):
    """The trial phase runs with the suite's test split removed from memory: any code path that read
    it would fail its cell."""
    p = prepare(RunRequest(load_suite(suite), results_dir=str(tmp_path)))
    shared, trials = shared_runs(p, lambda line: None)
    counts = torch.bincount(p.data.train.labels, minlength=10)
    assert trials.data is p.trial_data and len(trials.data.train) + len(trials.data.test) == 600
    assert torch.bincount(trials.data.test.labels, minlength=10).tolist() == validation_counts(counts.tolist(), 0.1, None)
    p.data.test = p.teacher_data.test = None
    shared.teacher.test_features.fill_(float("nan"))  # the teacher's features on the test split
    recs = run_cells(p.trials, trials, p.request, Progress(0, enabled=False), lambda line: None)
    assert [r["status"] for r in recs] == ["ok"] * 14, [r.get("error") for r in recs]
    assert all(r["diagnostics"]["kernel_gap_test"] is None or r["diagnostics"]["kernel_gap_test"] < 10 for r in recs)


def test_trial_0_is_an_untuned_cell_on_the_same_split_bit_for_bit(in_process, suite, tmp_path):
    plain = load_suite(suite)
    plain = replace(plain, tuning=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        p = prepare(RunRequest(plain, seeds=(1000,), methods=("vanilla_kd",), results_dir=str(tmp_path)))
        split = hold_out(p.data, 0.1, None, 0, "test")
        alone = trial_run(runner.shared_run(p, lambda line: None), replace(p, trial_data=split))
        (rec,) = run_cells(p.specs, alone, p.request, Progress(0, enabled=False), lambda line: None)
    finally:
        torch.set_num_threads(threads)
    trial0 = records(in_process)["tiny/tuning/runs/vanilla_kd__trial0__seed1000.json"]
    assert "trial" not in rec and rec["config_hash"] != trial0["config_hash"]
    assert same_results({**rec, "config_hash": None}, {**trial0, "config_hash": None})


def test_a_run_interrupted_in_the_trials_resumes_to_the_same_choice_and_records(
    in_process, suite, tmp_path, monkeypatch
):
    real_epoch = runner.train_epoch

    def dies_in_the_second_tuning_seed(cells, teacher, data, train, seed, epoch, **kw):
        if seed == 1001 and epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(cells, teacher, data, train, seed, epoch, **kw)

    monkeypatch.setattr(runner, "train_epoch", dies_in_the_second_tuning_seed)
    args = ["run", suite, "--results-dir", str(tmp_path), "--no-progress", "--threads", "1"]
    assert main(args) == 130
    assert len(records(tmp_path)) == 7 and list(tmp_path.glob("tiny/tuning/checkpoints/*__seed1001.pt"))
    monkeypatch.setattr(runner, "train_epoch", real_epoch)
    assert main(args) == 0
    resumed = records(tmp_path)
    assert all(r.get("resumed_from_epoch") == 1 for k, r in resumed.items() if k.endswith("__seed1001.json"))
    same_as_in_process(tmp_path, in_process)


def test_processes_give_the_in_process_choice_and_records(in_process, suite, tmp_path):
    done = subprocess.run(kdbench(suite, "--executor", "processes:2", "--max-group", "4", "--results-dir",
                                  str(tmp_path)), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    # the trials' 4 groups fill two rounds of the 2 workers; the final cells' one group is cut in two
    assert "4 group(s) of trials to processes:2" in done.stdout and "2 group(s) to processes:2" in done.stdout
    same_as_in_process(tmp_path, in_process)


def test_the_report_has_a_tuning_section_and_no_trial_in_the_leaderboard(in_process, tmp_path):
    assert main(["report", "tiny", "--results-dir", str(in_process), "--report-dir", str(tmp_path)]) == 0
    text = (tmp_path / "tiny" / "leaderboard.md").read_text()
    assert "## Tuning" in text and "| vanilla_kd |" in text and (tmp_path / "tiny/figures/tuning_budget.png").is_file()
    assert "**Tuned suite**: every number and verdict here is over the final cells only" in text
    assert len((tmp_path / "tiny" / "runs.csv").read_text().strip().splitlines()) == 1 + 3


def test_default_tuned_plans_its_trials_and_cells(needs_fashion_mnist, tmp_path):
    """The built-in suite, with smaller numbers: its tuning section as it is, a tiny budget."""
    raw = tiny(yaml.safe_load((SUITES_DIR / "default-tuned.yaml").read_text()))
    raw["tuning"]["trials"] = 2
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "epochs": 1}}))
    args = ["run", str(tmp_path / "s.yaml"), "--methods", "student_ce", "vanilla_kd", "--results-dir", str(tmp_path),
            "--no-progress"]
    assert main(args) == 0
    names = sorted(p.relative_to(tmp_path / "tiny").as_posix() for p in tmp_path.glob("tiny/**/runs/*.json"))
    assert names == sorted([*(f"runs/{m}__seed{s}.json" for m in ("student_ce", "vanilla_kd") for s in (0, 1, 2)),
                            "tuning/runs/student_ce__trial0__seed1000.json",
                            "tuning/runs/vanilla_kd__trial0__seed1000.json",
                            "tuning/runs/vanilla_kd__trial1__seed1000.json"])


# ------------------------------------------------------------------------------- pure functions


def _rec(label: str, index: int, seed: int, status: str = "ok", acc: float | None = None, of: int = 3) -> dict:
    return {"label": label, "seed": seed, "status": status, "final_acc": acc if status == "ok" else None,
            "trial": {"index": index, "of": of}, "cost_s": 1.0}


def test_the_selection_rule_on_hand_made_records():
    recs = [
        # a: trial 1 is best on seed 1 but failed on seed 2 (last); trials 0 and 2 tie at 55: the lower wins
        _rec("a", 0, 1, acc=50.0), _rec("a", 0, 2, acc=60.0), _rec("a", 1, 1, acc=90.0), _rec("a", 1, 2, "failed"),
        _rec("a", 2, 1, acc=60.0), _rec("a", 2, 2, acc=50.0),
        # b: trial 0 diverged on a seed, trial 2 misses a seed: trial 1 wins with a lower mean than either had
        _rec("b", 0, 1, acc=80.0), _rec("b", 0, 2, "diverged"), _rec("b", 1, 1, acc=40.0), _rec("b", 1, 2, acc=42.0),
        _rec("b", 2, 1, acc=99.0),
        # c: every trial failed: trial 0, no score; d: a mean over seeds beats a single best seed
        _rec("c", 0, 1, "failed", of=2), _rec("c", 0, 2, "failed", of=2), _rec("c", 1, 1, "failed", of=2),
        _rec("d", 0, 1, acc=70.0, of=2), _rec("d", 0, 2, acc=70.0, of=2), _rec("d", 1, 1, acc=90.0, of=2),
        _rec("d", 1, 2, acc=49.0, of=2),
    ]
    chosen = select(recs, (1, 2))
    assert chosen == {"a": Chosen(0, 55.0, 55.0, 6.0), "b": Chosen(1, 41.0, None, 5.0),
                      "c": Chosen(0, None, None, 3.0), "d": Chosen(0, 70.0, 70.0, 4.0)}
    assert select(list(reversed(recs)), (1, 2)) == chosen  # the order records are read in is irrelevant


def test_trial_points_are_deterministic_and_respect_fixed_and_untuned_entries(suite):
    p_suite = load_suite(suite)
    task = task_of(DATASETS["fashion_mnist"])
    spec = next(s for s in plan(p_suite, ["vanilla_kd"], None) if s.entry.label == "vanilla_kd")
    first, again = trial_points(p_suite.tuning, spec, task), trial_points(p_suite.tuning, spec, task)
    assert first == again and first[0] == spec.hyperparameters and len(first) == 3
    fixed = replace(spec, entry=replace(spec.entry, overrides={"T": 2.0}), hyperparameters={**first[0], "T": 2.0})
    assert {p["T"] for p in trial_points(p_suite.tuning, fixed, task)} == {2.0}
    assert trial_points(p_suite.tuning, replace(spec, entry=replace(spec.entry, tune=False)), task) == [first[0]]


def test_validation_counts_and_max_group():
    assert validation_counts([100, 51, 9], 0.1, None) == [10, 5, 1]
    assert validation_counts([100, 50, 10], None, 17) == [11, 5, 1]
    cells = [type("S", (), {"seed": s})() for s in (0, 0, 0, 0, 0, 1, 1)]
    assert [len(g) for g in groups(cells, True, 2)] == [2, 2, 1, 2] and len(groups(cells, True)) == 2
