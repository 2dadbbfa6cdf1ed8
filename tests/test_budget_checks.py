"""A plugin's hyperparameter check sees the training budget, and a value a plugin chooses itself is
recorded beside what the suite asked for.

A warm-up of 20 epochs in a 2-epoch run silently turns a method into its baseline; the plugin can
refuse it only if its ``check_hyperparameters`` knows the budget. The hook keeps its signature
``(cls, hp, task)``: the budget comes in the ``Task`` it already receives."""

from __future__ import annotations

import json

import torch.nn.functional as F
from kdbench.api.domains import AnyOf, OneOf, at_least
from kdbench.api.errors import ConfigError
from kdbench.api.method import Method, Task
from kdbench.api.registry import get_method
from kdbench.cli import main
from kdbench.train.records import record_path

from tests.plugins import registered


class WarmsUp(Method):
    """Ramps its KD term over ``warmup`` epochs; ``auto``: a quarter of the budget, at least one."""

    name = "warms_up"
    paper = "test plugin"
    defaults = {"warmup": 1}
    domains = {"warmup": AnyOf(at_least(0), OneOf("auto"))}
    seen: list[Task] = []

    @classmethod
    def check_hyperparameters(cls, hp, task):
        cls.seen.append(task)
        if hp["warmup"] != "auto" and hp["warmup"] >= task.epochs:
            raise ConfigError(f"warms_up: a warm-up of {hp['warmup']} epochs leaves nothing of the "
                              f"{task.epochs}-epoch budget ({task.steps_per_epoch} steps an epoch)")

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        if self.hp["warmup"] == "auto":
            self.hp["warmup"] = max(1, ctx.epochs // 4)

    def losses(self, s, t, y, progress):
        return {"ce": F.cross_entropy(s.logits, y)}


def suite(write_suite, warmup, methods=(), **top):
    return write_suite(methods=[{"method": "warms_up", "hyperparameters": {"warmup": warmup}}, *methods],
                       seeds=[0], **top)


def test_the_check_sees_the_budget_and_refuses_a_warm_up_longer_than_the_run(write_suite, tmp_path, capsys):
    path = suite(write_suite, 20)
    WarmsUp.seen.clear()
    with registered(WarmsUp):
        code = main(["run", str(path), "--results-dir", str(tmp_path / "r"), "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "a warm-up of 20 epochs leaves nothing of the 2-epoch budget (16 steps an epoch)" in err
    assert not (tmp_path / "r").exists()
    # the smoke budget: 2 epochs of 2,000 images in batches of 128, known before the data is read
    assert WarmsUp.seen[0] == Task(10, (1, 28, 28), 2, 16)


def test_a_plugin_check_written_before_the_budget_still_works():
    """The hook's signature is unchanged: a Task built as before, and a check that reads only the data."""
    bregman = get_method("bregman_pca")
    bregman.check_hyperparameters({"k": 4}, Task(10, (1, 28, 28)))
    try:
        bregman.check_hyperparameters({"k": 12}, Task(10, (1, 28, 28), 2, 16))
    except ConfigError as exc:
        assert "k must be at most classes − 1 = 9" in str(exc)
    else:
        raise AssertionError("k above classes − 1 was accepted")


SMALL = {"train_size": 500, "test_size": 300, "train": {"epochs": 2, "batch_size": 128},
         "teacher": {"train_size": 500, "train": {"epochs": 1, "batch_size": 128}}}


def test_a_value_the_plugin_chose_is_recorded_beside_what_was_asked(
    needs_fashion_mnist, write_suite, tmp_path
):
    path = suite(write_suite, "auto", [{"method": "bregman_pca", "hyperparameters": {"k": "auto"}},
                                       {"method": "bregman_pca", "label": "bregman_k3", "hyperparameters": {"k": 3}}],
                 **SMALL)
    with registered(WarmsUp):
        assert main(["run", str(path), "--results-dir", str(tmp_path), "--no-progress", "--threads", "1"]) == 0

    def rec(label):
        return json.loads(record_path(tmp_path, "tiny", label, 0).read_text())

    warm = rec("warms_up")
    assert warm["status"] == "ok" and warm["hyperparameters"] == {"warmup": "auto"}
    assert warm["hyperparameters_resolved"] == {"warmup": 1}
    bregman = rec("bregman_pca")
    assert bregman["status"] == "ok" and bregman["hyperparameters"]["k"] == "auto"
    assert bregman["hyperparameters_resolved"] == {"k": bregman["prepare"]["k"]}
    assert isinstance(bregman["prepare"]["k"], int)
    assert "hyperparameters_resolved" not in rec("bregman_k3")  # asked for 3, ran with 3
