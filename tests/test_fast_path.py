"""The fast-path options (precision, layout, compilation, determinism): validated, recorded and
hashed; bf16 trains every method to finite losses on CPU. (The test that no step waits for the
device is in tests/test_no_sync.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from kdbench.api.errors import ConfigError
from kdbench.api.method import MethodContext, TeacherData
from kdbench.api.registry import get_method, method_names
from kdbench.cli import main
from kdbench.config.fast_path import FastPath
from kdbench.config.hashing import stable_hash
from kdbench.config.suite import SUITES_DIR, load_suite, parse_suite
from kdbench.data.datasets import DATASETS, Dataset, Split
from kdbench.models import build_model, to_device
from kdbench.models.pair import build_student, build_teacher
from kdbench.run.plan import cell_config, plan
from kdbench.train import fast_path
from kdbench.train.environment import set_determinism
from kdbench.train.fast_path import CompiledOrEager
from kdbench.train.teacher import freeze, teacher_config_hash


def smoke(**fast) -> dict:
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    if fast:
        raw["fast_path"] = fast
    return raw


@pytest.mark.parametrize("fast, message", [
    ({"precision": "fp16"}, "fast_path.precision must be one of fp32, bf16, got 'fp16'"),
    ({"channels_last": "yes"}, "fast_path.channels_last must be true or false, got 'yes'"),
    ({"compile": 1}, "fast_path.compile must be true or false, got 1"),
    ({"deterministic": None}, "fast_path.deterministic must be true or false, got None"),
    ({"amp": True}, "fast_path: unknown key(s) amp"),
])
def test_bad_options_are_one_line_errors(fast, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_suite(smoke(**fast))
    assert "\n" not in str(err.value)


def fake_data() -> Dataset:
    split = Split(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64))
    return Dataset(DATASETS["fashion_mnist"], split, split, "synthetic", "0" * 64)


def test_each_option_changes_the_hashes_and_the_defaults_change_nothing():
    data = fake_data()
    default = parse_suite(smoke())
    assert default.fast_path == FastPath() and parse_suite(smoke(precision="fp32")).fast_path == FastPath()
    cell = plan(default, ["vanilla_kd"], [0])[0]
    base = cell_config(default, cell, data, None)
    assert "fast_path" not in base  # records made before the options existed keep their hashes
    hashes = {stable_hash(base)}
    teachers = {teacher_config_hash(default, data)}
    for option in ({"precision": "bf16"}, {"channels_last": False}, {"compile": True}, {"deterministic": False}):
        suite = parse_suite(smoke(**option))
        config = cell_config(suite, cell, data, None)
        assert config["fast_path"] == {**FastPath().__dict__, **option}
        hashes.add(stable_hash(config))
        teachers.add(teacher_config_hash(suite, data))
    assert len(hashes) == 5 and len(teachers) == 5


def test_bf16_trains_every_method_of_the_smoke_suite_to_finite_losses(needs_fashion_mnist, tmp_path):
    """Every method's bf16 path, on a fifth of the smoke suite's images for one epoch: what is
    checked is that each trains to finite losses, which needs steps, not a budget."""
    raw = smoke(precision="bf16")
    raw["teacher"]["train_size"] = raw["train_size"] = 384
    raw["test_size"], raw["train"]["epochs"] = 256, 1
    path = tmp_path / "smoke-bf16.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": "smoke-bf16"}))
    assert main(["run", str(path), "--seeds", "0", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "smoke-bf16" / "runs").glob("*.json"))]
    assert sorted(r["method"] for r in recs) == method_names()
    for rec in recs:
        assert rec["status"] == "ok" and rec["fast_path"]["precision"] == "bf16", rec["error"]
        assert rec["config"]["fast_path"]["precision"] == "bf16"
        losses = [v for e in rec["epochs"] for v in e["loss"].values()]
        assert losses and all(math.isfinite(v) for v in losses), rec["method"]
        assert 0 < rec["final_acc"] <= 100


def test_layout_and_determinism_options_act():
    def conv_weight(channels_last):
        model = to_device(build_model("fmnist_student", 10, 1), "cpu", channels_last=channels_last)
        return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1).weight

    assert conv_weight(True).is_contiguous(memory_format=torch.channels_last) and not conv_weight(True).is_contiguous()
    assert conv_weight(False).is_contiguous() and not conv_weight(False).is_contiguous(memory_format=torch.channels_last)
    try:
        assert set_determinism(torch.device("cpu"), deterministic=False) is False
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    finally:
        assert set_determinism(torch.device("cpu")) is True


def test_compiled_functions_run_compiled_and_fall_back_with_a_note(monkeypatch):
    doubled = CompiledOrEager(lambda x: x * 2 + 1)  # a real torch.compile, on a tiny function
    assert torch.equal(doubled(torch.ones(3)), torch.full((3,), 3.0)) and doubled.note is None

    def broken_compile(fn):
        def run(*args):
            raise RuntimeError("no C++ compiler here\nmore detail")
        return run

    monkeypatch.setattr(fast_path.torch, "compile", broken_compile)
    model = build_model("fmnist_student", 10, 1)
    wrapped = fast_path.compile_forward(model)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # eager, after the failure
    assert wrapped.note == "RuntimeError: no C++ compiler here"
    assert fast_path.compile_note(model) == wrapped.note
    with fast_path.eager(model):
        assert "forward_taps" not in model.__dict__
    assert model.forward_taps is wrapped


def test_the_cifar100_suite_sets_its_per_method_hyperparameters(tmp_path):
    suite = load_suite("cifar100-crd")
    cells = {c.entry.method: c.hyperparameters for c in plan(suite, None, [0])}
    assert sorted(cells) == method_names()
    assert cells["kd_layer"]["K"] == 4096 and cells["bregman_pca"]["k"] == "auto"
    assert "Nesterov" in suite.description and "shared protocol wins" in suite.description
    # k from the rule, for 100 classes, on the suite's own pair (random weights, CIFAR-shaped data)
    spec = DATASETS["cifar100"]
    torch.manual_seed(0)
    teacher = freeze(build_teacher(suite, spec))
    student = build_student(suite, spec)
    shape = (3, 32, 32)
    ctx = MethodContext(student, teacher, student.tap_shapes(shape), teacher.tap_shapes(shape), 100, 240, 1)
    method = get_method("bregman_pca")(cells["bregman_pca"], ctx)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(100, *shape, generator=g)
    facts = method.prepare(TeacherData(teacher, images, torch.arange(100), tmp_path, 0, "cd" * 32))
    tried = facts["k_rule"]["train_kl_by_k"]
    assert 1 <= facts["k"] <= 99 and student.classifier.out_features == facts["k"]
    assert facts["k"] in tried and all(k < facts["k"] for k in tried if k != facts["k"] and
                                       tried[k] >= 0.01 * facts["teacher_mean_only_kl_train"])
