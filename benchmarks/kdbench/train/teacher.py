"""Teachers trained in-suite, cached under a hash of their configuration, re-checked at every load.

Users of other suites meet dead download links and checkpoints that do not reach the reported
accuracy. Here a teacher is a function of its configuration (model, dataset, seed, budget, optimizer),
trained by the harness itself and stored in ``results/teachers/<dataset>-<model>-<hash>/`` with a
sidecar ``teacher.json`` holding the checkpoint's sha256 and test accuracy. Loading recomputes both;
any mismatch is an error, never a silent retrain.

A teacher of the user's own is a checkpoint named in the suite with its sha256: checked, loaded as
tensors only, its accuracy measured on the suite's test set and written to a ``teacher.json`` in
``results/teachers/<dataset>-<model>-ckpt-<sha>/`` (where its offline targets are cached too).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass
from os.path import commonprefix
from pathlib import Path
from typing import Callable

import torch
from kdbench.api.atomic import save_atomic, write_json_atomic
from kdbench.api.errors import TeacherError, first_line
from kdbench.api.json_file import read_json
from kdbench.api.locks import exclusive
from kdbench.api.method import MethodContext
from kdbench.api.paths import under
from kdbench.api.tapped import TappedModel
from kdbench.config.hashing import stable_hash, training_config
from kdbench.config.suite import SuiteConfig
from kdbench.data.datasets import Dataset
from kdbench.models import to_device
from kdbench.models.pair import build_teacher, model_identity
from kdbench.train.diagnostics import test_pass
from kdbench.train.environment import environment, seed_everything
from kdbench.train.fast_path import compile_forward
from kdbench.train.loop import LabelsOnly, epoch_losses, make_cell, train_epoch

#: Accuracy re-measured at load may differ from the recorded one by this much (percentage points)
#: when the checkpoint moves between devices (CPU vs GPU kernels round differently); more is an error.
ACC_TOLERANCE = 0.1


@dataclass(frozen=True)
class TeacherInfo:
    model: str
    config_hash: str
    sha256: str
    test_acc: float
    path: str  # the checkpoint
    n_train: int | None  # None: trained outside the suite
    folder: str = ""  # its teacher.json and offline/ cache, under the results folder


@dataclass(frozen=True)
class Teacher:
    """A run's teacher: the frozen network, what identifies it (sha256, accuracy, where it lives), and
    its pooled features on the test set (for the kernel-gap diagnostic), from the pass that measured
    its accuracy."""

    net: TappedModel
    info: TeacherInfo
    test_features: torch.Tensor


def teacher_config_hash(suite: SuiteConfig, data: Dataset) -> str:
    identity = model_identity(suite.teacher.model, suite.teacher.taps, suite)
    return stable_hash(training_config(
        data, suite.teacher.train, suite.fast_path,
        model={"model": suite.teacher.model, **({"model_identity": identity} if identity else {})},
        own={"seed": suite.teacher.seed},
    ))


def teacher_dir(results_dir: Path, suite: SuiteConfig, tag: str) -> Path:
    """``results/teachers/<dataset>-<model>-<tag>``: the tag is the config hash's head, or
    ``ckpt-<sha256 head>`` for the user's checkpoint."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{suite.dataset}-{suite.teacher.model}")
    return under(results_dir, "teachers", f"{readable}-{tag}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def freeze(model: TappedModel) -> TappedModel:
    """Eval mode and no gradients: the teacher is never trained, never in an optimizer."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def get_teacher(
    suite: SuiteConfig, data: Dataset, device: torch.device, results_dir: Path, deterministic: bool,
    log: Callable[[str], None] = print, checkpoint: dict[str, torch.Tensor] | None = None,
) -> Teacher:
    """The suite's teacher, frozen on ``device``: loaded from cache and re-checked, or trained now,
    or the user's (``checkpoint``: its state dict, when already read and verified)."""
    if suite.teacher.checkpoint:
        return _from_checkpoint(suite, data, device, results_dir, log, checkpoint or checkpoint_state(suite))
    h = teacher_config_hash(suite, data)
    folder = teacher_dir(results_dir, suite, h[:12])
    if (folder / "teacher.json").is_file():
        return _load(suite, data, device, folder, h)
    with exclusive(folder.with_name(folder.name + ".lock"), f"teacher {folder.name}", log):
        if (folder / "teacher.json").is_file():  # trained by the process we waited for
            return _load(suite, data, device, folder, h)
        return _train(suite, data, device, folder, h, deterministic, log)


def _build(suite: SuiteConfig, data: Dataset, device: torch.device) -> TappedModel:
    return to_device(build_teacher(suite, data.spec), device, suite.fast_path.channels_last)


def _compiled(model: TappedModel, suite: SuiteConfig) -> TappedModel:
    """Compiled when the suite asks, once its shapes are known (a dry run would compile too)."""
    if suite.fast_path.compile:
        compile_forward(model)
    return model


def _read_meta(folder: Path) -> dict:
    """``teacher.json``, refused in one line unless it is an object with the checkpoint's sha256 and
    accuracy (a damaged cache is never silently retrained: its owner may want to know why)."""
    path = folder / "teacher.json"
    try:
        meta = read_json(path)
    except (OSError, ValueError) as exc:
        raise TeacherError(f"{path} is unreadable ({exc}); delete {folder} to retrain the teacher") from None
    ok = (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
          and isinstance(meta.get("test_acc"), (int, float)) and not isinstance(meta.get("test_acc"), bool))
    if not ok:
        raise TeacherError(f"{path} lacks the checkpoint's sha256 or test_acc; delete {folder} to retrain the teacher")
    return meta


def _load_weights(model: TappedModel, ckpt: Path, device: torch.device, folder: Path) -> None:
    """Tensors only (``weights_only``: unpickling runs no code), and exactly the model's."""
    try:
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
        model.load_state_dict(state)
    except Exception as exc:  # unpickling refused, truncated, wrong keys or shapes
        raise TeacherError(
            f"teacher checkpoint {ckpt} cannot be loaded ({first_line(exc)}); delete {folder} to retrain it"
        ) from None


def _load(suite, data, device, folder: Path, h: str) -> Teacher:
    meta = _read_meta(folder)
    ckpt = folder / "teacher.pt"
    if not ckpt.is_file():
        raise TeacherError(f"teacher checkpoint {ckpt} is missing; delete {folder} to retrain it")
    sha = file_sha256(ckpt)
    if sha != meta["sha256"]:
        raise TeacherError(
            f"teacher checkpoint {ckpt} has sha256 {sha[:12]}…, recorded {meta['sha256'][:12]}…; "
            f"delete {folder} to retrain it"
        )
    model = _build(suite, data, device)
    _load_weights(model, ckpt, device, folder)
    acc, features = test_pass(_compiled(model, suite), data.test, precision=suite.fast_path.precision)
    if abs(acc - meta["test_acc"]) > ACC_TOLERANCE:
        raise TeacherError(
            f"teacher {ckpt} measures {acc:.2f}% on the test set, recorded {meta['test_acc']:.2f}%; "
            f"delete {folder} to retrain it"
        )
    _check_min_acc(suite, acc, f"cache: {folder}")
    return Teacher(freeze(model), TeacherInfo(suite.teacher.model, h, sha, acc, str(ckpt), len(data.train),
                                              str(folder)), features)


def _train(
    suite, data, device, folder: Path, h: str, deterministic: bool, log,
) -> Teacher:
    cfg = suite.teacher
    log(f"training teacher {cfg.model} on {suite.dataset} ({cfg.train.epochs} epochs, seed {cfg.seed})")
    seed_everything(cfg.seed)
    model = _build(suite, data, device)
    shapes = model.tap_shapes(tuple(data.train.images.shape[1:]))
    ctx = MethodContext(model, None, shapes, None, data.spec.num_classes, cfg.train.epochs, 0)
    precision = suite.fast_path.precision
    cell = make_cell(_compiled(model, suite), LabelsOnly({}, ctx), cfg.train.optimizer, precision)
    history = []
    t0 = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        train_epoch([cell], None, data, cfg.train, cfg.seed, epoch, precision=precision)
        if cell.status == "failed":
            raise TeacherError(f"teacher training failed at epoch {epoch + 1}: {cell.error}")
        if cell.status != "ok":
            raise TeacherError(f"teacher training diverged at epoch {epoch + 1}; lower teacher.train lr")
        acc, features = test_pass(model, data.test, precision=precision)
        history.append({"epoch": epoch + 1, "loss": epoch_losses(cell)["total"], "test_acc": acc})
        log(f"  teacher epoch {epoch + 1}/{cfg.train.epochs}: test {acc:.2f}%")
    train_s = time.perf_counter() - t0
    acc = history[-1]["test_acc"]
    ckpt = folder / "teacher.pt"
    save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, ckpt)
    sha = file_sha256(ckpt)
    write_json_atomic(folder / "teacher.json", {
        "model": cfg.model, "dataset": data.spec.name, "config_hash": h, "config": asdict(cfg),
        "sha256": sha, "test_acc": acc, "history": history, "train_s": train_s,
        "environment": environment(device, deterministic),
    })
    log(f"teacher {cfg.model}: {acc:.2f}% in {train_s:.0f} s, sha256 {sha[:12]}…, saved to {folder}")
    _check_min_acc(suite, acc, f"cache: {folder}")  # after saving: a weak teacher is kept, not retrained each time
    return Teacher(freeze(model), TeacherInfo(cfg.model, h, sha, acc, str(ckpt), len(data.train), str(folder)),
                   features)


def _check_min_acc(suite: SuiteConfig, acc: float, where: str) -> None:
    """``where``: the teacher's cache folder, or the user's checkpoint."""
    if suite.teacher.min_acc is not None and acc < suite.teacher.min_acc:
        raise TeacherError(
            f"teacher {suite.teacher.model} reaches {acc:.2f}%, below the suite's min_acc "
            f"{suite.teacher.min_acc:.2f}% ({where})"
        )


# ------------------------------------------------------------------------------- the user's teacher


def checkpoint_state(suite: SuiteConfig) -> dict[str, torch.Tensor]:
    """The state dict in the suite's ``teacher.checkpoint``, after its sha256 is checked: a missing,
    mismatched or unloadable file is a one-line :class:`TeacherError`."""
    cfg = suite.teacher
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise TeacherError(f"teacher.checkpoint {path} does not exist")
    sha = file_sha256(path)
    if sha != cfg.sha256:
        raise TeacherError(f"teacher.checkpoint {path} has sha256 {sha}, but the suite names {cfg.sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, a pickle asking for code
        raise TeacherError(f"teacher.checkpoint {path} cannot be loaded as tensors ({first_line(exc)})") from None
    for key in ("state_dict", "model"):  # the wrappers training scripts save
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherError(f"teacher.checkpoint {path} holds no state dict (a dict of tensors, bare or "
                           "under 'state_dict' or 'model')")
    return state


def load_checkpoint(model: TappedModel, state: dict[str, torch.Tensor], suite: SuiteConfig) -> None:
    """``state`` into the network, refused unless it fits exactly: the user's file is a state dict of
    the network itself (an adapted model's wrapped net); a ``teacher.pt`` kdbench trained holds the
    whole adapter (keys under ``net.``), and fits the same model as well."""
    for module in (model.weights_module(), model):
        if _misfit(module.state_dict(), state) is None:
            module.load_state_dict(state)
            return
    what, keys = _misfit(model.weights_module().state_dict(), state)
    raise TeacherError(f"teacher.checkpoint {suite.teacher.checkpoint} does not fit {suite.teacher.model}: "
                       f"it {what} {len(keys)} key(s), e.g. {keys[0]!r}{_prefix_hint(model, state)}")


def _misfit(target: dict, state: dict) -> tuple[str, list[str]] | None:
    """How ``state`` fails to fit ``target`` (what is wrong and the keys), or None when it fits."""
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    for what, keys in (("lacks", missing), ("has unexpected", unexpected), ("has other shapes at", shapes)):
        if keys:
            return what, keys
    return None


def _key_prefix(keys) -> str:
    """The dotted prefix every key shares (``module.`` of a DataParallel save), or ''."""
    common = commonprefix(list(keys))
    return common[: common.rfind(".") + 1]


def _prefix_hint(model: TappedModel, state: dict) -> str:
    """``; its keys carry the prefix 'module.' that …'s lack`` when a common prefix is all that is wrong."""
    target = set(model.weights_module().state_dict())
    ours, theirs = _key_prefix(target), _key_prefix(state)
    if theirs and {k[len(theirs):] for k in state} == target:
        return f"; its keys all carry the prefix {theirs!r}, which the model's lack (save it without the prefix)"
    if ours and {ours + k for k in state} == target:
        return f"; its keys all lack the prefix {ours!r}, which the model's have (save it with the prefix)"
    return ""


def _from_checkpoint(suite, data, device, results_dir: Path, log, state) -> Teacher:
    cfg = suite.teacher
    model = _build(suite, data, device)
    load_checkpoint(model, state, suite)
    acc, features = test_pass(_compiled(model, suite), data.test, precision=suite.fast_path.precision)
    folder = teacher_dir(results_dir, suite, f"ckpt-{cfg.sha256[:12]}")
    log(f"teacher {cfg.model} from {cfg.checkpoint}: {acc:.2f}% on the test set")
    _check_min_acc(suite, acc, f"checkpoint: {cfg.checkpoint}")  # before writing: a refused checkpoint leaves nothing behind
    write_json_atomic(folder / "teacher.json", {
        "model": cfg.model, "dataset": data.spec.name, "checkpoint": cfg.checkpoint, "sha256": cfg.sha256,
        "test_acc": acc, "n_test": len(data.test), "data_sha256": data.sha256,
    })
    info = TeacherInfo(cfg.model, cfg.sha256, cfg.sha256, acc, cfg.checkpoint, None, str(folder))
    return Teacher(freeze(model), info, features)
