"""What a results folder is trusted with (docs/guarantees.md, "What is checked and what is trusted"):
its files are checked for accidents, not for tampering, so a record says when the cell resumed from
an epoch checkpoint, naming the file by its sha256, for a reader to see."""

from __future__ import annotations

import hashlib
import json

import torch
from kdbench.cli import main
from kdbench.train import records
from kdbench.train.cell import checkpoint_path
from kdbench.train.records import record_path

SMALL = {"train_size": 500, "test_size": 300, "train": {"epochs": 1, "batch_size": 128},
         "teacher": {"train_size": 500, "train": {"epochs": 1, "batch_size": 128}}}


def run(path, results):
    return main(["run", str(path), "--results-dir", str(results), "--no-progress", "--threads", "1"])


def test_a_resumed_cell_names_the_checkpoint_it_trusted(needs_fashion_mnist, write_suite, tmp_path, monkeypatch):
    path = write_suite(seeds=[0], methods=["student_ce"], **SMALL)
    real = records.write_record

    def killed(p, obj):  # killed as the record was about to be written: the last checkpoint stays
        raise KeyboardInterrupt

    monkeypatch.setattr(records, "write_record", killed)
    assert run(path, tmp_path) == 130
    ckpt = checkpoint_path(tmp_path, "tiny", "student_ce", 0)
    state = torch.load(ckpt, weights_only=True)
    state["student"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["student"].items()}
    torch.save(state, ckpt)  # altered, yet it loads and names the cell's config: it is resumed
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    monkeypatch.setattr(records, "write_record", real)
    assert run(path, tmp_path) == 0
    rec = json.loads(record_path(tmp_path, "tiny", "student_ce", 0).read_text())
    assert rec["status"] == "ok" and rec["resumed_from_epoch"] == 1 and rec["resumed_from_sha256"] == sha
    assert records.problem(rec) is None and not ckpt.exists()


def test_a_cell_trained_without_a_break_says_nothing_of_a_resume(needs_fashion_mnist, write_suite, tmp_path):
    path = write_suite(seeds=[0], methods=["student_ce"], **SMALL)
    assert run(path, tmp_path) == 0
    rec = json.loads(record_path(tmp_path, "tiny", "student_ce", 0).read_text())
    assert "resumed_from_epoch" not in rec and "resumed_from_sha256" not in rec
