"""Plugin discovery: built-ins by file, third-party plugins by entry point, declarations validated."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch.nn.functional as F

from benchmarks import registry
from benchmarks.errors import ConfigError
from benchmarks.method import Method


class ThirdParty(Method):
    name = "third_party_kd"
    paper = "a plugin shipped by another package"
    defaults = {"w": 1.0}

    def losses(self, s, t, y, epoch):
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

    with pytest.raises(TypeError, match="non-empty identifier"):
        registry.register(NoName)
    with pytest.raises(TypeError, match="unknown taps"):
        registry.register(BadTap)


def test_hyperparameter_types_are_checked():
    assert registry.resolve_hyperparameters("vanilla_kd", {"T": 2})["T"] == 2.0
    with pytest.raises(ConfigError, match="must be float"):
        registry.resolve_hyperparameters("vanilla_kd", {"T": "hot"})
