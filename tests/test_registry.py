"""Plugin discovery: built-ins by file, third-party plugins by entry point, declarations validated."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch.nn.functional as F

from kdbench.api import registry
from kdbench.api.errors import ConfigError
from kdbench.api.method import Method
from tests.contract import FMNIST_TASK


class ThirdParty(Method):
    name = "third_party_kd"
    paper = "a plugin shipped by another package"
    defaults = {"w": 1.0}

    def losses(self, s, t, y, progress):
        return {"ce": self.hp["w"] * F.cross_entropy(s.logits, y)}


def test_builtins_are_discovered_from_their_files():
    assert {"student_ce", "vanilla_kd"} <= set(registry.method_names())


def test_entry_point_plugins_are_registered(monkeypatch):
    class FakeEntryPoint:
        name = "third_party_kd"

        def load(self):
            return ThirdParty

    def entry_points(group):
        return [FakeEntryPoint()] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        registry.discover()
        assert registry.get_method("third_party_kd") is ThirdParty
    finally:
        registry.unregister("third_party_kd")


def test_bad_declarations_are_refused():
    class NoName(Method):
        paper = "x"

    class BadTap(Method):
        name = "bad_tap"
        teacher_taps = frozenset({"attention"})

    with pytest.raises(TypeError, match="non-empty ASCII identifier"):
        registry.register(NoName)
    with pytest.raises(TypeError, match="unknown taps"):
        registry.register(BadTap)


def test_hyperparameter_types_are_checked():
    assert registry.resolve_hyperparameters("vanilla_kd", {"T": 2}, FMNIST_TASK)["T"] == 2.0
    with pytest.raises(ConfigError, match="must be float"):
        registry.resolve_hyperparameters("vanilla_kd", {"T": "hot"}, FMNIST_TASK)


def test_domains_are_checked_where_the_plugin_declares_them():
    from kdbench import POSITIVE, Interval, OneOf

    class BadDefault(Method):
        name = "bad_default"
        defaults = {"T": 0.0}
        domains = {"T": POSITIVE}

    class UnknownKey(Method):
        name = "unknown_key"
        defaults = {"T": 1.0}
        domains = {"tau": POSITIVE}

    class NotADomain(Method):
        name = "not_a_domain"
        defaults = {"T": 1.0}
        domains = {"T": (0, None)}

    with pytest.raises(TypeError, match="default T=0.0 is not > 0"):
        registry.register(BadDefault)
    with pytest.raises(TypeError, match="names 'tau', which is not in its defaults"):
        registry.register(UnknownKey)
    with pytest.raises(TypeError, match="is not a kdbench.api.domains.Domain"):
        registry.register(NotADomain)
    assert [Interval(0, 1, open_low=True).contains(v) for v in (0, 1e-9, 1, 1.5, float("nan"), True)] == [
        False, True, True, False, False, False]
    assert str(Interval(0, 1, open_low=True)) == "in (0, 1]" and str(Interval(2)) == "≥ 2"
    assert OneOf("a", "b").contains("a") and not OneOf("a", "b").contains("c")


def test_a_plugin_can_check_what_depends_on_the_task():
    from kdbench.api.method import Task

    assert registry.resolve_hyperparameters("bregman_pca", {"k": 99}, Task(100, (3, 32, 32)))["k"] == 99
    with pytest.raises(ConfigError, match="at most classes − 1 = 9"):
        registry.resolve_hyperparameters("bregman_pca", {"k": 10}, FMNIST_TASK)


def test_training_progress_counts_from_zero_and_gives_the_budget_fraction():
    from kdbench.api.method import TrainingProgress

    assert TrainingProgress(epoch=0, step=0, steps_per_epoch=4, epochs=2).fraction == 0.0
    assert TrainingProgress(epoch=1, step=2, steps_per_epoch=4, epochs=2).fraction == 0.75
