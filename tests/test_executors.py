"""A suite run beyond one process gives, cell for cell, the records the in-process run gives (CPU,
one thread per cell everywhere): through local worker processes, submitit's local executor (the
SLURM job objects, run as local subprocesses) and a local Ray cluster of 2 CPUs. Processes sharing
a results folder never run a cell twice, and a worker killed mid-cell loses nothing.

For CI's time these run the smoke suite on 600 training images and three of its methods: one
without a teacher, one with, and one with offline targets (bregman_pca).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kdbench.api.errors import ConfigError
from kdbench.cli import build_parser, main
from kdbench.config.executor import OPTIONS, ExecutorConfig, executor_config
from kdbench.config.suite import SUITES_DIR

from tests.extras import require
from tests.test_end_to_end import same_results

METHODS = ["student_ce", "vanilla_kd", "bregman_pca"]
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> str:
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="smoke", train_size=600, test_size=300, methods=METHODS, seeds=list(SEEDS))
    raw["teacher"]["train_size"] = 600
    path = tmp_path_factory.mktemp("suite") / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def kdbench(suite: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "kdbench", "run", suite, "--no-progress", "--threads", "1", *args]


def records(results: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((results / "smoke" / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def in_process(needs_fashion_mnist, suite, tmp_path_factory):
    results = tmp_path_factory.mktemp("local")
    subprocess.run(kdbench(suite, "--results-dir", str(results)), check=True, capture_output=True, timeout=900)
    recs = records(results)
    assert len(recs) == len(METHODS) * len(SEEDS) and all(r["status"] == "ok" for r in recs.values())
    assert all(r["environment"]["threads"] == 1 for r in recs.values())
    return results


def same_as_in_process(results: Path, in_process: Path, read=records) -> None:
    ours, theirs = read(results), read(in_process)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name]["environment"]["threads"] == 1, name
        assert same_results(ours[name], theirs[name]), name


@pytest.mark.parametrize("executor,module", [("processes:2", None), ("slurm-local", "submitit"), ("ray", "ray")])
def test_an_executor_gives_the_in_process_records_bitwise(in_process, suite, tmp_path, executor, module):
    if module:
        require(module, "cluster")
    extra = ["--ray-cpus", "2"] if executor == "ray" else []
    done = subprocess.run(kdbench(suite, "--executor", executor, "--results-dir", str(tmp_path), *extra),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 group(s) to" in done.stdout and done.stdout.count(": ok ") == len(METHODS) * len(SEEDS)
    same_as_in_process(tmp_path, in_process)
    if executor == "slurm-local":  # submitit's job folders stay under the results folder
        assert list((tmp_path / "smoke" / "executor-logs").glob("*/*_submitted.pkl"))


def test_a_group_cut_between_the_workers_gives_the_in_process_records_bitwise(in_process, suite, tmp_path):
    """One seed on two workers: its group is cut in two (``kdbench.execute.balance``), each part a
    lockstep group of its own, and the cells' records are still those of the whole group."""
    done = subprocess.run(kdbench(suite, "--executor", "processes:2", "--seeds", "0", "--results-dir", str(tmp_path)),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 group(s) to processes:2" in done.stdout and done.stdout.count(": ok ") == len(METHODS)
    ours = records(tmp_path)
    assert sorted(r["group"]["size"] for r in ours.values()) == [1, 2, 2]
    same_as_in_process(tmp_path, in_process, read=lambda results: {
        name: r for name, r in records(results).items() if r["seed"] == 0})


def test_two_runs_started_together_run_each_cell_once(in_process, suite, tmp_path):
    procs = [subprocess.Popen(kdbench(suite, "--results-dir", str(tmp_path)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    cells = sorted((m, str(s)) for m in METHODS for s in SEEDS)
    trained = [re.findall(r"\] (\w+) seed (\d+): ok  final", out) for out in outs]
    by_other = [re.findall(r"\] (\w+) seed (\d+): done (?:before|by another process)", out) for out in outs]
    assert sorted(trained[0] + trained[1]) == cells, outs  # each cell trained once, by one of them
    assert sorted(trained[0] + by_other[0]) == cells and sorted(trained[1] + by_other[1]) == cells, outs
    assert sum(out.count("training teacher") for out in outs) == 1, outs
    same_as_in_process(tmp_path, in_process)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_worker_killed_mid_cell_loses_nothing(in_process, suite, tmp_path):
    driver = subprocess.Popen(kdbench(suite, "--executor", "processes:2", "--results-dir", str(tmp_path)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob("smoke/checkpoints/*.pt")):  # a worker is mid-cell
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.02)
    workers = [c for c in children(driver.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert workers, children(driver.pid)
    os.kill(workers[0], signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 1, out + err
    # issue 24 item 13: the crash is said once, in one line; the other group went on to its end
    assert err.splitlines() == [err.strip()] and err.startswith("kdbench: error: 1 of 2 group(s) crashed"), err
    assert "WorkerDied: its worker process died (killed by SIGKILL)" in err and "rerunning the same command" in err
    assert "crashed" not in out, out
    crashed = int(re.search(r"\(seed (\d+): WorkerDied", err).group(1))
    recs = records(tmp_path)
    assert all(recs[f"{m}__seed{s}.json"]["status"] == "ok" for m in METHODS for s in SEEDS if s != crashed), recs
    assert len(recs) < len(METHODS) * len(SEEDS)
    assert main(kdbench(suite, "--executor", "processes:2", "--results-dir", str(tmp_path))[3:]) == 0
    same_as_in_process(tmp_path, in_process)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def workers_of(driver: subprocess.Popen, n: int, deadline: float) -> list[int]:
    """The driver's ``n`` worker processes, once it has started them all."""
    while True:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        workers = [c for c in children(driver.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        if len(workers) == n:
            return workers
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_driver_leaves_no_worker_behind(needs_fashion_mnist, suite, tmp_path, sig):
    """Issue 24 item 12: the workers of a killed driver ended with it, instead of blocking forever
    holding their claims and their memory."""
    driver = subprocess.Popen(kdbench(suite, "--executor", "processes:2", "--methods", "student_ce",
                                      "--results-dir", str(tmp_path)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = workers_of(driver, 2, time.monotonic() + 300)
    driver.send_signal(sig)
    driver.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if alive(w)]
    for w in survivors:  # do not leave them to the rest of the suite
        os.kill(w, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} worker(s) outlived their driver ({sig.name})"


def test_each_executor_option_is_declared_once_and_drives_flag_suite_key_and_check():
    """config/executor.py's OPTIONS: each flag is in `kdbench run --help` with the option's help; the
    suite's key and the flag give the same config; a bad value is refused the same way from both."""
    run_help = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    text = " ".join(run_help.format_help().split())
    good = {"threads": 2, "workers": 3, "partition": "gpu", "time_min": 30, "gpus_per_task": 0.5,
            "cpus_per_task": 4, "array_parallelism": 2, "address": "auto", "cpus": 2}
    assert sorted(good) == sorted(o.name for o in OPTIONS)
    assert [f.name for f in ExecutorConfig.__dataclass_fields__.values()] == ["kind", *(o.name for o in OPTIONS)]
    for o in OPTIONS:
        kind = o.kinds[0]
        assert getattr(ExecutorConfig(), o.name) == o.default
        if o.cli_flag:
            assert o.cli_flag in text and " ".join(o.help.split()) in text, o.name
            from_flag = executor_config(kind, {o.name: good[o.name]}, None, "--executor")
        else:
            from_flag = executor_config(f"{kind}:{good[o.name]}", {}, None, "--executor")
        from_suite = executor_config(None, {}, {"name": kind, o.name: good[o.name]}, "suite.yaml")
        assert from_flag == from_suite and getattr(from_suite, o.name) == good[o.name]
        with pytest.raises(ConfigError, match=f"executor.{o.name} must be"):
            executor_config(None, {}, {"name": kind, o.name: -1}, "suite.yaml")
