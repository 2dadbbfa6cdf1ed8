"""Nothing lost, nothing trusted unchecked: kills at random points, damaged records, checkpoints and
caches, a disk that fills up. After each, a rerun of the same command gives the records an
uninterrupted run gives (CPU, same thread count), and nothing damaged runs code or is reused."""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from kdbench.api import atomic
from kdbench.cli import main
from kdbench.train import records
from kdbench.train.cell import checkpoint_path
from kdbench.train.records import record_path

from tests.test_bad_input import RunsCode
from tests.test_end_to_end import same_results

METHODS = ["student_ce", "vanilla_kd", "bregman_pca"]  # no teacher; the teacher; an offline cache


#: A smaller slice than the smoke suite's, for the tests that need a teacher but no timing window.
SMALL = {"train_size": 500, "test_size": 300,
         "teacher": {"train_size": 500, "train": {"epochs": 1, "batch_size": 128}}}


def run(path, results, *extra):
    return main(["run", str(path), "--results-dir", str(results), "--no-progress", *extra])


def load(results, label, seed):
    return json.loads(record_path(results, "tiny", label, seed).read_text())


def load_from(results, suite):
    (path,) = (results / suite / "runs").glob("*.json")
    return json.loads(path.read_text())


def covers_all_epochs(rec: dict, n_train: int) -> bool:
    """The record's costs count every epoch it holds, resumed or not."""
    epochs, split = rec["epochs"], rec["time_split"]
    own = sum(e["train_own_s"] for e in epochs)
    teacher = sum(e["teacher_s"] for e in epochs)
    return (own == pytest.approx(split["train_own_s"], rel=1e-6)
            and teacher == pytest.approx(split["teacher_s"], rel=1e-6, abs=1e-9)
            and rec["images_per_s"] == pytest.approx(len(epochs) * n_train / rec["train_s"], rel=1e-6)
            and rec["wall_s"] >= own + teacher)


# ------------------------------------------------------------------------------------ kill -9


def test_random_kills_lose_nothing_and_resume_to_the_uninterrupted_records(
    needs_fashion_mnist, write_suite, tmp_path
):
    path = write_suite(seeds=[4, 5], methods=METHODS, train={"epochs": 2, "batch_size": 128}, train_size=1000,
                       teacher={"train_size": 1000, "train": {"epochs": 3, "batch_size": 128}})
    cmd = [sys.executable, "-m", "kdbench", "run", str(path), "--no-progress", "--results-dir"]
    subprocess.run([*cmd, str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)
    cut, rng = tmp_path / "cut", random.Random(12)
    phases = {  # when to kill: a file that shows the run is in that phase
        "teacher training": lambda: list(cut.glob("teachers/*.lock")) and not list(cut.glob("teachers/*/teacher.json")),
        "epoch checkpoints": lambda: list(cut.glob("tiny/checkpoints/*.pt")),
        "a record written": lambda: list(cut.glob("tiny/runs/*.json")),  # seed 4's; seed 5's group trains
    }
    killed_in = []
    for phase, reached in phases.items():
        proc = subprocess.Popen([*cmd, str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not reached() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_in.append(phase if reached() else f"after {phase}")
        proc.wait()
    assert killed_in[0] == "teacher training" and len(killed_in) == 3, killed_in
    subprocess.run([*cmd, str(cut)], check=True, capture_output=True, timeout=600)
    for m, seed in [(m, seed) for m in METHODS for seed in (4, 5)]:
        whole, resumed = load(tmp_path / "whole", m, seed), load(cut, m, seed)
        assert same_results(resumed, whole), (m, seed)
        assert covers_all_epochs(resumed, 1000), (m, seed, resumed["time_split"], resumed.get("resumed_from_epoch"))
    assert any("resumed_from_epoch" in load(cut, m, s) for m in METHODS for s in (4, 5))
    assert not list(cut.glob("tiny/checkpoints/*.pt")) and not list(cut.rglob("*.tmp"))


# -------------------------------------------------------------------------- a shared results folder


def test_two_suites_started_together_train_their_shared_teacher_once(needs_fashion_mnist, write_suite, tmp_path):
    a = write_suite("a", seeds=[0], methods=["vanilla_kd"], **SMALL)
    b = write_suite("b", seeds=[0], methods=["vanilla_kd"], **SMALL)
    cmd = [sys.executable, "-m", "kdbench", "run", "--no-progress", "--results-dir", str(tmp_path / "r")]
    procs = [subprocess.Popen([*cmd, str(p)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in (a, b)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("training teacher" in out for out in outs) == 1, outs
    assert len(list(tmp_path.glob("r/teachers/*/teacher.pt"))) == 1
    assert all(load_from(tmp_path / "r", s)["status"] == "ok" for s in ("a", "b"))


def test_a_claim_left_by_a_killed_process_is_taken_over(needs_fashion_mnist, write_suite, tmp_path):
    path = write_suite(seeds=[0], methods=["student_ce"], train={"epochs": 1, "batch_size": 128}, **SMALL)
    claim = tmp_path / "tiny" / "claims" / "student_ce__seed0.lock"
    claim.parent.mkdir(parents=True)
    code = (f"import filelock, time; filelock.FileLock({str(claim)!r}).acquire(); print('held', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert run(path, tmp_path) == 0
    assert load(tmp_path, "student_ce", 0)["status"] == "ok"


# ------------------------------------------------------------------------ records and checkpoints


def test_a_record_that_is_not_an_object_is_treated_as_absent(needs_fashion_mnist, write_suite, tmp_path):
    path = write_suite(seeds=[0], methods=["student_ce"], train={"epochs": 1, "batch_size": 128}, **SMALL)
    record_path(tmp_path, "tiny", "student_ce", 0).parent.mkdir(parents=True)
    record_path(tmp_path, "tiny", "student_ce", 0).write_text("[1, 2]")
    assert run(path, tmp_path) == 0
    assert load(tmp_path, "student_ce", 0)["status"] == "ok"


def test_the_record_is_written_before_the_checkpoint_is_removed(
    needs_fashion_mnist, write_suite, tmp_path, monkeypatch, capsys
):
    path = write_suite(seeds=[0], methods=["student_ce"], train={"epochs": 1, "batch_size": 128}, **SMALL)
    ckpt = checkpoint_path(tmp_path, "tiny", "student_ce", 0)
    seen, real = [], records.write_record

    def spy(p, obj):
        seen.append((p.name, ckpt.exists()))
        real(p, obj)
        raise KeyboardInterrupt  # killed right after the record's write

    monkeypatch.setattr(records, "write_record", spy)
    assert run(path, tmp_path) == 130
    assert seen == [("student_ce__seed0.json", True)] and ckpt.exists()
    monkeypatch.setattr(records, "write_record", real)
    assert run(path, tmp_path) == 0
    assert "done before (ok), skipped" in capsys.readouterr().out and not ckpt.exists()


@pytest.mark.parametrize("damage", ["truncated", "runs code"])
def test_a_damaged_epoch_checkpoint_restarts_its_cell_cleanly(
    needs_fashion_mnist, write_suite, tmp_path, monkeypatch, damage
):
    path = write_suite(seeds=[2], methods=["vanilla_kd"], train={"epochs": 2, "batch_size": 128}, **SMALL)
    assert run(path, tmp_path / "whole") == 0
    ckpt = checkpoint_path(tmp_path / "cut", "tiny", "vanilla_kd", 2)
    ckpt.parent.mkdir(parents=True)
    if damage == "truncated":
        ckpt.write_bytes(b"PK\x03\x04 cut short")
    else:
        torch.save({"config_hash": RunsCode.at(tmp_path)}, ckpt)
    assert run(path, tmp_path / "cut") == 0
    rec = load(tmp_path / "cut", "vanilla_kd", 2)
    assert "resumed_from_epoch" not in rec and rec["checkpoint_discarded"]
    assert same_results(rec, load(tmp_path / "whole", "vanilla_kd", 2))
    assert not (tmp_path / "code-ran").exists()


def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_completes(
    needs_fashion_mnist, write_suite, tmp_path, monkeypatch, capsys
):
    path = write_suite(seeds=[0], methods=["student_ce", "vanilla_kd"], train={"epochs": 1, "batch_size": 128},
                       **SMALL)
    assert run(path, tmp_path / "whole") == 0
    real_fsync, calls = atomic.os.fsync, []

    def fills_up(fd):  # teacher.pt, teacher.json, two epoch checkpoints and a record fit; then it is full
        calls.append(fd)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fills_up)
    capsys.readouterr()
    assert run(path, tmp_path / "cut") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "1 of 2 cells are recorded" in err, err
    assert not list((tmp_path / "cut").rglob("*.tmp")) and not list((tmp_path / "cut").rglob(".*.json.*"))
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert run(path, tmp_path / "cut") == 0
    for m in ("student_ce", "vanilla_kd"):
        assert same_results(load(tmp_path / "cut", m, 0), load(tmp_path / "whole", m, 0)), m


# ------------------------------------------------------------------------------ offline caches


@pytest.mark.parametrize("damage", ["truncated", "altered", "runs code"])
def test_a_damaged_offline_cache_is_recomputed_to_the_same_result(
    needs_fashion_mnist, write_suite, tmp_path, capsys, damage
):
    path = write_suite(seeds=[0], methods=["bregman_pca"], train={"epochs": 1, "batch_size": 128}, **SMALL)
    assert run(path, tmp_path) == 0
    first = load(tmp_path, "bregman_pca", 0)
    (cache,) = tmp_path.glob("teachers/*/offline/bregman_pca-*.pt")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "altered":
        saved = torch.load(cache, weights_only=True)
        saved["tensors"]["m"] += 0.5  # the checksum beside it no longer matches
        torch.save(saved, cache)
    else:
        torch.save({"tensors": {"m": RunsCode.at(tmp_path)}, "sha256": "0"}, cache)
    record_path(tmp_path, "tiny", "bregman_pca", 0).unlink()
    capsys.readouterr()
    assert run(path, tmp_path) == 0
    assert f"offline cache {cache} failed its check" in capsys.readouterr().out
    again = load(tmp_path, "bregman_pca", 0)
    assert again["prepare"]["cache_hit"] is False and first["prepare"]["cache_hit"] is False
    assert same_results(again, first)
    assert not (tmp_path / "code-ran").exists()
    record_path(tmp_path, "tiny", "bregman_pca", 0).unlink()
    assert run(path, tmp_path) == 0  # the recomputed cache passes its check
    assert load(tmp_path, "bregman_pca", 0)["prepare"]["cache_hit"] is True
