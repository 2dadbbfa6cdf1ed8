"""The cells of a group cannot change each other's results (issue 24 item 13): a plugin that changes
the teacher or the data they share fails, named, and no other cell records ``ok`` on the changed
inputs; one whose losses are not scalars fails alone, on every run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from kdbench.api.method import Method
from kdbench.cli import main

from tests.plugins import registered
from tests.test_end_to_end import SMALL, same_results


def vanilla_kd_loss(s, t, y):
    return {"ce": F.cross_entropy(s.logits, y), "kd": F.kl_div(F.log_softmax(s.logits, 1),
                                                               F.softmax(t.logits, 1), reduction="batchmean")}


class ScalesTheTeacher(Method):
    """Scales the teacher's weights through its context, as it is built."""

    name = "scales_the_teacher"
    paper = "test plugin"
    teacher_taps = frozenset({"logits"})

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        with torch.no_grad():
            for p in ctx.teacher.parameters():
                p.mul_(0.9)

    def losses(self, s, t, y, progress):
        return vanilla_kd_loss(s, t, y)


class ScalesTheTeacherAtEpochEnd(ScalesTheTeacher):
    """The same, in its end-of-epoch hook."""

    name = "scales_the_teacher_at_epoch_end"

    def __init__(self, hp, ctx):
        Method.__init__(self, hp, ctx)

    def on_epoch_end(self, epoch):
        with torch.no_grad():
            for p in self.ctx.teacher.parameters():
                p.mul_(0.9)


class ScalesTheTeacherInAStep(ScalesTheTeacherAtEpochEnd):
    """The same, at one training step of the first epoch."""

    name = "scales_the_teacher_in_a_step"

    def on_epoch_end(self, epoch):
        pass

    def losses(self, s, t, y, progress):
        if (progress.epoch, progress.step) == (0, 2):
            with torch.no_grad():
                self.ctx.teacher.classifier.weight.mul_(0.9)
        return vanilla_kd_loss(s, t, y)


class ZeroesTheImages(Method):
    """Zeroes the training images it is handed to prepare."""

    name = "zeroes_the_images"
    paper = "test plugin"
    teacher_taps = frozenset({"logits"})

    def prepare(self, data):
        data.train_images.zero_()
        return {}

    def losses(self, s, t, y, progress):
        return {"ce": F.cross_entropy(s.logits, y)}


class VectorLoss(Method):
    """Returns a loss term per image, not their mean."""

    name = "vector_loss"
    paper = "test plugin"

    def losses(self, s, t, y, progress):
        return {"ce": F.cross_entropy(s.logits, y, reduction="none")}


PLUGINS = (ScalesTheTeacher, ScalesTheTeacherAtEpochEnd, ScalesTheTeacherInAStep, ZeroesTheImages, VectorLoss)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    import yaml
    from kdbench.config.suite import SUITES_DIR

    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="tiny", seeds=[0, 1], methods=["student_ce", "vanilla_kd", *(p.name for p in PLUGINS)],
               train_size=SMALL["train_size"], test_size=SMALL["test_size"])
    raw["teacher"].update(SMALL["teacher"])
    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(suite, results, *methods: str, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    with registered(*PLUGINS):
        assert main(["run", suite, "--results-dir", str(results), "--quiet", "--threads", "1", *extra,
                     "--methods", *methods]) == 0
    return {(r["label"], r["seed"]): r for r in (json.loads(p.read_text())
                                                 for p in (results / "tiny" / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def alone(needs_fashion_mnist, suite, tmp_path_factory):
    """The two baselines, in a group of their own: what a culprit in their group must not change."""
    return run(suite, tmp_path_factory.mktemp("alone"), "student_ce", "vanilla_kd")


@pytest.mark.parametrize("culprit, where", [("scales_the_teacher", "in its start (constructor, prepare)"),
                                            ("scales_the_teacher_at_epoch_end", "in its on_epoch_end (epoch 1)")])
def test_a_cell_that_changes_the_teacher_fails_and_the_others_go_on_untouched(alone, suite, tmp_path, culprit, where):
    recs = run(suite, tmp_path, "student_ce", "vanilla_kd", culprit)
    for seed in (0, 1):
        bad = recs.pop((culprit, seed))
        assert bad["status"] == "failed" and bad["error"] == (
            f"IsolationError: {culprit} changed the teacher's weights, which every cell of its group shares, "
            f"{where}; the teacher was restored and the group's other cells go on"), bad["error"]
    assert recs.keys() == alone.keys()
    assert all(r["status"] == "ok" and same_results(r, alone[k]) for k, r in recs.items())


def test_a_change_during_the_steps_fails_every_cell_that_trained_on_it(alone, suite, tmp_path):
    recs = run(suite, tmp_path, "student_ce", "vanilla_kd", "scales_the_teacher_in_a_step")
    for seed in (0, 1):
        for label in ("student_ce", "vanilla_kd", "scales_the_teacher_in_a_step"):
            rec = recs[(label, seed)]
            assert rec["status"] == "failed" and rec["error"].startswith(
                "IsolationError: the teacher's weights changed during epoch 1's steps, in which student_ce, "
                "vanilla_kd, scales_the_teacher_in_a_step trained on them"), rec["error"]
    recs = run(suite, tmp_path / "apart", "student_ce", "vanilla_kd", "scales_the_teacher_in_a_step",
               extra=("--no-lockstep",))
    assert recs.pop(("scales_the_teacher_in_a_step", 0))["status"] == "failed"
    assert all(same_results(recs[k], alone[k]) for k in alone)


def test_a_cell_that_changes_the_data_fails_and_no_other_records_ok(needs_fashion_mnist, suite, tmp_path):
    recs = run(suite, tmp_path, "student_ce", "zeroes_the_images", "vanilla_kd")
    assert recs[("zeroes_the_images", 0)]["error"] == (
        "IsolationError: zeroes_the_images changed the training images, which every cell of its group shares, "
        "in its start (constructor, prepare)")
    not_run = ("IsolationError: not run on the training images, changed by zeroes_the_images in its start "
               "(constructor, prepare); rerunning resumes this cell from its last checkpoint, from before the change")
    assert all(r["status"] == "failed" for r in recs.values()) and len(recs) == 6
    assert [k for k, r in recs.items() if r["error"] == not_run] == [
        k for k in recs if k != ("zeroes_the_images", 0)], {k: r["error"] for k, r in recs.items()}


def test_a_loss_that_is_not_a_scalar_fails_its_cell_alone_on_every_run(alone, suite, tmp_path):
    for _ in range(2):  # the rerun retries the failed cell, and fails it the same way
        recs = run(suite, tmp_path, "student_ce", "vanilla_kd", "vector_loss")
        for seed in (0, 1):
            assert recs.pop(("vector_loss", seed))["error"] == (
                "IsolationError: losses() term 'ce' must be a scalar floating-point tensor, got a tensor of "
                "shape (128,) and dtype torch.float32")
        assert all(same_results(r, alone[k]) for k, r in recs.items())
