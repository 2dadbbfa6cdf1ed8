"""kd_layer (letKD): the layer against explicit dot products, the teachers' targets (rows sum to one,
same seed same targets), the offline cache (hit, invalidation), placements on the Fashion-MNIST and
CIFAR pairs, the inference parameter count, and the contract checks for the non-default variant."""

from __future__ import annotations

import math

import pytest
import torch
from kdbench.api.errors import ConfigError
from kdbench.api.method import MethodContext, TeacherData
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.methods._letkd_targets import at_student_locations, decision_target, quantisation_target
from kdbench.methods.kd_layer import SUBCLASSES, KDLayer, cosine_conv, placement
from kdbench.models import build_model
from kdbench.train.cost import parameter_counts
from kdbench.train.teacher import freeze

from tests.contract import FMNIST_TASK, at_epoch

KDL = get_method("kd_layer")
FMNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def make(teacher_model, student_model, classes, input_shape, **hp):
    torch.manual_seed(1234)
    teacher = freeze(build_model(teacher_model, classes, input_shape[0]))
    torch.manual_seed(0)
    student = build_model(student_model, classes, input_shape[0])
    ctx = MethodContext(
        student=student, teacher=teacher,
        student_shapes=student.tap_shapes(input_shape), teacher_shapes=teacher.tap_shapes(input_shape),
        num_classes=classes, epochs=2, steps_per_epoch=1,
    )
    return student, teacher, KDL(resolve_hyperparameters("kd_layer", hp, FMNIST_TASK), ctx)


def teacher_data(teacher, cache_dir, sha="0" * 64, seed=0) -> TeacherData:
    g = torch.Generator().manual_seed(7)
    return TeacherData(
        teacher=teacher, train_images=torch.randn(64, *FMNIST, generator=g),
        train_labels=torch.arange(64) % 10, cache_dir=cache_dir, seed=seed, teacher_sha256=sha,
    )


def prepared(tmp_path, **hp):
    student, teacher, method = make("fmnist_teacher", "fmnist_student", 10, FMNIST, **hp)
    method.prepare(teacher_data(teacher, tmp_path))
    return student, teacher, method


def batch(seed=3, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *FMNIST, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- the layer --------------------------------------------------------------------------------------


def test_cosine_conv_is_scaled_cosine_of_each_location_with_each_template():
    x = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]], [[2.0, 0.0], [-1.0, 1.0]], [[0.0, 1.0], [2.0, -1.0]]]])
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 1.0, 0.5], [0.0, 3.0, -4.0]])
    out = cosine_conv(x, w, torch.tensor(2.5))
    assert out.shape == (1, 4, 2, 2)
    for k in range(4):
        for i in range(2):
            for j in range(2):
                xi = [x[0, c, i, j].item() for c in range(3)]
                wk = w[k].tolist()
                dot = sum(a * b for a, b in zip(xi, wk))
                norms = math.sqrt(sum(a * a for a in xi)) * math.sqrt(sum(b * b for b in wk))
                # abs: where the dot product is exactly 0, float32 kernels leave rounding of ~1e-8
                assert out[0, k, i, j].item() == pytest.approx(2.5 * dot / norms, rel=1e-5, abs=1e-6)


def test_layer_adds_alpha_times_normalised_semantic_vectors():
    torch.manual_seed(0)
    layer = KDLayer(channels=3, templates=4, alpha=0.5).eval()  # BN at its initial running stats
    x = torch.randn(2, 3, 2, 2)
    out = layer(x)
    assert out.shape == x.shape and layer.last_scores.shape == (2, 4, 2, 2)
    assert layer.gamma_s.item() == 3.0 and layer.gamma_v.item() == 1.0
    w_hat = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in layer.values.tolist()]
    for b in range(2):
        for i in range(2):
            for j in range(2):
                s = [layer.last_scores[b, k, i, j].item() / math.sqrt(1 + layer.bn.eps) for k in range(4)]
                r = [max(a, 0.0) for a in s]  # ReLU(BN(s)) at BN's initial running statistics
                r_norm = math.sqrt(sum(a * a for a in r))
                for c in range(3):
                    v = sum(w_hat[c][k] * r[k] for k in range(4)) / r_norm if r_norm > 0 else 0.0
                    assert out[b, c, i, j].item() == pytest.approx(x[b, c, i, j].item() + 0.5 * v, abs=1e-5)


def test_template_init_has_variance_two_over_fan_in():
    torch.manual_seed(0)
    layer = KDLayer(channels=200, templates=300, alpha=1.0)
    assert layer.templates.var().item() == pytest.approx(2 / 200, rel=0.05)
    assert layer.values.var().item() == pytest.approx(2 / 300, rel=0.05)


# -- the teachers' targets --------------------------------------------------------------------------


def test_target_rows_sum_to_one_in_both_variants(tmp_path):
    _, teacher, method = prepared(tmp_path, variant="letkd2")
    x, y = batch()
    t = teacher.forward_taps(x)
    penult, inter = method.sites
    p = quantisation_target(at_student_locations(t.prepool, penult.size), method.centres)
    assert p.shape == (8 * 49, method.hp["K"])
    assert torch.allclose(p.sum(dim=1), torch.ones(len(p)))
    assert torch.allclose(method.decisions.sum(dim=1), torch.ones(10 * SUBCLASSES))
    f = at_student_locations(t.stages[1], inter.size)
    rows = decision_target(f, y.repeat_interleave(49), dict(method.named_buffers()), SUBCLASSES)
    assert rows.shape == (8 * 49, 10 * SUBCLASSES)
    assert torch.allclose(rows.sum(dim=1), torch.ones(len(rows)))


def test_offline_targets_are_identical_for_the_same_seed(tmp_path):
    _, teacher, method = make("fmnist_teacher", "fmnist_student", 10, FMNIST, variant="letkd2")
    a = method.compute_targets(teacher_data(teacher, tmp_path))
    b = method.compute_targets(teacher_data(teacher, tmp_path))
    c = method.compute_targets(teacher_data(teacher, tmp_path, seed=1))
    for key in a.keys() - {"compute_s"}:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["centres"], c["centres"])


def test_fit_subsample_is_capped_by_fit_vectors(tmp_path):
    _, teacher, method = make("fmnist_teacher", "fmnist_student", 10, FMNIST, fit_vectors=1000)
    record = method.prepare(teacher_data(teacher, tmp_path))
    assert record["fit_vectors"] == {"penult": 1000}


def test_cache_is_reused_and_invalidated_by_the_teacher_hash(tmp_path, monkeypatch):
    _, teacher, method = make("fmnist_teacher", "fmnist_student", 10, FMNIST)
    first = method.prepare(teacher_data(teacher, tmp_path))
    path = tmp_path / first["cache_file"]
    assert not first["cache_hit"] and path.exists() and ("0" * 64) in path.name
    mtime, centres = path.stat().st_mtime_ns, method.centres.clone()

    def no_recompute(data):
        raise AssertionError("recomputed despite a cached file")

    monkeypatch.setattr(method, "compute_targets", no_recompute)
    second = method.prepare(teacher_data(teacher, tmp_path))
    assert second["cache_hit"] and path.stat().st_mtime_ns == mtime
    assert torch.equal(method.centres, centres)
    monkeypatch.undo()
    third = method.prepare(teacher_data(teacher, tmp_path, sha="1" * 64))
    assert not third["cache_hit"] and third["cache_file"] != first["cache_file"]


# -- placements and cost ----------------------------------------------------------------------------


@pytest.mark.parametrize("teacher_model, student_model, classes, input_shape, expected", [
    ("fmnist_teacher", "fmnist_student", 10, FMNIST, ("stage1", "stage1")),
    ("wrn_40_2", "wrn_16_2", 100, CIFAR, ("stage2.block0", "stage2.block0")),
    ("resnet32x4", "resnet8x4", 100, CIFAR, ("stage1", "stage1")),
    ("resnet56", "resnet20", 100, CIFAR, ("stage2.block0", "stage2.block0")),
    ("vgg13", "vgg8", 100, CIFAR, ("stage3", "stage3")),
    ("resnet32x4", "vgg8", 100, CIFAR, ("stage3", "stage1")),  # 8x8 and 16x16 teacher maps → 4x4
])
def test_placements_run_on_the_pairs(teacher_model, student_model, classes, input_shape, expected):
    student, teacher, method = make(
        teacher_model, student_model, classes, input_shape, variant="letkd2", K=16
    )
    s_shapes = student.tap_shapes(input_shape)
    assert placement(s_shapes, teacher.tap_shapes(input_shape)) == expected
    assert [s.student_point for s in method.sites] == ["prepool", expected[0]]
    assert method.sites[0].size == s_shapes.prepool[1:]
    x, y = torch.randn(2, *input_shape), torch.tensor([0, 1])
    s = student.forward_taps(x)  # after the dry runs above: last_scores are this batch's
    with torch.no_grad():
        t = teacher.forward_taps(x)
    for site, layer in zip(method.sites, method.layers):
        assert layer.last_scores.shape == (2, site.templates, *site.size)
    terms = method.losses(s, t, y, progress=at_epoch(0))
    assert set(terms) == {"ce", "kd_penult", "kd_inter"}
    assert all(torch.isfinite(v) for v in terms.values())


def test_inference_parameters_are_student_plus_layers():
    student, _, method = make("fmnist_teacher", "fmnist_student", 10, FMNIST, variant="letkd2")
    base = sum(p.numel() for name, p in student.named_parameters() if not name.startswith("injections"))
    layers = [sum(p.numel() for p in layer.parameters()) for layer in method.layers]
    k, c = method.hp["K"], student.tap_shapes(FMNIST).prepool[0]
    assert layers[0] == 2 * k * c + 2 * k + 2  # templates, W_v, BN weight and bias, γ_s, γ_v
    counts = parameter_counts(student, method, method.eval_model(student))
    assert counts == {"student": base, "extra_trainable": sum(layers), "inference": base + sum(layers)}
    assert not list(method.parameters()), "the layers belong to the student, not the method"


# -- the contract, for the variant the conformance suite does not build -----------------------------


@pytest.mark.parametrize("variant", ["letkd1", "letkd2"])
def test_both_variants_train_and_repeat(tmp_path, variant):
    runs = []
    for sub in ("a", "b"):
        student, teacher, method = prepared(tmp_path / sub, variant=variant)
        x, y = batch()
        with torch.no_grad():
            t = teacher.forward_taps(x)
        terms = method.losses(student.forward_taps(x), t, y, progress=at_epoch(0))
        sum(terms.values()).backward()
        for name, p in student.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        runs.append(terms)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("bad", [{"variant": "letkd3"}, {"K": 1}, {"kmeans_iters": 0}, {"alpha": -1.0}])
def test_bad_hyperparameters_are_config_errors(bad):
    with pytest.raises(ConfigError):
        resolve_hyperparameters("kd_layer", bad, FMNIST_TASK)
