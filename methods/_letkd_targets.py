"""The teacher's targets for kd_layer (letKD): what each KD layer's template scores must match.

Offline, once per teacher, from the un-augmented training set (``sample_locations``):

* letKD-1 quantises the teacher's last feature map with k-means (``kmeans``); online a location's
  target is ``softmax_k(−‖f_i − ρ_k‖²)`` (``quantisation_target``).                      [paper][code]
* letKD-2's "teacher decisions" (``teacher_decisions``): an LDA of the teacher's per-location
  features labelled with the image's class, 8 k-means sub-classes inside each class in LDA space,
  and a score matrix S saying how often a location constrained to sub-class s lies nearest to
  prototype s′ of any class. Online a location's target is the row S[k*], k* its nearest prototype
  within its true class (``decision_target``).                                                [paper]

Every location is the teacher's map average-pooled to the student's spatial size first
(``at_student_locations``), offline and online alike. Random draws come from one seeded
``torch.Generator`` on the CPU, so the same seed gives the same targets; the arithmetic runs on
the teacher's device (k-means with K = 4096 is a GPU job), with cluster sums as one-hot matmuls
rather than scatter-adds, which CUDA does not make deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from kdbench.models.tapped import TappedModel, Taps

#: Elements of one distance or one-hot block: bounds memory whatever the number of vectors.
_BLOCK_ELEMENTS = 2**25


def tap_at(taps: Taps, point: str) -> torch.Tensor:
    """The tensor at an injection point: ``prepool``, ``stage{g}`` or ``stage{g}.block{j}``."""
    if point == "prepool":
        return taps.prepool
    if "." in point:
        return taps.blocks[point]
    return taps.stages[int(point[len("stage"):])]


def at_student_locations(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×H×W teacher map → (B·h·w)×C location vectors at the student's size (h, w), image-major."""
    if tuple(f.shape[-2:]) != tuple(size):
        f = F.adaptive_avg_pool2d(f, size)
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


@torch.no_grad()
def sample_locations(
    teacher: TappedModel, images: torch.Tensor, labels: torch.Tensor,
    points: dict[str, tuple[str, tuple[int, int]]], limit: int, g: torch.Generator, batch: int = 500,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each named (teacher point, student size): ``limit`` location vectors drawn without
    replacement from all N·h·w locations of the training set (all of them when fewer), with each
    location's image label. One teacher pass serves every point."""
    picks, parts = {}, {name: [] for name in points}
    for name, (_, (h, w)) in points.items():
        total = len(images) * h * w
        picks[name] = torch.randperm(total, generator=g)[: min(limit, total)].sort().values
    for start in range(0, len(images), batch):
        taps = teacher.forward_taps(images[start : start + batch])
        for name, (point, size) in points.items():
            per_image = size[0] * size[1]
            bounds = torch.tensor([start, start + batch]) * per_image
            lo, hi = torch.searchsorted(picks[name], bounds).tolist()
            rows = (picks[name][lo:hi] - start * per_image).to(images.device)
            parts[name].append(at_student_locations(tap_at(taps, point), size)[rows])
    out = {}
    for name, (_, (h, w)) in points.items():
        image_of = (picks[name] // (h * w)).to(labels.device)
        out[name] = (torch.cat(parts[name]), labels[image_of])
    return out


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (squared Euclidean) for every row of x, in bounded blocks."""
    cc = (centres * centres).sum(dim=1)
    step = max(1, _BLOCK_ELEMENTS // len(centres))
    return torch.cat([(cc - 2.0 * xb @ centres.T).argmin(dim=1) for xb in x.split(step)])


def kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then ``iters`` Lloyd steps; returns the k×D centres, each the mean of its
    final assignment (a centre left empty keeps its previous position)."""
    n = len(x)
    if n < k:
        raise ValueError(f"k-means: {n} vectors for {k} centres")
    xx = (x * x).sum(dim=1)

    def sq_dist_to(i: torch.Tensor) -> torch.Tensor:
        return (xx - 2.0 * (x @ x[i].T).squeeze(1) + xx[i]).clamp(min=0)

    chosen = [torch.randint(n, (1,), generator=g).to(x.device)]
    d2 = sq_dist_to(chosen[0])
    for _ in range(1, k):  # the next centre is drawn with probability ∝ squared distance to the chosen
        cum = d2.double().cumsum(dim=0)
        u = torch.rand((1,), generator=g, dtype=torch.float64).to(cum.device) * cum[-1]
        chosen.append(torch.searchsorted(cum, u).clamp(max=n - 1))
        d2 = torch.minimum(d2, sq_dist_to(chosen[-1]))
    centres = x[torch.cat(chosen)]
    step = max(1, _BLOCK_ELEMENTS // k)
    for _ in range(iters):
        assign = _nearest(x, centres)
        sums = torch.zeros_like(centres)
        counts = x.new_zeros(k)
        for xb, ab in zip(x.split(step), assign.split(step)):
            onehot = F.one_hot(ab, k).to(x.dtype)
            sums += onehot.T @ xb
            counts += onehot.sum(dim=0)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


def quantisation_target(f: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """letKD-1: p_T(i) = softmax_k(−‖f_i − ρ_k‖²), rows of (locations)×K."""
    return F.softmax(-torch.cdist(f, centres).pow(2), dim=1)


def nearest_in_class(z: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor, sub: int) -> torch.Tensor:
    """k*: the nearest of the ``sub`` prototypes of each location's own class (prototype c·sub + j)."""
    own = prototypes.view(-1, sub, prototypes.shape[1])[y]  # locations×sub×d
    j = ((z[:, None, :] - own) ** 2).sum(dim=2).argmin(dim=1)
    return y * sub + j


def lda_affine(vectors: torch.Tensor, labels: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit scikit-learn's LDA (float64) and return its projection as z = f·W + b: W (C×dims), b (dims),
    read off ``transform`` at the origin and the unit vectors, so any solver's centring is kept."""
    lda = LinearDiscriminantAnalysis(n_components=dims)
    lda.fit(vectors.double().cpu().numpy(), labels.cpu().numpy())
    c = vectors.shape[1]
    at = lda.transform(np.vstack([np.zeros((1, c)), np.eye(c)]))
    to = dict(dtype=vectors.dtype, device=vectors.device)
    return torch.as_tensor(at[1:] - at[0], **to), torch.as_tensor(at[0], **to)


def teacher_decisions(
    vectors: torch.Tensor, labels: torch.Tensor, classes: int, sub: int, iters: int, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """letKD-2's offline targets: LDA map, class-constrained sub-class prototypes, score matrix S."""
    dims = min(60, classes - 1, vectors.shape[1])
    weight, bias = lda_affine(vectors, labels, dims)
    z = vectors @ weight + bias
    prototypes = torch.cat([kmeans(z[labels == c], sub, iters, g) for c in range(classes)])
    constrained = nearest_in_class(z, labels, prototypes, sub)  # s: sub-class within the true class
    unconstrained = _nearest(z, prototypes)                    # s′: nearest prototype of any class
    n = classes * sub
    counts = torch.bincount((constrained * n + unconstrained).cpu(), minlength=n * n).view(n, n).double()
    empty = counts.sum(dim=1) == 0  # a sub-class no fitted location falls in: it decides for itself
    counts[empty] = torch.eye(n, dtype=counts.dtype)[empty]
    decisions = (counts / counts.sum(dim=1, keepdim=True)).to(dtype=z.dtype, device=z.device)
    return {"lda_weight": weight, "lda_bias": bias, "prototypes": prototypes, "decisions": decisions}


def decision_target(
    f: torch.Tensor, y: torch.Tensor, t: dict[str, torch.Tensor], sub: int
) -> torch.Tensor:
    """letKD-2: the row S[k*] for every location, k* its nearest prototype within its class."""
    z = f @ t["lda_weight"] + t["lda_bias"]
    return t["decisions"][nearest_in_class(z, y, t["prototypes"], sub)]
