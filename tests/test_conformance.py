"""The plugin contract, checked on every registered method automatically (a new plugin is enrolled
by existing). Each check builds a random-weight teacher/student pair on CPU: the Fashion-MNIST zoo
pair, and a torchvision pair whose taps come from the hook adapter."""

from __future__ import annotations

import math

import pytest
import torch
from kdbench.api.method import TAP_NAMES, Method, MethodContext, Task, TeacherData, forward_taps_for
from kdbench.api.registry import get_method, method_names, resolve_hyperparameters
from kdbench.models import build_model
from kdbench.train.teacher import freeze

from tests.contract import at_epoch

#: (teacher, student, input shape) of each pair the contract is checked on
PAIRS = {
    "zoo": ("fmnist_teacher", "fmnist_student", (1, 28, 28)),
    "torchvision": ("torchvision:resnet18", "torchvision:resnet18", (3, 32, 32)),
}
BATCH = 16
EPOCHS = 4


def build(name: str, pair: str, tmp_path, seed: int = 0):
    """Student, frozen teacher and the method, as the runner builds them; prepare() already run."""
    cls = get_method(name)
    teacher_ref, student_ref, shape = PAIRS[pair]
    torch.manual_seed(1234)
    teacher = freeze(build_model(teacher_ref, 10, shape[0], shape[1]))
    torch.manual_seed(seed)
    student = build_model(student_ref, 10, shape[0], shape[1])
    ctx = MethodContext(
        student=student,
        teacher=teacher if cls.needs_teacher() else None,
        student_shapes=student.tap_shapes(shape),
        teacher_shapes=teacher.tap_shapes(shape) if cls.needs_teacher() else None,
        num_classes=10, epochs=EPOCHS, steps_per_epoch=2,
    )
    method = cls(resolve_hyperparameters(name, None, Task(10, shape)), ctx)
    if cls.needs_teacher():
        g = torch.Generator().manual_seed(7)
        method.prepare(TeacherData(
            teacher=teacher, train_images=torch.randn(64, *shape, generator=g),
            train_labels=torch.arange(64) % 10, cache_dir=tmp_path / "offline", seed=0,
            teacher_sha256="0" * 64, test_images=torch.randn(32, *shape, generator=g),
            test_labels=torch.arange(32) % 10,
        ))
    return cls, student, teacher, method


def batch(pair: str, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, *PAIRS[pair][2], generator=g), torch.randint(0, 10, (BATCH,), generator=g)


def losses_at_last_epoch(cls, student, teacher, method, x, y):
    """Losses at the last epoch, after one epoch-end hook (past any warm-up, centres formed)."""
    student.train()
    method.train()
    with torch.no_grad():
        t_taps = forward_taps_for(teacher, x, cls.teacher_taps) if cls.needs_teacher() else None
    method.losses(forward_taps_for(student, x, cls.student_taps), t_taps, y, progress=at_epoch(0))
    method.on_epoch_end(0)
    return method.losses(forward_taps_for(student, x, cls.student_taps), t_taps, y, progress=at_epoch(EPOCHS - 1))


@pytest.fixture(params=method_names())
def name(request):
    return request.param


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    return request.param


def test_declarations(name):
    cls = get_method(name)
    assert issubclass(cls, Method)
    assert cls.name == name
    assert cls.paper, "every plugin cites its paper"
    assert set(cls.student_taps) <= TAP_NAMES and set(cls.teacher_taps) <= TAP_NAMES
    assert isinstance(cls.defaults, dict)


def test_losses_are_named_finite_scalars(name, pair, tmp_path):
    cls, student, teacher, method = build(name, pair, tmp_path)
    terms = losses_at_last_epoch(cls, student, teacher, method, *batch(pair))
    assert isinstance(terms, dict) and terms
    for key, value in terms.items():
        assert isinstance(key, str) and key
        assert value.dim() == 0, f"{key} is not a scalar"
        assert math.isfinite(value.item()), f"{key} = {value.item()}"


def test_gradients_reach_student_and_extras_never_teacher(name, pair, tmp_path):
    cls, student, teacher, method = build(name, pair, tmp_path)
    terms = losses_at_last_epoch(cls, student, teacher, method, *batch(pair))
    sum(terms.values()).backward()
    for pname, p in student.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient in student.{pname}"
        else:  # frozen by the method (an imported layer): counted at inference, never trained
            assert p.grad is None, f"frozen student.{pname} received a gradient"
    assert any(p.grad.abs().sum() > 0 for p in student.parameters() if p.requires_grad)
    for pname, p in method.named_parameters():
        assert p.grad is not None, f"no gradient in extra module {pname}"
    for pname, p in teacher.named_parameters():
        assert p.grad is None and not p.requires_grad, f"teacher.{pname} received a gradient"
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.parameters()}, "teacher parameters in the method"


def test_teacher_stays_in_eval_mode(name, pair, tmp_path):
    cls, student, teacher, method = build(name, pair, tmp_path)
    x, y = batch(pair)
    losses_at_last_epoch(cls, student, teacher, method, x, y)
    method.train()  # a method switching itself to train mode must not drag the teacher along
    assert not teacher.training
    assert all(not m.training for m in teacher.modules())


def test_same_seed_same_loss(name, pair, tmp_path):
    a = build(name, pair, tmp_path / "a")
    b = build(name, pair, tmp_path / "b")
    x, y = batch(pair)
    ta = losses_at_last_epoch(*a, x, y)
    tb = losses_at_last_epoch(*b, x, y)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k}: {ta[k].item()} != {tb[k].item()}"


def test_state_dict_round_trips(name, pair, tmp_path):
    cls, student, teacher, method = build(name, pair, tmp_path)
    x, y = batch(pair)
    losses_at_last_epoch(cls, student, teacher, method, x, y)  # state after an epoch end
    state = method.state_dict()
    teacher_keys = set(teacher.state_dict())
    assert not any(k in teacher_keys or k.startswith("teacher") for k in state), "teacher in state_dict"
    _, student2, _, fresh = build(name, pair, tmp_path / "fresh", seed=99)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    student2.load_state_dict(student.state_dict())  # injected modules travel with the student
