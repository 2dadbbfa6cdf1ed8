"""No suite name, method label or method name can make the harness write outside the results folder:
refused where it is parsed, and refused again where a path is joined."""

from __future__ import annotations

import os
import random

import pytest
import yaml
from kdbench.api.errors import ConfigError
from kdbench.api.method import Method
from kdbench.api.paths import is_plain_name, under
from kdbench.api.registry import register
from kdbench.config.suite import SUITES_DIR, parse_suite
from kdbench.train.cell import checkpoint_path
from kdbench.train.records import record_path

NASTY = ["..", ".", "../x", "../../escaped", "/abs", "/", "a/b", "a\\b", "", "x\x00y", "~", "~/x",
         ".hidden", "-rf", "a" * 101, "é", "a b", "c:", "$HOME", "x/..", "..\\x", "\n"]


def suite_with(**changes) -> dict:
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(changes)
    return raw


def inside(path, root) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


@pytest.mark.parametrize("name", NASTY)
def test_a_nasty_name_is_refused_as_suite_label_method_and_path_part(name, tmp_path):
    with pytest.raises(ConfigError):
        parse_suite(suite_with(name=name))
    with pytest.raises(ConfigError):
        parse_suite(suite_with(methods=[{"method": "vanilla_kd", "label": name}]))
    with pytest.raises(ConfigError):
        parse_suite(suite_with(methods=[name]))
    with pytest.raises(ValueError):
        under(tmp_path, "suite", name)

    class Nasty(Method):
        pass

    Nasty.name = name
    with pytest.raises(TypeError):
        register(Nasty)


def test_every_accepted_name_stays_under_the_results_folder(tmp_path):
    """Random names over an alphabet rich in separators: each is refused at parse, or its record and
    checkpoint paths lie under the results folder."""
    rng = random.Random(0)
    alphabet = "ab./\\-_~:$ \x00é0"
    accepted = 0
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        try:
            suite = parse_suite(suite_with(name=name, methods=[{"method": "vanilla_kd", "label": name}]))
        except ConfigError:
            assert not is_plain_name(name)
            continue
        accepted += 1
        label = suite.methods[0].label
        assert inside(record_path(tmp_path, suite.name, label, 0), tmp_path)
        assert inside(checkpoint_path(tmp_path, suite.name, label, 0), tmp_path)
    assert accepted > 10  # the alphabet does produce plain names too
