"""A run without a terminal is never silent until a whole group ends (issue 24 item 1): each group
says when it ends an epoch, in this process and from an executor's workers, and ``--quiet`` says none
of it. The lines read only the clock, so the records are bitwise those of a quiet run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.test_end_to_end import SMALL, same_results

EPOCH_LINE = re.compile(r"^seed (\d) \((\d) cells?\): epoch (\d)/2 in [\d.]+ s, (\d) cell\(s\) still training, "
                        r"about [\d.]+ s left$")


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("suite")
    import yaml
    from kdbench.config.suite import SUITES_DIR

    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="lines", methods=["student_ce"], seeds=[0, 1], **{k: v for k, v in SMALL.items() if k != "teacher"})
    (folder / "lines.yaml").write_text(yaml.safe_dump(raw))
    return str(folder / "lines.yaml")


def run(suite: str, results, *extra: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "kdbench", "run", suite, "--threads", "1", "--results-dir",
                           str(results), *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def records(results) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((results / "lines" / "runs").glob("*.json"))}


def test_each_group_says_when_it_ends_an_epoch_and_quiet_says_nothing(needs_fashion_mnist, suite, tmp_path):
    out = run(suite, tmp_path / "lines", "--no-progress")  # stdout is a pipe here, not a terminal
    said = [EPOCH_LINE.match(line) for line in out]
    assert [m.groups() for m in said if m] == [("0", "1", "1", "1"), ("0", "1", "2", "0"),
                                               ("1", "1", "1", "1"), ("1", "1", "2", "0")], out
    first_cell = next(i for i, line in enumerate(out) if "student_ce seed 0: ok" in line)
    assert said[first_cell - 1] and said[0], out  # seed 0's epochs are said before its cell ends
    quiet = run(suite, tmp_path / "quiet", "--quiet")
    assert not any(EPOCH_LINE.match(line) or "epoch" in line for line in quiet), quiet
    ours, theirs = records(tmp_path / "lines"), records(tmp_path / "quiet")
    assert ours.keys() == theirs.keys() and len(ours) == 2
    assert all(same_results(ours[k], theirs[k]) for k in ours)


def test_an_executors_workers_say_their_epochs_too(needs_fashion_mnist, suite, tmp_path):
    out = run(suite, tmp_path, "--no-progress", "--executor", "processes:2")
    said = sorted(m.groups() for m in map(EPOCH_LINE.match, out) if m)
    assert said == [("0", "1", "1", "1"), ("0", "1", "2", "0"), ("1", "1", "1", "1"), ("1", "1", "2", "0")], out
