"""Storage that fails and processes that race: a folder that cannot be written, a disk that fills
while an offline cache is written, and a process that pauses between finding no record and taking
the cell's claim. Each stops the run in one line or is skipped, never trains a cell twice, and never
records a storage failure as the cell's own."""

from __future__ import annotations

import errno
import json
import shutil
import tempfile

import pytest
from kdbench.api import atomic
from kdbench.cli import main
from kdbench.run import claims
from kdbench.train.cell import checkpoint_path
from kdbench.train.records import record_path

SMALL = {"train_size": 500, "test_size": 300, "train": {"epochs": 1, "batch_size": 128},
         "teacher": {"train_size": 500, "train": {"epochs": 1, "batch_size": 128}}}


def run(path, results, *extra):
    return main(["run", str(path), "--results-dir", str(results), "--no-progress", "--threads", "1", *extra])


def read_only_folder() -> str:
    """A folder no process may create a file in, root included (sysfs)."""
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        return "/sys"


@pytest.mark.parametrize("folder, method", [("teachers", "vanilla_kd"), ("tiny/claims", "student_ce")])
def test_a_read_only_lock_folder_is_one_line(needs_fashion_mnist, write_suite, tmp_path, capsys, folder, method):
    path = write_suite(seeds=[0], methods=[method], **SMALL)
    locks = tmp_path / "r" / folder
    locks.parent.mkdir(parents=True)
    locks.symlink_to(read_only_folder())
    capsys.readouterr()
    assert run(path, tmp_path / "r") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot create the lock {locks}/" in err and "Permission denied" in err, err
    assert not record_path(tmp_path / "r", "tiny", method, 0).exists()


def test_a_full_disk_while_an_offline_cache_is_written_stops_the_run(
    needs_fashion_mnist, write_suite, tmp_path, monkeypatch, capsys
):
    path = write_suite(seeds=[0], methods=["bregman_pca"], **SMALL)
    real_fsync, calls = atomic.os.fsync, []

    def fills_up(fd):  # teacher.pt and teacher.json fit; the offline cache does not (the record would)
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fills_up)
    capsys.readouterr()
    assert run(path, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "/offline/bregman_pca-k4-" in err, err
    assert "0 of 1 cells are recorded" in err
    assert not record_path(tmp_path, "tiny", "bregman_pca", 0).exists()  # not recorded as the cell's failure
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert run(path, tmp_path) == 0
    rec = json.loads(record_path(tmp_path, "tiny", "bregman_pca", 0).read_text())
    assert rec["status"] == "ok" and rec["prepare"]["cache_hit"] is False


def test_a_cell_finished_while_this_process_paused_before_its_claim_is_not_trained_again(
    needs_fashion_mnist, write_suite, tmp_path, monkeypatch, capsys
):
    path = write_suite(seeds=[0], methods=["student_ce"], **SMALL)
    assert run(path, tmp_path / "other") == 0
    theirs = record_path(tmp_path / "other", "tiny", "student_ce", 0)
    ours = record_path(tmp_path / "r", "tiny", "student_ce", 0)
    real_take = claims.take

    def pauses(folder, specs):
        """Between the check for a record and the claim, another process trains the cell and lets go."""
        ours.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(theirs, ours)
        return real_take(folder, specs)

    monkeypatch.setattr(claims, "take", pauses)
    capsys.readouterr()
    assert run(path, tmp_path / "r") == 0
    assert "student_ce seed 0: done by another process (ok), skipped" in capsys.readouterr().out
    assert ours.read_bytes() == theirs.read_bytes()  # its record, not a second training's
    assert not checkpoint_path(tmp_path / "r", "tiny", "student_ce", 0).exists()
