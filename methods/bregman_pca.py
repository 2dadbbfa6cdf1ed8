"""Amid, Anil, Fifty, Warmuth, TMLR 2023, "Layerwise Bregman Representation Learning (of Neural
Networks) with Applications to Knowledge Distillation" (arXiv 2209.07080).

RECONSTRUCTED: the paper states the representation and that the student predicts the teacher's
compression coefficients, which feed an imported frozen layer; no KD code was released, so the fit
(``kdbench.methods._bregman``) and the protocol below are a reconstruction.

Offline, once per teacher, the teacher's logits ŷ on the un-augmented training set are compressed to
k coefficients under the softmax potential (D_F = KL of the softmaxes):

    min_{m, V, c_i} Σ_i KL(softmax(ŷ_i) ‖ softmax(m + V c_i))   s.t.  Vᵀ H_F(m) V = I_k

and (m, V) become the frozen layer ℓ(c) = softmax(m + V c), which replaces the student's class head's
output and stays at inference. On every augmented batch:

    c_T     = argmin_c KL(softmax(ŷ_T) ‖ softmax(m + V c))     damped Newton, warm start Vᵀ H_F(m)(ŷ_T − m)
    L       = λ_c · ½‖ĉ − c_T‖²  +  λ_B · KL(softmax(ŷ_T) ‖ softmax(m + V ĉ))  +  λ_y · CE(y, softmax(m + V ĉ))

Every run records what the code costs the teacher for its k (reconstruction KL on train and test,
the mean-only KL, the teacher's accuracy through ℓ(c_T)). The rule behind the default k, the sweep
that tested it and what is not built: docs/methods.md, ``bregman_pca``. ``k: auto`` applies that
rule to the run's own teacher when it is prepared (training set only), for a dataset whose class
count the default was not chosen for.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdbench import NON_NEGATIVE, AnyOf, Choice, ConfigError, Interval, LogUniform, Method, OneOf, TeacherData, at_least, register
from kdbench.offline_cache import cache_path, load_or_compute, source_sha256
from kdbench.methods import _bregman
from kdbench.methods._bregman import ImportedLayer, fit_bregman_pca, solve_coefficients, transfer, warm_start

SOFTMAX = transfer("softmax")
#: The rule for k: the smallest k whose training-set reconstruction KL is below this share of the
#: mean-only KL (docs/methods.md, "Choice of k").
K_RULE_SHARE = 0.01


@torch.no_grad()
def teacher_logits(teacher, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """ŷ_T on un-augmented images, in eval mode (the teacher is frozen and stays so)."""
    return torch.cat([teacher(images[i : i + batch]) for i in range(0, len(images), batch)])


def teacher_code(layer: ImportedLayer, y_t: torch.Tensor, iters: int) -> torch.Tensor:
    """c_T: damped Newton from the closed-form warm start, as on every training batch."""
    m, V = layer.m, layer.V
    return solve_coefficients(SOFTMAX, m, V, y_t, c0=warm_start(SOFTMAX, m, V, y_t), iters=iters)


@register
class BregmanPCA(Method):
    name = "bregman_pca"
    paper = (
        "Amid, Anil, Fifty, Warmuth, TMLR 2023, Layerwise Bregman Representation Learning (of Neural "
        "Networks) with Applications to Knowledge Distillation (arXiv 2209.07080)"
    )
    reconstructed = True
    defaults = {
        "k": 4, "lambda_c": 1.0, "lambda_B": 0.0, "lambda_y": 1.0,
        "fit_iters": 30, "fit_newton_iters": 5, "newton_iters": 5,
    }
    domains = {
        "k": AnyOf(at_least(1), OneOf("auto")), "lambda_c": NON_NEGATIVE, "lambda_B": NON_NEGATIVE, "lambda_y": NON_NEGATIVE,
        "fit_iters": Interval(1, 1_000), "fit_newton_iters": Interval(1, 100), "newton_iters": Interval(1, 100),
    }  # the counts bounded far above any use, so a typo (fit_iters: 10**9) is refused before it loops
    search_space = {"k": Choice(2, 4, 6, 8), "lambda_c": LogUniform(0.1, 10), "lambda_y": LogUniform(0.1, 10)}
    student_taps = frozenset({"pooled", "logits"})
    teacher_taps = frozenset({"logits"})

    @classmethod
    def check_hyperparameters(cls, hp, task) -> None:
        """Softmax is flat along the all-ones direction: at most classes − 1 directions carry information."""
        if hp["k"] != "auto" and hp["k"] > task.num_classes - 1:
            raise ConfigError(
                f"bregman_pca: k must be at most classes − 1 = {task.num_classes - 1} for softmax, got {hp['k']}"
            )

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.layer: tuple[ImportedLayer, ...] = ()  # a plain tuple: the layer belongs to the student
        self.facts: dict = {}
        self._train_logits: torch.Tensor | None = None
        if self.hp["k"] != "auto":  # else once prepare() has chosen k
            self._build_head(self.hp["k"])

    def _build_head(self, k: int) -> None:
        """The student's class head becomes ĉ(x); the imported layer after it maps ĉ to m + V ĉ."""
        student, d = self.ctx.student, self.ctx.num_classes
        device = next(student.parameters()).device
        student.classifier = torch.nn.Linear(student.classifier.in_features, k).to(device)
        layer = ImportedLayer(SOFTMAX, torch.zeros(d), torch.zeros(d, k)).to(device)
        student.inject("logits", layer)
        self.layer = (layer,)

    @property
    def imported(self) -> ImportedLayer:
        return self.layer[0]

    # -- offline fit -------------------------------------------------------------------------------

    def cache_path(self, data: TeacherData, k: int) -> Path:
        """Teacher sha256 and k in the clear; every other input (the fit's code included) digested."""
        inputs = {
            "code": source_sha256(_bregman), "n_images": len(data.train_images), "seed": data.seed,
            "fit_iters": self.hp["fit_iters"], "fit_newton_iters": self.hp["fit_newton_iters"],
            "newton_iters": self.hp["newton_iters"],
            "n_test": None if data.test_images is None else len(data.test_images),
        }
        return cache_path(data.cache_dir, f"bregman_pca-k{k}", data.teacher_sha256, inputs)

    def fitted(self, data: TeacherData, k: int) -> tuple[dict, bool]:
        """The fit for ``k``, from the cache or computed now; and whether it was cached."""
        return load_or_compute(self.cache_path(data, k), lambda: self.fit(data, k))

    def choose_k(self, data: TeacherData) -> tuple[int, dict[int, float]]:
        """The smallest k whose training reconstruction KL is below K_RULE_SHARE of the mean-only KL,
        by doubling, then bisection (the KL falls as k grows); and the KL of each k tried."""
        tried: dict[int, float] = {}

        def passes(k: int) -> bool:
            fit, _ = self.fitted(data, k)
            tried[k] = float(fit["train_kl"])
            return tried[k] < K_RULE_SHARE * float(fit["history"][0])

        top, lo, hi = self.ctx.num_classes - 1, 0, 1
        while not passes(hi):
            if hi == top:
                return top, tried  # no k passes: the largest there is
            lo, hi = hi, min(2 * hi, top)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if passes(mid) else (mid, hi)
        return hi, tried

    def train_logits(self, data: TeacherData) -> torch.Tensor:
        """ŷ_T on the training images, computed once while preparing (k: auto fits several k)."""
        if self._train_logits is None:
            self._train_logits = teacher_logits(data.teacher, data.train_images)
        return self._train_logits

    def fit(self, data: TeacherData, k: int) -> dict:
        t0 = time.perf_counter()
        y_train = self.train_logits(data)
        fit = fit_bregman_pca(SOFTMAX, y_train.cpu(), k, iters=self.hp["fit_iters"],
                              newton_iters=self.hp["fit_newton_iters"], seed=data.seed)
        out = {"m": fit.m.float(), "V": fit.V.float(), "history": torch.tensor(fit.history),
               "fit_s": torch.tensor(time.perf_counter() - t0, dtype=torch.float64)}
        layer = ImportedLayer(SOFTMAX, out["m"], out["V"])
        out["train_kl"] = self._mean_kl(layer, y_train.cpu())
        if data.test_images is not None:
            y_test = teacher_logits(data.teacher, data.test_images).cpu()
            c_t = teacher_code(layer, y_test, self.hp["newton_iters"])
            labels = data.test_labels.cpu()
            out["test_kl"] = self._mean_kl(layer, y_test, c_t)
            out["test_mean_only_kl"] = SOFTMAX.divergence(layer.m.expand_as(y_test), y_test).mean()
            out["teacher_acc_through_layer"] = 100.0 * (layer(c_t).argmax(1) == labels).double().mean()
            out["teacher_acc"] = 100.0 * (y_test.argmax(1) == labels).double().mean()
        return out

    def _mean_kl(self, layer, y_t, c_t=None) -> torch.Tensor:
        """Mean KL(softmax(ŷ_T) ‖ ℓ(c_T)) with c_T found as on a training batch."""
        if c_t is None:
            c_t = teacher_code(layer, y_t, self.hp["newton_iters"])
        return SOFTMAX.divergence(layer(c_t), y_t).mean()

    def prepare(self, data: TeacherData) -> dict:
        t0 = time.perf_counter()
        k, tried = (self.hp["k"], None) if self.hp["k"] != "auto" else self.choose_k(data)
        if not self.layer:
            self._build_head(k)
        path = self.cache_path(data, k)
        fitted, hit = self.fitted(data, k)
        self._train_logits = None  # not kept through training
        with torch.no_grad():
            self.imported.m.copy_(fitted["m"])
            self.imported.V.copy_(fitted["V"])
        history = fitted["history"].tolist()
        self.facts = {
            "k": k,
            **({"k_rule": {"share_of_mean_only_kl": K_RULE_SHARE, "train_kl_by_k": tried}} if tried else {}),
            "fit_s": float(fitted["fit_s"]),
            "offline_s": time.perf_counter() - t0,
            "cache_hit": hit,
            "cache_file": path.name,
            "fit_history_kl": history,
            "teacher_mean_only_kl_train": history[0],
            "teacher_recon_kl_train": float(fitted["train_kl"]),
        }
        for key in ("test_kl", "test_mean_only_kl", "teacher_acc_through_layer", "teacher_acc"):
            if key in fitted:
                name = {"test_kl": "teacher_recon_kl_test", "test_mean_only_kl": "teacher_mean_only_kl_test"}
                self.facts[name.get(key, key)] = float(fitted[key])
        return self.facts

    # -- training ----------------------------------------------------------------------------------

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        hp = self.hp
        c_hat = self.ctx.student.classifier(s.pooled)   # the student's k coefficients
        c_t = teacher_code(self.imported, t.logits, hp["newton_iters"])
        terms = {
            "coef": hp["lambda_c"] * 0.5 * (c_hat - c_t).square().sum(dim=1).mean(),
            "ce": hp["lambda_y"] * F.cross_entropy(s.logits, y),  # s.logits = m + V ĉ
        }
        if hp["lambda_B"] > 0:
            terms["bregman"] = hp["lambda_B"] * SOFTMAX.divergence(s.logits, t.logits).mean()
        return terms

    def record_extras(self) -> dict:
        return {"imported_layer": {"d": self.imported.V.shape[0], "k": self.imported.V.shape[1]},
                "teacher_code": {k: v for k, v in self.facts.items() if k.startswith("teacher")}}
