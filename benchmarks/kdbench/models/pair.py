"""A suite's student and teacher, built for its data, and the check that each method's taps exist.

Models are named by reference (:mod:`kdbench.models.references`); one that is not from the zoo may
give fewer taps than a method reads. That is found here, when the run is planned, from the networks
themselves: a method that reads a tap its student or teacher cannot give is refused before
anything runs, with the tap named.
"""

from __future__ import annotations

from kdbench.api.errors import ConfigError
from kdbench.api.tapped import TappedModel
from kdbench.config.suite import SuiteConfig
from kdbench.data.datasets import DatasetSpec
from kdbench.models import build_model
from kdbench.models.references import fingerprint

DOCS = 'docs/own-models-and-data.md, "Taps"'


def build_student(suite: SuiteConfig, spec: DatasetSpec) -> TappedModel:
    """The student, which must have a parameter to train (else every cell fails at its first step)."""
    net = build_model(suite.student_model, spec.num_classes, spec.in_channels, spec.image_size,
                      suite.student_taps, suite.folder)
    _check_parameters(net, "student", suite.student_model, trainable=True)
    return net


def build_teacher(suite: SuiteConfig, spec: DatasetSpec) -> TappedModel:
    """The teacher: one trained in the suite needs a trainable parameter, one from a checkpoint a
    parameter at least (a network without any has learnt nothing to distil)."""
    net = build_model(suite.teacher.model, spec.num_classes, spec.in_channels, spec.image_size,
                      suite.teacher.taps, suite.folder)
    _check_parameters(net, "teacher", suite.teacher.model, trainable=not suite.teacher.checkpoint)
    return net


def _check_parameters(net: TappedModel, role: str, ref: str, trainable: bool) -> None:
    if not any(p.requires_grad or not trainable for p in net.parameters()):
        why = "so training cannot change it" if trainable else "for its checkpoint to fill"
        raise ConfigError(f"the {role} {ref} has no {'trainable ' if trainable else ''}parameters, {why}")


def model_identity(model: str, taps: dict | None, suite: SuiteConfig) -> dict:
    """What a config hash adds for a model beyond its name: its declared taps and the fingerprint of
    the user's code; nothing for a zoo, torchvision or timm model without declared taps."""
    out = {}
    if taps:
        out["taps"] = taps
    code = fingerprint(model, suite.folder)
    if code is not None:
        out["code"] = code
    return out


def check_taps(specs: list, suite: SuiteConfig, student: TappedModel, teacher: TappedModel | None) -> None:
    """Refuse the first planned method that reads a tap its student or teacher does not give."""
    for spec in specs:
        s_needs, t_needs = spec.method_cls.taps_needed(spec.hyperparameters)
        pairs = [("student", student, s_needs, suite.student_model)]
        if spec.method_cls.needs_teacher():
            pairs.append(("teacher", teacher, t_needs, suite.teacher.model))
        for role, model, needs, ref in pairs:
            missing = sorted(set(needs) - model.gives)
            if missing:
                taps = " and ".join(repr(m) for m in missing) + (" taps" if len(missing) > 1 else " tap")
                raise ConfigError(
                    f"method {spec.entry.label!r} reads the {role}'s {taps}, which {ref} does not "
                    f"give; declare {'them' if len(missing) > 1 else 'it'} under {role}.taps or leave the "
                    f"method out ({DOCS})"
                )
