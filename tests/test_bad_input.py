"""Bad input, as a new user would type it: each case exits with status 2, says what is wrong in one
line on stderr (no traceback), and writes nothing: not a record, not a folder, not a lock file.

A case is a function of the test's folder that returns the command line; it may write the suite
file, damaged data or a damaged cache it needs first. The folder is snapshotted after that set-up
and compared after the command.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from kdbench.api import registry
from kdbench.cli import main
from kdbench.config.suite import SUITES_DIR

from tests.user_files import pair_suite, tensors, write_odd_module, write_png_header, write_suite

# ---------------------------------------------------------------------------------------- set-up


@dataclass
class Env:
    tmp: Path
    trained: Path | None  # results of one tiny run (teacher and a record), when the case needs it
    monkeypatch: Any = None  # for the cases that install a third-party plugin or shorten Ray's time limit

    @property
    def results(self) -> Path:
        return self.tmp / "r"

    def suite(self, **overrides) -> str:
        """The smoke suite with overrides (``teacher__seed`` for nested keys), written to a file."""
        raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
        raw["name"] = "tiny"
        for key, value in overrides.items():
            node, *path = key.split("__")
            target = raw
            for part in [node, *path][:-1]:
                target = target[part]
            target[[node, *path][-1]] = value
        path = self.tmp / "suite.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    def run(self, *args: str, suite: str = "smoke") -> list[str]:
        return ["run", suite, "--results-dir", str(self.results), "--no-progress", *args]

    def fmnist(self, damage: Callable[[Path], None] | None = None) -> str:
        """A small Fashion-MNIST folder in the real idx format, then damaged by ``damage``."""
        folder = self.tmp / "fmnist"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for split, n in (("train", 60), ("t10k", 20)):
            _idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            _idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
        if damage is not None:
            damage(folder)
        return str(folder)

    def cifar(self, test_file: bytes) -> str:
        """A CIFAR-100 folder whose training file is real and whose test file holds ``test_file``."""
        folder = self.tmp / "cifar" / "cifar-100-python"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "fine_labels": [0, 1, 2, 3]}
        (folder / "train").write_bytes(pickle.dumps(entry))
        (folder / "test").write_bytes(test_file)
        return str(folder.parent)

    def teacher(self, damage: Callable[[Path, dict], dict | None]) -> list[str]:
        """A copy of the trained results with the teacher's files damaged; ``damage(folder, meta)``
        may return the content of a new teacher.json (a dict or a list)."""
        shutil.copytree(self.trained, self.results)
        (folder,) = [p for p in (self.results / "teachers").iterdir() if p.is_dir()]
        meta = json.loads((folder / "teacher.json").read_text())
        new = damage(folder, meta)
        if isinstance(new, (dict, list)):
            (folder / "teacher.json").write_text(json.dumps(new))
        return self.run("--seeds", "1", suite=str(self.trained / "suite.yaml"))

    def plugin(self, space: str) -> list[str]:
        """A third-party plugin (an installed package's entry point) whose ``search_space`` is ``space``."""
        module = f"acme_{self.tmp.parent.name.replace('-', '_')}"
        (self.tmp / f"{module}.py").write_text(PLUGIN.format(space=space))
        info = self.tmp / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[kdbench.methods]\nacme = {module}\n")
        self.monkeypatch.setattr(sys, "dont_write_bytecode", True)
        self.monkeypatch.syspath_prepend(str(self.tmp))
        self.monkeypatch.setattr(registry, "_discovered", False)
        return self.run("--methods", "acme_kd")

    def pair(self, change: Callable[[Path, dict], None]) -> list[str]:
        """The user's own pair (docs/own-models-and-data.md) with ``change(folder, suite)``."""
        suite = pair_suite(self.tmp)
        change(self.tmp, suite)
        return self.run(suite=str(write_suite(self.tmp, suite)))


PLUGIN = """
import torch.nn.functional as F
from kdbench import POSITIVE, LogUniform, Method, Uniform, register


@register
class Acme(Method):
    name = "acme_kd"
    defaults = {{"w": 1.0}}
    domains = {{"w": POSITIVE}}
    search_space = {space}

    def losses(self, s, t, y, progress):
        return {{"ce": self.hp["w"] * F.cross_entropy(s.logits, y)}}
"""


def _idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _resave(folder: Path, meta: dict, obj) -> dict:
    """Replace teacher.pt by ``obj`` and record its sha256, as an attacker or a bad tool would."""
    torch.save(obj, folder / "teacher.pt")
    return {**meta, "sha256": hashlib.sha256((folder / "teacher.pt").read_bytes()).hexdigest()}


class RunsCode:
    """Unpickling this executes code that leaves a marker file: what every loader must refuse."""

    marker: Path

    @classmethod
    def at(cls, folder: Path) -> "RunsCode":
        cls.marker = folder / "code-ran"
        return cls()

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _malicious(folder: Path, meta: dict) -> dict:
    return _resave(folder, meta, {"classifier.bias": RunsCode.at(folder.parent.parent.parent)})


def _unwritable() -> str:
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        return "/sys/kdbench-results"


# ----------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Bad:
    id: str
    fragment: str
    argv: Callable[[Env], list[str]]
    needs: str = ""  # "data": the real Fashion-MNIST; "trained": a trained tiny teacher


def S(id, fragment, **overrides):  # noqa: N802 (a case of the suite file)
    return Bad(id, fragment, lambda e: e.run(suite=e.suite(**overrides)))


def C(id, fragment, *args, needs=""):  # noqa: N802 (a case of the command line)
    return Bad(id, fragment, lambda e: e.run(*args), needs)


def D(id, fragment, damage):  # noqa: N802 (a case of a damaged Fashion-MNIST file)
    return Bad(id, fragment, lambda e: e.run("--data-dir", e.fmnist(damage)))


def T(id, fragment, damage):  # noqa: N802 (a case of a damaged teacher cache)
    return Bad(id, fragment, lambda e: e.teacher(damage), "trained")


def U(id, fragment, change):  # noqa: N802 (a case of the user's own pair and data)
    return Bad(id, fragment, lambda e: e.pair(change))


def P(id, fragment, space):  # noqa: N802 (a case of a third-party plugin's search space)
    return Bad(id, fragment, lambda e: e.plugin(space), "plugin")


def _set(*path_value):
    """A change setting ``suite[a][b]... = value``."""
    *path, value = path_value

    def change(_folder: Path, suite: dict) -> None:
        node = suite
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _tensors_suite(**changes):
    def change(folder: Path, suite: dict) -> None:
        arrays = tensors()
        arrays.update(changes)
        arrays = {k: v for k, v in arrays.items() if v is not None}
        torch.save(arrays, folder / "data.pt")
        suite["dataset"] = {"format": "tensors", "path": "data.pt"}
    return change


def _checkpoint(obj):
    def change(folder: Path, suite: dict) -> None:
        torch.save(obj(folder) if callable(obj) else obj, folder / "teacher.pt")
        suite["teacher"]["sha256"] = hashlib.sha256((folder / "teacher.pt").read_bytes()).hexdigest()
    return change


def _write(name, data: bytes):
    return lambda f: (f / name).write_bytes(data)


def _gz_cut(f: Path):
    p = f / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-200])


def _unlink(name):
    return lambda f: (f / name).unlink()


# --- issue 24: suite files, paths and the command line (helpers)

#: "Billion laughs": nine aliases of nine aliases of ... nine strings; 9⁹ values once expanded, in 400 bytes.
BOMB = "{" + ", ".join(["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]) + "}"
LONG_NAME = "a" * 300
LONG_PATH = "/".join(["b" * 100] * 80)  # 8,079 characters, no name too long


def _yaml(e: Env, text: str, **overrides) -> list[str]:
    """The smoke suite with ``overrides`` whose value ``"XBOMBX"`` is then replaced by raw YAML ``text``."""
    path = Path(e.suite(**overrides))
    path.write_text(path.read_text().replace("XBOMBX", text))
    return e.run(suite=str(path))


def _suite_bytes(e: Env, data: bytes) -> list[str]:
    (e.tmp / "s.yaml").write_bytes(data)
    return e.run(suite=str(e.tmp / "s.yaml"))


def _latin1(e: Env) -> list[str]:
    """A valid suite with a non-ASCII character, saved in latin-1 rather than UTF-8."""
    text = Path(e.suite(description="XBOMBX")).read_text().replace("XBOMBX", "Café au lait")
    return _suite_bytes(e, text.encode("latin-1"))


def _records(e: Env, make: Callable[[Path], None]) -> list[str]:
    """``kdbench report`` on a suite whose one record ``make(runs_folder)`` plants."""
    runs = e.results / "s" / "runs"
    runs.mkdir(parents=True)
    make(runs)
    return ["report", "s", "--results-dir", str(e.results), "--report-dir", str(e.tmp / "rep")]


def _claim_loop(e: Env) -> list[str]:
    """A claim planted as a symbolic link to itself, in the results folder of the cell to run."""
    claims = e.results / "tiny" / "claims"
    claims.mkdir(parents=True)
    (claims / "student_ce__seed0.lock").symlink_to("student_ce__seed0.lock")
    return e.run("--methods", "student_ce", "--seeds", "0", suite=e.suite())


def _ray_silent(e: Env) -> list[str]:
    """A port that accepts connections and never answers as Ray would, under a 2 s time limit."""
    import socket

    from kdbench.config import ray_address

    e.socket = socket.create_server(("127.0.0.1", 0))
    e.monkeypatch.setattr(ray_address, "CONNECT_TIMEOUT_S", 2.0)
    return e.run("--executor", "ray", "--ray-address", f"127.0.0.1:{e.socket.getsockname()[1]}")


def _closed_port() -> str:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as s:  # a port free a moment ago: nothing listens there now
        return f"127.0.0.1:{s.getsockname()[1]}"


def _hp(method: str, **hp) -> list[dict]:
    return [{"method": method, "hyperparameters": hp}]


CASES = [
    # the command line
    Bad("unknown-suite", "unknown suite 'no-such-suite'", lambda e: e.run(suite="no-such-suite")),
    Bad("no-command", "the following arguments are required", lambda e: []),
    Bad("unknown-command", "invalid choice: 'frobnicate'", lambda e: ["frobnicate"]),
    C("unknown-option", "unrecognized arguments: --bogus", "--bogus"),
    C("seed-not-a-number", "invalid int value: 'abc'", "--seeds", "abc"),
    C("seed-negative", "--seeds must be at least 0, got -3", "--seeds", "-3"),
    C("seed-2^70", "--seeds must be at most 4,294,967,295", "--seeds", "1180591620717411303424"),
    C("seed-2^32", "--seeds must be at most 4,294,967,295", "--seeds", str(2**32)),
    C("unknown-method", "unknown method 'nope'", "--methods", "nope"),
    C("method-path", "unknown method '../../x'", "--methods", "../../x"),
    C("device-meta", "unknown device 'meta'; use auto, cpu, cuda or cuda:N", "--device", "meta"),
    C("device-gpu", "unknown device 'gpu'", "--device", "gpu"),
    C("device-empty", "unknown device ''", "--device", ""),
    C("device-cuda-absent", "CUDA is not available", "--device", "cuda:0", needs="no_cuda"),
    C("data-dir-absent", "is not a folder", "--data-dir", "/nonexistent/fmnist"),
    Bad("data-dir-a-file", "is not a folder",
        lambda e: e.run("--data-dir", str(Path(e.fmnist()) / "train-images-idx3-ubyte.gz"))),
    Bad("results-dir-a-file", "is not a folder",
        lambda e: (e.tmp.joinpath("f").write_text("x"), e.run("--results-dir", str(e.tmp / "f")))[1],
        "data"),
    Bad("results-dir-under-a-file", "is not a folder",
        lambda e: (e.tmp.joinpath("f").write_text("x"), e.run("--results-dir", str(e.tmp / "f" / "r")))[1],
        "data"),
    Bad("results-dir-unwritable", "cannot be written", lambda e: e.run("--results-dir", _unwritable()), "data"),
    Bad("report-unknown-suite", "no run records for suite 'nope'",
        lambda e: ["report", "nope", "--results-dir", str(e.results), "--report-dir", str(e.tmp / "rep")]),
    Bad("report-suite-path", "suite '../../x' must be a plain name",
        lambda e: ["report", "../../x", "--results-dir", str(e.results), "--report-dir", str(e.tmp / "rep")]),
    # executors
    C("executor-unknown", "unknown executor 'nope'; known: local, processes, slurm, slurm-local, ray",
      "--executor", "nope"),
    C("executor-zero-workers", "--executor processes:0 must be an integer from 1 to 4,096",
      "--executor", "processes:0"),
    C("executor-count-not-a-number", "--executor processes:two must be an integer", "--executor", "processes:two"),
    C("executor-count-on-ray", "only processes takes a count", "--executor", "ray:2"),
    C("executor-oversubscribed", "needs 16,777,216 cores", "--executor", "processes:4096", "--threads", "4096"),
    C("executor-slurm-absent", "needs SLURM, and sbatch is not on this machine's PATH", "--executor", "slurm",
      needs="no_sbatch"),
    C("executor-option-not-its-own", "executor local takes no option(s) partition", "--partition", "gpu"),
    C("executor-threads-zero", "executor.threads must be an integer from 1", "--threads", "0"),
    C("executor-gpus-negative", "executor.gpus_per_task must be a number from 0 to 64", "--executor", "ray",
      "--gpus-per-task", "-1"),
    S("executor-section-unknown", "unknown executor 'cloud'", executor={"name": "cloud"}),
    S("executor-section-option", "executor processes takes no option(s) address",
      executor={"name": "processes", "address": "auto"}),
    S("executor-section-not-a-mapping", "executor: expected a mapping, got str", executor="processes"),
    # Fashion-MNIST files named by --data-dir
    D("data-dir-empty", "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
      "t10k-labels-idx1-ubyte", lambda f: [p.unlink() for p in f.iterdir()]),
    D("data-file-missing", "lacks t10k-labels-idx1-ubyte (plain or .gz)", _unlink("t10k-labels-idx1-ubyte.gz")),
    D("gz-truncated", "train-images-idx3-ubyte.gz cannot be read: Compressed file ended", _gz_cut),
    D("gz-not-gzip", "train-labels-idx1-ubyte.gz cannot be read: Not a gzipped file",
      _write("train-labels-idx1-ubyte.gz", b"this is not gzip at all")),
    D("idx-one-byte", "t10k-labels-idx1-ubyte is not an idx file: 1 byte(s)",
      lambda f: (_unlink("t10k-labels-idx1-ubyte.gz")(f), _write("t10k-labels-idx1-ubyte", b"\x00")(f))),
    D("idx-bad-magic", "is not a uint8 idx file",
      lambda f: _idx(f / "t10k-labels-idx1-ubyte.gz", np.zeros((2, 2, 2, 2, 2)))),
    D("idx-body-short", "is truncated: 10 bytes of 20",
      lambda f: (f / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
          struct.pack(">HBBI", 0, 8, 1, 20) + bytes(10)))),
    D("idx-header-short", "its header is cut short",
      lambda f: (f / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">HBB", 0, 8, 3)))),
    D("labels-count", "60 images but 59 labels",
      lambda f: _idx(f / "train-labels-idx1-ubyte.gz", np.zeros(59))),
    D("images-shape", "expected N×28×28 images and N labels, got (60, 32, 32)",
      lambda f: _idx(f / "train-images-idx3-ubyte.gz", np.zeros((60, 32, 32)))),
    D("label-not-a-class", "label 12 is not a class (0-9)",
      lambda f: _idx(f / "t10k-labels-idx1-ubyte.gz", np.full(20, 12))),
    # CIFAR's python release, named by --data-dir
    Bad("cifar-missing", "cifar100 not found: ", lambda e: e.run("--data-dir", str(e.tmp), suite="cifar100-crd")),
    Bad("cifar-not-a-pickle", "cifar100 files in", lambda e: e.run("--data-dir", e.cifar(b"not a pickle"),
                                                                  suite="cifar100-crd")),
    Bad("cifar-pickle-runs-code", "asks for builtins.exec, which a data file never needs",
        lambda e: e.run("--data-dir", e.cifar(pickle.dumps(RunsCode.at(e.tmp))), suite="cifar100-crd")),
    Bad("cifar-wrong-keys", "is not a CIFAR batch: it lacks 'data' or 'fine_labels'",
        lambda e: e.run("--data-dir", e.cifar(pickle.dumps({"data": 1})), suite="cifar100-crd")),
    # the suite file
    Bad("yaml-malformed", "not valid YAML at line 3",
        lambda e: (e.tmp.joinpath("s.yaml").write_text("name: x\nteacher: [unclosed\n"),
                   e.run(suite=str(e.tmp / "s.yaml")))[1]),
    Bad("yaml-a-list", "expected a mapping, got list",
        lambda e: (e.tmp.joinpath("s.yaml").write_text("- 1\n- 2\n"), e.run(suite=str(e.tmp / "s.yaml")))[1]),
    Bad("yaml-empty", "expected a mapping, got NoneType",
        lambda e: (e.tmp.joinpath("s.yaml").write_text(""), e.run(suite=str(e.tmp / "s.yaml")))[1]),
    S("unknown-key", "unknown key(s) extra_key", extra_key=1),
    S("unknown-dataset", "unknown dataset 'imagenet'", dataset="imagenet"),
    S("unknown-student", "unknown model 'resnet1000'", student__model="resnet1000"),
    S("unknown-teacher", "unknown model 'vit_huge'", teacher__model="vit_huge"),
    S("name-escapes", "suite name '../../escaped' must be a plain name", name="../../escaped"),
    S("name-absolute", "suite name '/tmp/escaped' must be a plain name", name="/tmp/escaped"),
    S("name-subfolder", "suite name 'a/b' must be a plain name", name="a/b"),
    S("name-hidden", "suite name '.hidden' must be a plain name", name=".hidden"),
    S("name-not-a-string", "name must be a non-empty string, got 3", name=3),
    S("label-escapes", "method label '../x' must be a plain name",
      methods=[{"method": "vanilla_kd", "label": "../x"}]),
    S("method-entry-escapes", "method '../x' must be a plain name", methods=["../x"]),
    S("labels-repeated", "method labels are repeated", methods=["vanilla_kd", "vanilla_kd"]),
    S("methods-neither", "methods must be 'all' or a non-empty list", methods="some"),
    S("methods-empty", "methods must be 'all' or a non-empty list", methods=[]),
    S("seeds-empty", "seeds must be a non-empty list", seeds=[]),
    S("seeds-repeated", "seeds are repeated", seeds=[1, 1]),
    S("seed-negative-in-suite", "seeds must be at least 0, got -1", seeds=[-1]),
    S("seed-2^70-in-suite", "seeds must be at most 4,294,967,295", seeds=[2**70]),
    S("teacher-seed-2^70", "teacher.seed must be at most 4,294,967,295", teacher__seed=2**70),
    S("seed-a-string", "seeds must be an integer, got 'a'", seeds=["a"]),
    S("epochs-zero", "epochs must be at least 1", train__epochs=0),
    S("epochs-negative", "epochs must be at least 1", train__epochs=-1),
    S("epochs-10^12", "train.epochs must be at most 10,000, got 1,000,000,000,000", train__epochs=10**12),
    S("epochs-a-formula", "epochs must be an integer, got '10**12'", train__epochs="10**12"),
    S("teacher-epochs-10^12", "teacher.train.epochs must be at most 10,000", teacher__train__epochs=10**12),
    S("batch-zero", "batch_size must be at least 1", train__batch_size=0),
    S("batch-huge", "batch_size must be at most 65,536", train__batch_size=10**9),
    S("lr-nan", "optimizer.lr must be a finite number, got nan", train__optimizer__lr=float("nan")),
    S("lr-inf", "optimizer.lr must be a finite number, got inf", train__optimizer__lr=float("inf")),
    S("lr-huge-integer", "optimizer.lr must be a finite number, got a huge integer", train__optimizer__lr=10**400),
    S("lr-negative", "lr must be positive", train__optimizer__lr=-0.1),
    S("lr-zero", "lr must be positive", train__optimizer__lr=0),
    S("momentum-5", "momentum must be at most 1, got 5", train__optimizer__momentum=5),
    S("weight-decay-negative", "weight_decay must be non-negative", train__optimizer__weight_decay=-1),
    S("weight-decay-nan", "weight_decay must be a finite number", teacher__train__optimizer__weight_decay=float("nan")),
    S("gamma-inf", "schedule.gamma must be a finite number",
      train__schedule={"name": "multistep", "milestones": [1], "gamma": float("inf")}),
    S("milestones-decreasing", "milestones must be increasing epochs, got [2, 1]",
      train__schedule={"name": "multistep", "milestones": [2, 1]}),
    S("milestones-not-epochs", "milestones must be an integer, got 'x'",
      train__schedule={"name": "multistep", "milestones": ["x"]}),
    S("unknown-optimizer", "unknown optimizer 'lion'", train__optimizer={"name": "lion"}),
    S("unknown-schedule", "unknown schedule 'onecycle'", train__schedule={"name": "onecycle"}),
    S("adamw-momentum", "optimizer: unknown key(s) momentum", train__optimizer={"name": "adamw", "momentum": 0.9}),
    S("nesterov-a-string", "optimizer.nesterov must be true or false, got 'false'", train__optimizer__nesterov="false"),
    S("min-acc-150", "min_acc must be at most 100, got 150", teacher__min_acc=150),
    S("train-size-zero", "train_size must be at least 1", train_size=0),
    S("unknown-hyperparameter", "no hyperparameter 'temperature'",
      methods=[{"method": "vanilla_kd", "hyperparameters": {"temperature": 4}}]),
    S("T-zero", "'T' must be > 0, got 0", methods=[{"method": "vanilla_kd", "hyperparameters": {"T": 0}}]),
    S("T-negative", "'T' must be > 0, got -1", methods=[{"method": "vanilla_kd", "hyperparameters": {"T": -1}}]),
    S("alpha-nan", "'alpha' must be finite",
      methods=[{"method": "vanilla_kd", "hyperparameters": {"alpha": float("nan")}}]),
    S("rho-zero", "'rho' must be in (0, 1], got 0", methods=[{"method": "kr_sparse", "hyperparameters": {"rho": 0}}]),
    S("k-above-classes", "k must be at most classes − 1 = 9",
      methods=[{"method": "bregman_pca", "hyperparameters": {"k": 10}}]),
    S("feature-unknown", "'feature' must be one of",
      methods=[{"method": "kernel_nystrom", "hyperparameters": {"feature": "middle"}}]),
    S("k-not-auto", "hyperparameter 'k' must be int, got 'automatic'",
      methods=[{"method": "bregman_pca", "hyperparameters": {"k": "automatic"}}]),
    S("fast-path-precision", "fast_path.precision must be one of fp32, bf16, got 'fp16'", fast_path={"precision": "fp16"}),
    S("fast-path-compile", "fast_path.compile must be true or false, got 'yes'", fast_path={"compile": "yes"}),
    S("fast-path-unknown", "fast_path: unknown key(s) tf32", fast_path={"tf32": True}),
    # a tuned suite
    C("max-group-zero", "--max-group must be at least 1, got 0", "--max-group", "0"),
    S("tuning-trials-zero", "tuning.trials must be at least 1, got 0", tuning={"trials": 0}),
    S("tuning-trials-10001", "tuning.trials must be at most 10,000, got 10,001", tuning={"trials": 10_001}),
    S("tuning-seed-also-a-seed", "tuning.seeds: 1 also among the suite's seeds", tuning={"seeds": [1000, 1]}),
    Bad("tuning-seed-also-in-seeds-flag", "tuning.seeds: 1000 also among the suite's seeds",
        lambda e: e.run("--seeds", "1000", suite=e.suite(tuning={"trials": 2}))),
    S("tuning-seeds-repeated", "tuning.seeds are repeated", tuning={"seeds": [7, 7]}),
    S("tuning-unknown-key", "tuning: unknown key(s) budget", tuning={"budget": 3}),
    S("tuning-validation-both", "give fraction or size, not both", tuning={"validation": {"fraction": 0.1, "size": 9}}),
    S("tuning-validation-fraction-1", "validation.fraction must be below 1, got 1", tuning={"validation": {"fraction": 1}}),
    S("tuning-validation-size-zero", "validation.size must be at least 1", tuning={"validation": {"size": 0}}),
    S("tune-not-a-bool", "vanilla_kd.tune must be true or false, got 'no'",
      methods=[{"method": "vanilla_kd", "tune": "no"}], tuning={"trials": 2}),
    Bad("tuning-validation-empties-a-class", "the validation split leaves class 0 with 0 training and 194 validation image(s) (of 194); hold out fewer",
        lambda e: e.run(suite=e.suite(tuning={"validation": {"fraction": 0.999}})), "data"),
    Bad("tuning-validation-misses-a-class", "leaves class 0 with 194 training and 0 validation image(s) (of 194); hold out more images",
        lambda e: e.run(suite=e.suite(tuning={"validation": {"size": 5}})), "data"),
    P("space-outside-domain", "Acme.search_space['w'] (uniform [0, 1]) leaves the domain: 0 is not > 0",
      "{'w': Uniform(0, 1)}"),
    P("space-unknown-distribution", "Acme.search_space['w'] is 'normal', not a distribution", "{'w': 'normal'}"),
    P("space-unknown-hyperparameter", "Acme.search_space tunes 'temperature', which the method does not have",
      "{'temperature': LogUniform(1, 8)}"),
    Bad("train-size-beyond-data", "train_size is 70,000, but fashion_mnist's training set has 60,000 images",
        lambda e: e.run(suite=e.suite(train_size=70_000)), "data"),
    Bad("test-size-beyond-data", "test_size is 20,000, but fashion_mnist's test set has 10,000 images",
        lambda e: e.run(suite=e.suite(test_size=20_000)), "data"),
    Bad("teacher-train-size-beyond-data", "teacher.train_size is 100,000",
        lambda e: e.run(suite=e.suite(teacher__train_size=100_000)), "data"),
    # a damaged teacher cache
    T("teacher-json-truncated", "teacher.json is unreadable",
      lambda f, m: (f / "teacher.json").write_text(json.dumps(m)[:40])),
    T("teacher-json-a-list", "lacks the checkpoint's sha256 or test_acc", lambda f, m: [1, 2]),
    T("teacher-json-no-sha256", "lacks the checkpoint's sha256 or test_acc",
      lambda f, m: {k: v for k, v in m.items() if k != "sha256"}),
    T("teacher-pt-missing", "teacher.pt is missing", lambda f, m: (f / "teacher.pt").unlink()),
    T("teacher-pt-altered", "has sha256", lambda f, m: (f / "teacher.pt").write_bytes(
        (f / "teacher.pt").read_bytes()[:-1] + b"!")),
    T("teacher-pt-not-a-state-dict", "holds a list, not a state dict", lambda f, m: _resave(f, m, [1, 2])),
    T("teacher-pt-wrong-keys", "cannot be loaded (Error(s) in loading state_dict",
      lambda f, m: _resave(f, m, {"w": torch.zeros(1)})),
    T("teacher-pt-runs-code", "cannot be loaded (Weights only load failed", _malicious),
    # the user's own pair and data
    U("user-torchvision-unknown", "unknown torchvision model 'resnet19'; did you mean resnet18",
      _set("student", "model", "torchvision:resnet19")),
    U("user-callable-not-importing", "module 'no_such_module' does not import",
      _set("student", "model", "no_such_module:net")),
    U("user-callable-missing", "module 'my_models' has no 'resnet'", _set("student", "model", "my_models:resnet")),
    U("user-taps-bad-path", "has no module '9'", _set("student", "taps", {"stages": ["9"]})),
    U("user-taps-on-zoo", "is a zoo model: its taps are built in", _set("student", {"model": "fmnist_student",
                                                                                   "taps": {"stages": ["a"]}})),
    U("user-missing-tap", "method 'srrl' reads the student's 'prepool' tap, which my_models:tiny_cnn does not give",
      lambda f, s: (s["student"].pop("taps"), s.update(methods=["vanilla_kd", "srrl"]))),
    U("user-imagefolder-no-images", "train/c has no images",
      lambda f, s: [p.unlink() for p in (f / "shapes" / "train" / "c").glob("*.png")]),
    U("user-imagefolder-classes", "different class folders (only in one: f)",
      lambda f, s: (f / "shapes" / "test" / "f").mkdir()),
    U("user-imagefolder-absent", "is not a folder", _set("dataset", "root", "nowhere")),
    U("user-image-size-zero", "image_size must be at least 1", _set("dataset", "image_size", 0)),
    U("user-dataset-format", "format must be one of imagefolder, tensors", _set("dataset", "format", "csv")),
    U("user-tensors-keys", "missing test_labels", _tensors_suite(test_labels=None)),
    U("user-tensors-shapes", "train_images must be N×C×S×S",
      _tensors_suite(train_images=torch.zeros(40, 3, 16, 8, dtype=torch.uint8))),
    U("user-tensors-labels", "train_labels must be 40 integers", _tensors_suite(train_labels=torch.zeros(40))),
    U("user-checkpoint-sha256", "has sha256", _set("teacher", "sha256", "0" * 64)),
    U("user-checkpoint-sha256-not-hex", "must be 64 hexadecimal digits", _set("teacher", "sha256", "abc")),
    U("user-checkpoint-missing", "does not exist", _set("teacher", "checkpoint", "gone.pt")),
    U("user-checkpoint-junk", "cannot be loaded as tensors", _checkpoint(lambda f: [RunsCode.at(f)])),
    U("user-checkpoint-no-state-dict", "holds no state dict", _checkpoint([1, 2])),
    U("user-checkpoint-other-model", "does not fit torchvision:resnet18: it has other shapes at 1 key(s), e.g. 'fc.weight'",
      _checkpoint(lambda f: {**torch.load(f / "teacher.pt"), "fc.weight": torch.zeros(3, 512)})),
    U("user-checkpoint-with-train", "unknown key(s) train", _set("teacher", "train", {"epochs": 1, "batch_size": 8})),
    # --- issue 24: records, teachers and storage
    U("user-checkpoint-prefixed", "it lacks 122 key(s), e.g. 'conv1.weight'; its keys all carry the prefix "
      "'module.', which the model's lack", _checkpoint(lambda f: {f"module.{k}": v for k, v in
                                                                  torch.load(f / "teacher.pt").items()})),
    U("user-checkpoint-unprefixed-part", "it lacks 1 key(s), e.g. 'fc.bias'",
      _checkpoint(lambda f: {k: v for k, v in torch.load(f / "teacher.pt").items() if k != "fc.bias"})),
    U("user-checkpoint-below-min-acc", "below the suite's min_acc 99.00% (checkpoint: ",
      lambda f, s: (s["teacher"].update(min_acc=99), (f / "r").mkdir())),  # r/ exists: nothing new in it
    # --- issue 24: the user's data and models
    U("user-imagefolder-decompression-bomb", "train/a/bomb.png has over 67,108,864 pixels (a decompression bomb?)",
      lambda f, s: write_png_header(f / "shapes" / "train" / "a" / "bomb.png", 15_000, 15_000)),
    U("user-tensors-billion-classes", "so 1,000,000,001 classes; at most 100,000 are supported",
      _tensors_suite(train_labels=torch.tensor([10**9] + [k % 5 for k in range(1, 40)]))),
    U("user-tensors-bfloat16", "train_images must be N×C×S×S (or N×S×S) uint8 or float16, 32 or 64, got "
      "(40, 3, 16, 16) torch.bfloat16", _tensors_suite(train_images=tensors()["train_images"].to(torch.bfloat16))),
    U("user-tensors-meta-device", "test_images was saved on the meta device, which holds no values",
      _tensors_suite(**{k: v.to("meta") for k, v in tensors().items()})),
    U("user-teacher-no-parameters", "the teacher odd_models:no_parameters has no trainable parameters",
      lambda f, s: s.update(teacher={"model": f"{write_odd_module(f)}:no_parameters", "seed": 0,
                                     "train": {"epochs": 1, "batch_size": 16}}, methods=["vanilla_kd"])),
    U("user-teacher-logits-too-narrow", "odd_models:narrow returns 2 logits per image, but the data has 5 classes",
      lambda f, s: s.update(teacher={"model": f"{write_odd_module(f)}:narrow", "seed": 0,
                                     "train": {"epochs": 1, "batch_size": 16}}, methods=["vanilla_kd"])),
    U("user-student-logits-too-wide", "odd_models:wide returns 1,000 logits per image, but the data has 5 classes",
      lambda f, s: s.update(student={"model": f"{write_odd_module(f)}:wide"}, methods=["student_ce"])),
    U("user-student-logits-too-narrow", "odd_models:narrow returns 2 logits per image, but the data has 5 classes",
      lambda f, s: s.update(student={"model": f"{write_odd_module(f)}:narrow"}, methods=["student_ce"])),
    U("user-student-no-parameters", "the student odd_models:no_parameters has no trainable parameters",
      lambda f, s: s.update(student={"model": f"{write_odd_module(f)}:no_parameters"}, methods=["student_ce"])),
    U("user-student-frozen", "the student odd_models:frozen has no trainable parameters",
      lambda f, s: s.update(student={"model": f"{write_odd_module(f)}:frozen"}, methods=["student_ce"])),
    U("user-module-exits-on-import", "module 'exits_on_import' does not import: it calls sys.exit(0)",
      lambda f, s: s.update(student={"model": f"{write_odd_module(f, 'exits_on_import', True)}:wide"})),
    # --- issue 24: suite files, paths and the command line
    Bad("suite-binary", "not UTF-8 text (byte 0x80 at offset 10)",
        lambda e: _suite_bytes(e, b"name: tiny\x80\xff\xfe\x00binary\n")),
    Bad("suite-latin-1", "not UTF-8 text (byte 0xe9", _latin1),
    Bad("suite-over-1-mib", "larger than 1 MiB",
        lambda e: _suite_bytes(e, Path(e.suite()).read_bytes() + b"#" + b"x" * (1 << 20) + b"\n")),
    Bad("alias-bomb-name", "expands to more than 100,000 values", lambda e: _yaml(e, BOMB, name="XBOMBX")),
    Bad("alias-bomb-hyperparameter", "expands to more than 100,000 values",
        lambda e: _yaml(e, BOMB, methods=_hp("vanilla_kd", T="XBOMBX"))),
    Bad("alias-bomb-description", "expands to more than 100,000 values", lambda e: _yaml(e, BOMB, description="XBOMBX")),
    Bad("alias-bomb-seeds", "expands to more than 100,000 values", lambda e: _yaml(e, f"[0, {BOMB}]", seeds="XBOMBX")),
    Bad("alias-loop", "an alias refers to a node that contains it", lambda e: _yaml(e, "&d [*d]", description="XBOMBX")),
    Bad("suite-nested-deep", "nested more than 64 levels deep",
        lambda e: _yaml(e, "[" * 100_000 + "]" * 100_000, description="XBOMBX")),
    C("results-dir-name-300", "has a name of 300 bytes; at most 255", "--results-dir", LONG_NAME),
    C("results-dir-8k", "is too long: ", "--results-dir", LONG_PATH),
    C("results-dir-empty", "--results-dir must be a non-empty path, got ''", "--results-dir", "", "--methods",
      "student_ce", "--seeds", "0"),
    C("data-dir-name-300", "--data-dir 'aaaa", "--data-dir", LONG_NAME),
    Bad("report-results-dir-8k", "--results-dir '" + "b" * 20,
        lambda e: ["report", "s", "--results-dir", LONG_PATH, "--report-dir", str(e.tmp / "rep")]),
    Bad("suite-path-name-300", "has a name of 305 bytes", lambda e: e.run(suite=LONG_NAME + ".yaml")),
    U("user-imagefolder-root-nul", "holds a NUL byte", _set("dataset", "root", "sha\0pes")),
    U("user-tensors-path-nul", "holds a NUL byte", _set("dataset", {"format": "tensors", "path": "data\0.pt"})),
    U("user-checkpoint-nul", "holds a NUL byte", _set("teacher", "checkpoint", "teach\0er.pt")),
    S("optimizer-name-a-list", "unknown optimizer ['sgd']", train__optimizer__name=["sgd"]),
    S("schedule-name-a-mapping", "unknown schedule {'a': 1}", train__schedule={"name": {"a": 1}}),
    S("fast-path-precision-a-list", "fast_path.precision must be one of fp32, bf16, got ['fp32']",
      fast_path={"precision": ["fp32"]}),
    C("ray-address-garbage", "executor.address must be auto, local, HOST:PORT or ray://HOST:PORT, got 'garbage'",
      "--executor", "ray", "--ray-address", "garbage"),
    Bad("ray-address-closed-port", "cannot connect (Connection refused)",
        lambda e: e.run("--executor", "ray", "--ray-address", _closed_port()), "ray"),
    Bad("ray-address-silent", "no Ray cluster answered within 2 s", _ray_silent, "ray"),
    Bad("claim-symlink-loop", "student_ce__seed0.lock cannot be taken: it is a symbolic link", _claim_loop, "data"),
    Bad("report-record-nested-100000", "nested more than 64 levels deep",
        lambda e: _records(e, lambda r: (r / "a__seed0.json").write_text("[" * 100_000 + "]" * 100_000))),
    Bad("report-record-dev-zero", "not a regular file (a character device)",
        lambda e: _records(e, lambda r: (r / "a__seed0.json").symlink_to("/dev/zero"))),
    Bad("report-record-fifo", "not a regular file (a FIFO)",
        lambda e: _records(e, lambda r: os.mkfifo(r / "a__seed0.json"))),
    C("seeds-flag-repeated", "--seeds are repeated: 0", "--seeds", "0", "0", "--methods", "student_ce"),
    S("kd-layer-K-10^12", "hyperparameter 'K' must be in [2, 65536], got 1000000000000",
      methods=_hp("kd_layer", K=10**12)),
    S("kd-layer-kmeans-iters-10^9", "hyperparameter 'kmeans_iters' must be in [1, 1000], got 1000000000",
      methods=_hp("kd_layer", kmeans_iters=10**9)),
    S("bregman-pca-fit-iters-10^9", "hyperparameter 'fit_iters' must be in [1, 1000]",
      methods=_hp("bregman_pca", fit_iters=10**9)),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny suite run to the end: a cached teacher and a record, for the cases that damage them."""
    folder = tmp_path_factory.mktemp("trained")
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="tiny", train_size=300, test_size=200, methods=["vanilla_kd"], seeds=[0])
    raw["teacher"]["train_size"] = 300
    raw["train"]["epochs"] = 1
    (folder / "suite.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(folder / "suite.yaml"), "--results-dir", str(folder), "--no-progress"]) == 0
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its content's digest (folders as "dir", links by their target,
    FIFOs and devices by kind: reading them could block or never end)."""
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*"))}


def _digest(p: Path) -> str:
    if p.is_symlink():
        return f"link to {os.readlink(p)}"
    if p.is_dir():
        return "dir"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "special"


def test_the_matrix_is_large_and_its_ids_unique():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, request):
    if case.needs == "no_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    if case.needs == "no_sbatch" and shutil.which("sbatch"):
        pytest.skip("SLURM is present")
    if case.needs == "ray":
        pytest.importorskip("ray")
    if case.needs in ("data", "trained"):
        request.getfixturevalue("needs_fashion_mnist")
    env = Env(tmp_path / "t", request.getfixturevalue("trained") if case.needs == "trained" else None,
              request.getfixturevalue("monkeypatch") if case.needs in ("plugin", "ray") else None)
    env.tmp.mkdir()
    argv = case.argv(env)
    capsys.readouterr()
    before = snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("kdbench: error:") and "Traceback" not in err, err
    assert case.fragment in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "a file or folder was written"
    assert not (tmp_path / "code-ran").exists() and not list(tmp_path.rglob("code-ran"))
