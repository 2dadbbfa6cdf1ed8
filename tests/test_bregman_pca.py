"""bregman_pca (reconstructed): the imported layer in the student, the cached fit, the recorded
teacher facts and each loss term, checked against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdbench.api.errors import ConfigError
from kdbench.api.method import MethodContext, TeacherData, forward_taps_for
from kdbench.api.registry import get_method, resolve_hyperparameters
from kdbench.config.suite import OptimizerConfig
from kdbench.models import build_model
from kdbench.train.cost import parameter_counts
from kdbench.train.loop import make_cell
from kdbench.train.teacher import freeze

from tests.contract import FMNIST_TASK, at_epoch

SHAPE = (1, 28, 28)


def build(tmp_path, **overrides):
    torch.manual_seed(0)
    teacher = freeze(build_model("fmnist_teacher", 10, 1))
    student = build_model("fmnist_student", 10, 1)
    ctx = MethodContext(student=student, teacher=teacher, student_shapes=student.tap_shapes(SHAPE),
                        teacher_shapes=teacher.tap_shapes(SHAPE), num_classes=10, epochs=2,
                        steps_per_epoch=1)
    cls = get_method("bregman_pca")
    method = cls(resolve_hyperparameters("bregman_pca", overrides, FMNIST_TASK), ctx)
    g = torch.Generator().manual_seed(5)
    data = TeacherData(
        teacher=teacher, train_images=torch.randn(300, *SHAPE, generator=g),
        train_labels=torch.arange(300) % 10, cache_dir=tmp_path, seed=0, teacher_sha256="ab" * 32,
        test_images=torch.randn(100, *SHAPE, generator=g), test_labels=torch.arange(100) % 10,
    )
    facts = method.prepare(data)
    return cls, student, teacher, method, data, facts


def hessian(m):
    q = torch.softmax(m.double(), 0)
    return torch.diag(q) - torch.outer(q, q)


def test_student_head_becomes_k_coefficients_feeding_a_frozen_layer(tmp_path):
    cls, student, teacher, method, data, _ = build(tmp_path, k=4)
    assert student.classifier.out_features == 4
    layer = student.injections["logits"]
    assert not layer.m.requires_grad and not layer.V.requires_grad
    V = layer.V.double()
    torch.testing.assert_close(V.T @ hessian(layer.m) @ V, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    x = torch.randn(3, *SHAPE)
    s = student.forward_taps(x)
    torch.testing.assert_close(s.logits, layer.m + student.classifier(s.pooled) @ layer.V.T)
    # frozen: counted at inference, not trained, not in the optimizer
    counts = parameter_counts(student, method, method.eval_model(student))
    assert counts["inference"] == counts["student"] + 10 + 10 * 4
    assert counts["extra_trainable"] == 0
    cell = make_cell(student, method, OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4))
    in_optimizer = {id(p) for group in cell.optimizer.param_groups for p in group["params"]}
    assert id(layer.m) not in in_optimizer and id(layer.V) not in in_optimizer
    assert id(student.classifier.weight) in in_optimizer


def test_loss_terms_match_independent_computations(tmp_path):
    cls, student, teacher, method, _, _ = build(tmp_path, k=6, lambda_B=0.5, lambda_c=2.0)
    layer = student.injections["logits"]
    x, y = torch.randn(8, *SHAPE), torch.arange(8) % 10
    with torch.no_grad():
        t = forward_taps_for(teacher, x, cls.teacher_taps)
    s = forward_taps_for(student, x, cls.student_taps)
    terms = method.losses(s, t, y, progress=at_epoch(0))
    assert set(terms) == {"coef", "ce", "bregman"}
    c_hat = student.classifier(s.pooled)
    z = layer.m + c_hat @ layer.V.T
    torch.testing.assert_close(terms["ce"], F.cross_entropy(z, y))
    kl = F.kl_div(F.log_softmax(z, 1), F.log_softmax(t.logits, 1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(terms["bregman"], 0.5 * kl)
    # c_T, recovered from the coefficient term, is a stationary point of c ↦ KL(softmax(ŷ_T) ‖ softmax(m + Vc))
    c_t = method_code(method, t.logits)
    torch.testing.assert_close(terms["coef"], 2.0 * 0.5 * (c_hat - c_t).square().sum(1).mean())
    V, m = layer.V.double(), layer.m.double()
    grad = (torch.softmax(m + c_t.double() @ V.T, 1) - torch.softmax(t.logits.double(), 1)) @ V
    assert grad.abs().max() < 1e-4
    # and no better than that: random perturbations of c_T only raise the divergence
    def kl_at(c):
        return F.kl_div(F.log_softmax(m + c @ V.T, 1), F.log_softmax(t.logits.double(), 1),
                        log_target=True, reduction="none").sum(1)
    base = kl_at(c_t.double())
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert (kl_at(c_t.double() + 1e-2 * torch.randn(c_t.shape, generator=g, dtype=torch.float64))
                >= base - 1e-9).all()


def test_k_auto_is_the_smallest_k_the_training_set_rule_passes(tmp_path):
    from kdbench.methods._bregman import ImportedLayer, fit_bregman_pca
    from kdbench.methods.bregman_pca import SOFTMAX, teacher_code, teacher_logits

    cls, student, teacher, method, data, facts = build(tmp_path / "a", k="auto")
    y = teacher_logits(teacher, data.train_images)
    passing = []
    for k in range(1, 10):  # every k, from scratch: no doubling, no bisection
        fit = fit_bregman_pca(SOFTMAX, y, k, seed=0)
        layer = ImportedLayer(SOFTMAX, fit.m.float(), fit.V.float())
        kl = SOFTMAX.divergence(layer(teacher_code(layer, y, 5)), y).mean()
        mean_only = SOFTMAX.divergence(layer.m.expand_as(y), y).mean()
        passing.append(bool(kl < 0.01 * mean_only))
    want = passing.index(True) + 1
    assert facts["k"] == want and student.classifier.out_features == want
    assert method.record_extras()["imported_layer"]["k"] == want and method.hp["k"] == "auto"
    assert set(facts["k_rule"]["train_kl_by_k"]) >= {want}
    # the test split plays no part in the choice
    other = TeacherData(**{**data.__dict__, "cache_dir": tmp_path / "b", "test_images": torch.zeros_like(data.test_images)})
    torch.manual_seed(0)
    again = build_model("fmnist_student", 10, 1)
    ctx = MethodContext(again, teacher, again.tap_shapes(SHAPE), teacher.tap_shapes(SHAPE), 10, 2, 1)
    assert cls(method.hp, ctx).prepare(other)["k"] == want


def method_code(method, logits):
    from kdbench.methods.bregman_pca import teacher_code
    return teacher_code(method.imported, logits, method.hp["newton_iters"])


def test_recorded_teacher_facts_and_cache(tmp_path):
    cls, student, teacher, method, data, facts = build(tmp_path, k=2)
    assert not facts["cache_hit"]
    assert facts["cache_file"].startswith("bregman_pca-k2-" + "ab" * 32)
    hist = facts["fit_history_kl"]
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:]))
    assert facts["teacher_recon_kl_train"] <= facts["teacher_mean_only_kl_train"]
    assert facts["teacher_recon_kl_test"] <= facts["teacher_mean_only_kl_test"] + 1e-6
    layer = student.injections["logits"]
    with torch.no_grad():
        y_test = teacher(data.test_images)
    c_t = method_code(method, y_test)
    acc = 100.0 * ((layer.m + c_t @ layer.V.T).argmax(1) == data.test_labels).double().mean()
    assert facts["teacher_acc_through_layer"] == pytest.approx(float(acc))
    assert facts["teacher_acc"] == pytest.approx(float(100.0 * (y_test.argmax(1) == data.test_labels).double().mean()))
    kl = F.kl_div(F.log_softmax(layer.m + c_t @ layer.V.T, 1), F.log_softmax(y_test, 1), log_target=True,
                  reduction="batchmean")
    assert facts["teacher_recon_kl_test"] == pytest.approx(float(kl), rel=1e-4)
    # a second run reads the cached fit: same layer, no refit
    _, student2, _, method2, _, facts2 = build(tmp_path, k=2)
    assert facts2["cache_hit"] and facts2["teacher_recon_kl_test"] == facts["teacher_recon_kl_test"]
    assert torch.equal(student2.injections["logits"].V, layer.V)
    # another k is another fit
    *_, facts4 = build(tmp_path, k=4)
    assert not facts4["cache_hit"] and facts4["teacher_recon_kl_train"] < facts["teacher_recon_kl_train"]
    assert method.record_extras()["imported_layer"] == {"d": 10, "k": 2}


@pytest.mark.parametrize("overrides", [{"k": 0}, {"lambda_c": -1.0}, {"newton_iters": 0}])
def test_bad_hyperparameters_are_config_errors(overrides):
    with pytest.raises(ConfigError):
        resolve_hyperparameters("bregman_pca", overrides, FMNIST_TASK)


def test_k_above_classes_minus_one_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at most classes − 1 = 9"):
        build(tmp_path, k=10)


def test_sweep_suite_and_table():
    from kdbench.bench.bregman_sweep import sweep_suite, table
    suite = sweep_suite("smoke", [2, 4])
    assert suite.name == "smoke-bregman-k"
    assert [(e.label, e.overrides) for e in suite.methods] == [
        ("student_ce", {}), ("bregman_pca_k2", {"k": 2}), ("bregman_pca_k4", {"k": 4})]
    prep = {"teacher_recon_kl_train": 0.5, "teacher_recon_kl_test": 0.25, "teacher_mean_only_kl_test": 2.0,
            "teacher_acc_through_layer": 88.5}
    records = [
        {"label": "bregman_pca_k2", "seed": 1, "final_acc": 82.0, "prepare": prep, "teacher_acc": 90.0},
        {"label": "bregman_pca_k2", "seed": 0, "final_acc": 80.0, "prepare": prep, "teacher_acc": 90.0},
        {"label": "student_ce", "seed": 0, "final_acc": 79.0, "teacher_acc": None},
        {"label": "bregman_pca_k4", "seed": 0, "final_acc": None, "prepare": {}, "teacher_acc": 90.0},  # diverged
    ]
    text = table(records, [2, 4])
    assert "| 2 | 0.5000 | 0.2500 | 2.0000 | 88.50 | 81.00 ± 1.41 | 2 |" in text
    assert "| 4 | nan | nan | nan | nan | – | 0 |" in text
    assert "| student_ce | | | | | 79.00 | 1 |" in text
    assert "teacher test accuracy (full logits): 90.00%" in text
