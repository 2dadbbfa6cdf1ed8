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


# ---------------------------------------------------------------------------------- search spaces


def test_every_builtin_with_hyperparameters_declares_a_space_inside_its_domains():
    from kdbench.api.search import Space

    for name in registry.method_names():
        cls = registry.get_method(name)
        if not cls.__module__.startswith("kdbench.methods."):
            continue
        assert bool(cls.search_space) == bool(cls.defaults), name
        for key, space in cls.search_space.items():
            assert isinstance(space, Space) and key in cls.defaults, (name, key)
            for u in (0.0, 0.3, 0.999999):
                value = space.scale(u)
                registry.resolve_hyperparameters(name, {key: value}, FMNIST_TASK)  # inside, and typed


def _space_plugin(space, defaults=None, domains=None):
    from kdbench.api.domains import POSITIVE

    return type("Spaced", (ThirdParty,), {"name": "spaced_kd", "defaults": defaults or {"w": 1.0, "n": 4},
                                          "domains": domains or {"w": POSITIVE}, "search_space": space})


@pytest.mark.parametrize("space, why", [
    ({"v": "LogUniform(1, 2)"}, "tunes 'v', which the method does not have"),
    ({"w": (0.1, 1.0)}, "is (0.1, 1.0), not a distribution"),
    ({"w": "log-uniform"}, "not a distribution"),
    ({"w": "LU"}, "not a distribution"),
    ({"w": ("LogUniform", 0, 1)}, "needs low > 0"),
    ({"w": ("Uniform", 0, 1)}, "leaves the domain: 0 is not > 0"),
    ({"w": ("Uniform", 2, 1)}, "needs finite numbers low < high"),
    ({"w": ("Choice",)}, "needs at least one option"),
    ({"w": ("Choice", 1.0, "big")}, "gives 'big', not a float"),
    ({"n": ("Choice", 2, 4.5)}, "gives 4.5, not a int"),
])
def test_register_refuses_a_bad_space_in_one_line(space, why):
    from kdbench.api import search

    built = {k: getattr(search, v[0])(*v[1:]) if isinstance(v, tuple) and v and isinstance(v[0], str)
             and hasattr(search, v[0]) else v for k, v in space.items()}
    with pytest.raises(ConfigError, match=why.replace("(", r"\(").replace(")", r"\)")) as info:
        registry.register(_space_plugin(built))
    assert "\n" not in str(info.value) and "spaced_kd" not in registry._METHODS


def test_spaces_scale_into_their_range_with_four_significant_digits():
    from kdbench.api.search import Choice, IntRange, LogUniform, Uniform

    assert LogUniform(1, 8).scale(0.0) == 1.0 and LogUniform(1, 8).scale(0.5) == 2.828
    assert Uniform(0.1, 1).scale(0.999999) == 1.0 and Uniform(0, 0.2).scale(1 / 3) == 0.06667
    assert [IntRange(1, 3).scale(u) for u in (0.0, 0.34, 0.67, 0.999)] == [1, 2, 3, 3]
    assert [Choice(32, 64, 128).scale(u) for u in (0.0, 0.5, 0.99)] == [32, 64, 128]
    assert str(LogUniform(0.004, 0.4)) == "log-uniform [0.004, 0.4]" and str(Choice(0.1, 1.0)) == "one of 0.1, 1"
