"""Gorgun, Gurbuz, Alatan, BMVC 2023, "Knowledge Distillation Layer that Lets the Student Decide"
(arXiv 2309.02843; the authors call it letKD; released code: github.com/adagorgun/letKD-framework).

The first method here that changes the student itself: a KD layer sits inside the student's forward
pass, is supervised by the teacher during training, and stays at inference (it is injected with
``TappedModel.inject``, so it is trained, saved and counted as the student's own parameters).

The KD layer, on x (B×C×H×W), with K templates w_k and K→C semantic vectors W_v:

    s_k(i) = γ_s · ⟨x_i/‖x_i‖, w_k/‖w_k‖⟩         cosine 1×1 conv, γ_s init 3.0, no bias   [paper][code]
    r      = ReLU(BN_K(s))                                                "soft maximiser"   [paper]
    v(i)   = γ_v · Ŵ_v r̂(i),  r̂ = r/‖r‖ per location, rows of Ŵ_v unit, γ_v init 1.0, no bias [paper]
    x̂      = x + α · v,  α = 1                                        fed forward        [paper]
    L_KD   = mean over the B·H·W locations of KL(p_T(i) ‖ softmax_k s(i))                 [paper][code]
    L      = CE(z_s, y) + 1·L_penult (+ 1·L_inter for letKD-2), no soft-label KD term     [paper]

Placements: letKD-1 puts one layer on the pre-pool map, its targets p_T soft assignments of the
teacher's pre-pool vectors to K k-means centres; letKD-2 adds a layer after the first block of the
last stage (or the previous stage's output when that stage is a single block), supervised by the
teacher's sub-class decisions. The targets are computed once per teacher from the un-augmented
training set and cached beside it (``kdbench.methods._letkd_targets``). Initialisation, the
placement rule, the defaults and why letKD-1 is the default: docs/methods.md, ``kd_layer``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdbench import NON_NEGATIVE, Choice, Interval, LogUniform, Method, OneOf, TapShapes, TeacherData, Uniform, register
from kdbench.offline_cache import cache_path, load_or_compute, source_sha256
from kdbench.methods import _letkd_targets
from kdbench.methods._letkd_targets import (
    at_student_locations, decision_target, kmeans, quantisation_target, sample_locations, tap_at,
    teacher_decisions,
)

VARIANTS = ("letkd1", "letkd2")
SUBCLASSES = 8  # letKD-2: sub-classes per class, K_inter = 8 × classes [paper]


def cosine_conv(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """scale · ⟨x_i/‖x_i‖, w_k/‖w_k‖⟩ at every location: a 1×1 conv of unit vectors (weight: out×in)."""
    return scale * F.conv2d(F.normalize(x, dim=1), F.normalize(weight, dim=1)[:, :, None, None])


class KDLayer(nn.Module):
    """Template matching → BN → ReLU → semantic vectors, added back to the input; keeps its last
    template scores in ``last_scores`` for the loss (the scores of the forward pass just run)."""

    def __init__(self, channels: int, templates: int, alpha: float) -> None:
        super().__init__()
        self.templates = nn.Parameter(torch.randn(templates, channels) * math.sqrt(2.0 / channels))
        self.gamma_s = nn.Parameter(torch.tensor(3.0))
        self.bn = nn.BatchNorm2d(templates)
        self.values = nn.Parameter(torch.randn(channels, templates) * math.sqrt(2.0 / templates))
        self.gamma_v = nn.Parameter(torch.tensor(1.0))
        self.alpha = alpha
        self.last_scores: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = cosine_conv(x, self.templates, self.gamma_s)  # B×K×H×W
        self.last_scores = s
        v = cosine_conv(F.relu(self.bn(s)), self.values, self.gamma_v)  # r̂ = r/‖r‖ inside
        return x + self.alpha * v


def location_kl(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(p_T(i) ‖ softmax_k s(i)) averaged over the B·H·W locations; target rows (B·H·W)×K."""
    log_q = F.log_softmax(scores.permute(0, 2, 3, 1).reshape(-1, scores.shape[1]), dim=1)
    return F.kl_div(log_q, target, reduction="batchmean")


def placement(student: TapShapes, teacher: TapShapes) -> tuple[str, str]:
    """letKD-2's intermediate point (student, teacher): after the first block of the last stage, or
    each network's previous stage output when the student's last stage is a single block."""
    g_s, g_t = len(student.stages) - 1, len(teacher.stages) - 1
    if student.blocks_per_stage[-1] > 1:
        return f"stage{g_s}.block0", f"stage{g_t}.block0"
    return f"stage{g_s - 1}", f"stage{g_t - 1}"


@dataclass(frozen=True)
class Site:
    """One KD layer: where it sits in each network, its templates, the student's map size there."""

    name: str
    student_point: str
    teacher_point: str
    templates: int
    size: tuple[int, int]


@register
class KDLayerMethod(Method):
    name = "kd_layer"
    paper = (
        "Gorgun, Gurbuz, Alatan, BMVC 2023, Knowledge Distillation Layer that Lets the Student "
        "Decide (arXiv 2309.02843; letKD)"
    )
    defaults = {
        "variant": "letkd1", "K": 64, "alpha": 1.0, "penult_weight": 1.0, "inter_weight": 1.0,
        "kmeans_iters": 20, "fit_vectors": 200_000,
    }
    domains = {
        "variant": OneOf(*VARIANTS), "K": Interval(2, 65_536), "alpha": NON_NEGATIVE, "penult_weight": NON_NEGATIVE,
        "inter_weight": NON_NEGATIVE, "kmeans_iters": Interval(1, 1_000), "fit_vectors": Interval(1, 100_000_000),
    }  # the counts bounded far above any use, so a typo (K: 10**12) is refused before it allocates
    search_space = {"alpha": Uniform(0, 2), "penult_weight": LogUniform(0.1, 10), "K": Choice(32, 64, 128)}
    student_taps = frozenset({"logits"})
    teacher_taps = frozenset({"prepool", "stages", "blocks"})

    @classmethod
    def taps_needed(cls, hp):
        """The layers sit at the pre-pool map (and, for letKD-2, at a stage or block) of both networks."""
        at = {"prepool"} | ({"stages", "blocks"} if hp["variant"] == "letkd2" else set())
        return frozenset(at | {"logits"}), frozenset(at)

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        s_shapes, t_shapes = ctx.student_shapes, ctx.teacher_shapes
        points = [("penult", "prepool", "prepool", self.hp["K"])]
        if self.hp["variant"] == "letkd2":
            points.append(("inter", *placement(s_shapes, t_shapes), SUBCLASSES * ctx.num_classes))
        self.sites = tuple(
            Site(name, sp, tp, k, tuple(s_shapes.at(sp)[1:])) for name, sp, tp, k in points
        )
        device = next(ctx.student.parameters()).device
        layers = []
        for site in self.sites:
            layer = KDLayer(s_shapes.at(site.student_point)[0], site.templates, self.hp["alpha"])
            ctx.student.inject(site.student_point, layer.to(device))
            layers.append(layer)
        self.layers = tuple(layers)  # a plain tuple: the layers are the student's parameters, not ours
        c_penult = t_shapes.prepool[0]
        self.register_buffer("centres", torch.zeros(self.hp["K"], c_penult), persistent=False)
        if self.hp["variant"] == "letkd2":
            c_inter = t_shapes.at(self.sites[1].teacher_point)[0]
            dims = min(60, ctx.num_classes - 1, c_inter)
            n_sub = SUBCLASSES * ctx.num_classes
            self.register_buffer("lda_weight", torch.zeros(c_inter, dims), persistent=False)
            self.register_buffer("lda_bias", torch.zeros(dims), persistent=False)
            self.register_buffer("prototypes", torch.zeros(n_sub, dims), persistent=False)
            self.register_buffer("decisions", torch.eye(n_sub), persistent=False)

    # -- offline targets ---------------------------------------------------------------------------

    def cache_path(self, data: TeacherData) -> Path:
        """teacher sha256, variant, K and seed in the clear; every other input (the targets' code
        included) in the digest."""
        inputs = {
            "code": source_sha256(_letkd_targets),
            "n_images": len(data.train_images), "classes": self.ctx.num_classes,
            "kmeans_iters": self.hp["kmeans_iters"], "fit_vectors": self.hp["fit_vectors"],
            "sites": [[s.teacher_point, list(s.size), s.templates] for s in self.sites],
        }
        prefix = f"kd_layer-{self.hp['variant']}-K{self.hp['K']}-seed{data.seed}"
        return cache_path(data.cache_dir, prefix, data.teacher_sha256, inputs)

    def compute_targets(self, data: TeacherData) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(data.seed)
        samples = sample_locations(
            data.teacher, data.train_images, data.train_labels,
            {s.name: (s.teacher_point, s.size) for s in self.sites}, self.hp["fit_vectors"], g,
        )
        vectors, _ = samples["penult"]
        targets = {"centres": kmeans(vectors, self.hp["K"], self.hp["kmeans_iters"], g),
                   "fit_vectors_penult": torch.tensor(len(vectors))}
        if "inter" in samples:
            vectors, labels = samples["inter"]
            targets.update(teacher_decisions(
                vectors, labels, self.ctx.num_classes, SUBCLASSES, self.hp["kmeans_iters"], g
            ))
            targets["fit_vectors_inter"] = torch.tensor(len(vectors))
        targets["compute_s"] = torch.tensor(time.perf_counter() - t0, dtype=torch.float64)
        return targets

    def prepare(self, data: TeacherData) -> dict:
        t0 = time.perf_counter()
        path = self.cache_path(data)
        targets, hit = load_or_compute(path, lambda: self.compute_targets(data), self.centres.device)
        for key, buffer in self.named_buffers():
            buffer.copy_(targets[key])
        return {
            "K": {s.name: s.templates for s in self.sites},
            "offline_s": time.perf_counter() - t0,
            "offline_compute_s": float(targets["compute_s"]),
            "cache_hit": hit,
            "cache_file": path.name,
            "fit_vectors": {s.name: int(targets[f"fit_vectors_{s.name}"]) for s in self.sites},
        }

    # -- training ----------------------------------------------------------------------------------

    def losses(self, s, t, y, progress) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(s.logits, y)}
        for site, layer in zip(self.sites, self.layers):
            f = at_student_locations(tap_at(t, site.teacher_point), site.size)  # p_T: no gradient
            if site.name == "penult":
                target = quantisation_target(f, self.centres)
            else:
                y_loc = y.repeat_interleave(site.size[0] * site.size[1])  # each location: its image's class
                target = decision_target(f, y_loc, dict(self.named_buffers()), SUBCLASSES)
            terms[f"kd_{site.name}"] = self.hp[f"{site.name}_weight"] * location_kl(layer.last_scores, target)
        return terms

    def record_extras(self) -> dict:
        return {
            "placements": {
                s.name: {"student": s.student_point, "teacher": s.teacher_point, "templates": s.templates,
                         "size": list(s.size), "layer_params": sum(p.numel() for p in layer.parameters())}
                for s, layer in zip(self.sites, self.layers)
            },
        }
