"""Suite files: plain YAML data, validated into dataclasses with one-line errors.

A suite declares the dataset, the teacher (trained in-suite with its own seed and budget), the
student, the training protocol (budget in epochs, optimizer, schedule), the methods and the seeds.
Nothing in it is code: it is read as safe YAML within limits (``config/suite_file.py``) and every key
is checked, so a typo is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbench.api.errors import ConfigError
from kdbench.api.paths import checked_path, is_plain_name, plain_name
from kdbench.api.registry import method_names
from kdbench.config.executor import parse_executor
from kdbench.config.fast_path import PRECISIONS, FastPath
from kdbench.config.suite_file import read_yaml
from kdbench.config.tuning import MAX_TRIALS, TuningConfig, ValidationConfig
from kdbench.data.datasets import DATASETS
from kdbench.data.user import FORMATS, DataSource

SUITES_DIR = Path(__file__).parent / "suites"

OPTIMIZERS = {"sgd": {"lr", "momentum", "weight_decay", "nesterov"}, "adamw": {"lr", "weight_decay"}}
SCHEDULES = {"cosine": set(), "multistep": {"milestones", "gamma"}, "constant": set()}

#: Seeds feed ``torch.manual_seed`` and ``random.seed`` after small offsets; 32 bits is what every
#: RNG a user might pair us with (NumPy's legacy seeding included) accepts.
MAX_SEED = 2**32 - 1
#: Bounds on a budget: far beyond any published protocol (CRD: 240 epochs; ImageNet recipes: 600),
#: close enough to catch a typo before it books a machine for a century.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    """``cosine``: per-step cosine from lr to 0 over the budget; ``multistep``: ×gamma at each
    milestone epoch (the CRD protocol's 150/180/210); ``constant``."""

    name: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    optimizer: OptimizerConfig
    schedule: ScheduleConfig


@dataclass(frozen=True)
class TeacherConfig:
    """Trained in-suite (``seed``, ``train``), or loaded from the user's ``checkpoint`` (a state dict
    whose file has the given ``sha256``); ``taps`` declares a non-zoo model's tap modules."""

    model: str
    seed: int
    train: TrainConfig | None
    min_acc: float | None = None  # a teacher below this test accuracy (%) is an error
    train_size: int | None = None  # first N training images for the teacher (default: all)
    taps: dict | None = None
    checkpoint: str | None = None  # absolute path
    sha256: str | None = None


@dataclass(frozen=True)
class MethodEntry:
    """One column of the run matrix: a registered method under a label, with hyperparameter overrides.

    The label defaults to the method's name; distinct labels let one suite compare variants of a method
    (e.g. an ablation over one hyperparameter)."""

    method: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)  # in a tuned suite: fixed, not tuned
    tune: bool = True  # False: a tuned suite keeps this entry at its settings (one trial)


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    description: str
    dataset: str | DataSource  # a built-in's name, or the user's data
    teacher: TeacherConfig
    student_model: str
    train: TrainConfig
    methods: tuple[MethodEntry, ...]
    seeds: tuple[int, ...]
    path: str
    train_size: int | None = None  # students train on the first N training images (default: all)
    test_size: int | None = None  # evaluate on the first N test images (default: all)
    executor: dict | None = None  # where the groups run (validated; the command line overrides it)
    student_taps: dict | None = None
    fast_path: FastPath = FastPath()
    tuning: TuningConfig | None = None  # None: every method at its settings, as before tuning existed

    @property
    def folder(self) -> Path:
        """The suite file's folder: relative paths in it and ``module:callable`` models start here."""
        return Path(self.path).resolve().parent

    def entry(self, label: str) -> MethodEntry:
        for e in self.methods:
            if e.label == label:
                return e
        raise ConfigError(f"suite {self.name!r} has no method {label!r}")


# --------------------------------------------------------------------------------------- parsing


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find_suite(name_or_path: str) -> Path:
    """A suite by name (``benchmarks/kdbench/config/suites/<name>.yaml``) or by path to a YAML file."""
    path = checked_path(name_or_path, "suite")
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if is_plain_name(name_or_path) and candidate.is_file():
        return candidate
    raise ConfigError(f"unknown suite {name_or_path!r}; known suites: {', '.join(suite_names())}")


def load_suite(name_or_path: str) -> SuiteConfig:
    path = find_suite(name_or_path)
    return parse_suite(read_yaml(path), path)


def parse_suite(raw: Any, path: Path | str = "<suite>") -> SuiteConfig:
    where = str(path)
    top = _mapping(raw, where)
    _keys(top, where, required={"name", "dataset", "teacher", "student", "train", "methods", "seeds"},
          optional={"description", "train_size", "test_size", "executor", "fast_path", "tuning"})
    folder = Path(where).resolve().parent
    dataset = _dataset(top["dataset"], folder, f"{where}: dataset")
    teacher = _teacher(top["teacher"], folder, f"{where}: teacher")
    s = _mapping(top["student"], f"{where}: student")
    _keys(s, f"{where}: student", required={"model"}, optional={"taps"})

    seeds_t = check_seeds(top["seeds"], f"{where}: seeds")

    return SuiteConfig(
        name=plain_name(_str(top["name"], f"{where}: name"), f"{where}: suite name"),
        description=str(top.get("description", "")).strip(),
        dataset=dataset,
        teacher=teacher,
        student_model=_str(s["model"], f"{where}: student.model"),
        student_taps=_taps(s.get("taps"), f"{where}: student.taps"),
        train=_train(top["train"], f"{where}: train"),
        methods=_methods(top["methods"], where),
        seeds=seeds_t,
        path=where,
        train_size=_optional_int(top.get("train_size"), f"{where}: train_size"),
        test_size=_optional_int(top.get("test_size"), f"{where}: test_size"),
        executor=_executor(top.get("executor"), where),
        fast_path=_fast_path(top.get("fast_path"), f"{where}: fast_path"),
        tuning=_tuning(top.get("tuning"), f"{where}: tuning", seeds_t),
    )


def check_seeds(raw: Any, where: str) -> tuple[int, ...]:
    """A non-empty list of distinct seeds (also the check on ``--seeds``: a repeated seed would
    train the same cell twice)."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError(f"{where} must be a non-empty list of integers")
    seeds = tuple(check_seed(x, where) for x in raw)
    if repeated := sorted(s for s, n in Counter(seeds).items() if n > 1):
        raise ConfigError(f"{where} are repeated: {', '.join(map(str, repeated))}")
    return seeds


def _tuning(raw: Any, where: str, suite_seeds: tuple[int, ...]) -> TuningConfig | None:
    """``{trials: N, seeds: [...], validation: {...}}``, each optional (see config/tuning.py)."""
    if raw is None:
        return None
    m = _mapping(raw, where)
    _keys(m, where, required=set(), optional={"trials", "seeds", "validation"})
    d = TuningConfig()
    seeds = check_seeds(m.get("seeds", list(d.seeds)), f"{where}.seeds")
    check_tuning_seeds(seeds, suite_seeds, f"{where}.seeds")
    return TuningConfig(
        trials=_int(m.get("trials", d.trials), f"{where}.trials", minimum=1, maximum=MAX_TRIALS),
        seeds=seeds,
        validation=_validation(m.get("validation", {}), f"{where}.validation"),
    )


def check_tuning_seeds(tuning_seeds: tuple[int, ...], seeds: tuple[int, ...], where: str) -> None:
    """The choice is made on other seeds than the reported runs (also the check on ``--seeds``)."""
    if both := sorted(set(tuning_seeds) & set(seeds)):
        raise ConfigError(f"{where}: {', '.join(map(str, both))} also among the suite's seeds; tuning seeds must "
                          "differ, so the runs whose test accuracy is reported are not the ones chosen on")


def _validation(raw: Any, where: str) -> ValidationConfig:
    """``{fraction: F}`` (0 < F < 1) or ``{size: N}``, and ``seed`` [0]."""
    m = _mapping(raw, where)
    _keys(m, where, required=set(), optional={"fraction", "size", "seed"})
    if "fraction" in m and "size" in m:
        raise ConfigError(f"{where}: give fraction or size, not both")
    seed = check_seed(m.get("seed", 0), f"{where}.seed")
    if "size" in m:
        return ValidationConfig(fraction=None, size=_int(m["size"], f"{where}.size", minimum=1), seed=seed)
    fraction = _float(m.get("fraction", 0.1), f"{where}.fraction", positive=True)
    if fraction >= 1:
        raise ConfigError(f"{where}.fraction must be below 1, got {fraction:g}")
    return ValidationConfig(fraction=fraction, size=None, seed=seed)


def _fast_path(raw: Any, where: str) -> FastPath:
    """``{precision: fp32|bf16, channels_last: bool, compile: bool, deterministic: bool}``, each optional."""
    if raw is None:
        return FastPath()
    m = _mapping(raw, where)
    _keys(m, where, required=set(), optional={"precision", "channels_last", "compile", "deterministic"})
    d = FastPath()
    precision = m.get("precision", d.precision)
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"{where}.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return FastPath(
        precision=precision,
        channels_last=_bool(m.get("channels_last", d.channels_last), f"{where}.channels_last"),
        compile=_bool(m.get("compile", d.compile), f"{where}.compile"),
        deterministic=_bool(m.get("deterministic", d.deterministic), f"{where}.deterministic"),
    )


def _dataset(raw: Any, folder: Path, where: str) -> str | DataSource:
    """A built-in's name, or ``{format: imagefolder, root: DIR, image_size: S}`` or ``{format:
    tensors, path: FILE}`` (both with optional ``name``, ``hflip``, ``crop_padding``)."""
    if isinstance(raw, str):
        if raw not in DATASETS:
            raise ConfigError(f"{where}: unknown dataset {raw!r}; known: {', '.join(sorted(DATASETS))}, "
                              "or a mapping with format: imagefolder or tensors")
        return raw
    m = _mapping(raw, where)
    fmt = m.get("format")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ConfigError(f"{where}.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    where_key, required = ("root", {"format", "root", "image_size"}) if fmt == "imagefolder" else ("path", {"format", "path"})
    _keys(m, where, required=required, optional={"name", "hflip", "crop_padding"})
    location = _path(m[where_key], folder, f"{where}.{where_key}")
    return DataSource(
        format=fmt, path=str(location),
        name=plain_name(_str(m.get("name", location.stem), f"{where}.name"), f"{where}.name"),
        image_size=_int(m["image_size"], f"{where}.image_size", minimum=1, maximum=MAX_IMAGE_SIZE) if fmt == "imagefolder" else None,
        hflip=_bool(m.get("hflip", False), f"{where}.hflip"),
        crop_padding=_int(m.get("crop_padding", 0), f"{where}.crop_padding", minimum=0, maximum=MAX_IMAGE_SIZE),
    )


def _teacher(raw: Any, folder: Path, where: str) -> TeacherConfig:
    t = _mapping(raw, where)
    min_acc = None if t.get("min_acc") is None else _float(t["min_acc"], f"{where}.min_acc", maximum=100.0)
    model = _str(t.get("model"), f"{where}.model") if "model" in t else None
    if "checkpoint" in t:
        _keys(t, where, required={"model", "checkpoint", "sha256"}, optional={"min_acc", "taps", "seed"})
        sha = _str(t["sha256"], f"{where}.sha256").lower()
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise ConfigError(f"{where}.sha256 must be 64 hexadecimal digits (sha256sum FILE), got {t['sha256']!r}")
        return TeacherConfig(
            model=model, seed=check_seed(t.get("seed", 0), f"{where}.seed"), train=None, min_acc=min_acc,
            taps=_taps(t.get("taps"), f"{where}.taps"),
            checkpoint=str(_path(t["checkpoint"], folder, f"{where}.checkpoint")), sha256=sha,
        )
    _keys(t, where, required={"model", "seed", "train"}, optional={"min_acc", "train_size", "taps"})
    return TeacherConfig(
        model=model, seed=check_seed(t["seed"], f"{where}.seed"), train=_train(t["train"], f"{where}.train"),
        min_acc=min_acc, train_size=_optional_int(t.get("train_size"), f"{where}.train_size"),
        taps=_taps(t.get("taps"), f"{where}.taps"),
    )


def _taps(raw: Any, where: str) -> dict | None:
    """A model's tap modules; the paths are checked against the model when it is built."""
    if raw is None:
        return None
    return dict(_mapping(raw, where))


def _executor(raw: Any, where: str) -> dict | None:
    if raw is None:
        return None
    section = dict(_mapping(raw, f"{where}: executor"))
    parse_executor(section, where)
    return section


def _methods(raw: Any, where: str) -> tuple[MethodEntry, ...]:
    """``all`` (every registered method, in name order), or a list of names and/or mappings
    ``{method: NAME, label: LABEL, hyperparameters: {...}}``. Names are checked when the suite runs."""
    if raw == "all":
        return tuple(MethodEntry(m, m) for m in method_names())
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: methods must be 'all' or a non-empty list")
    entries = []
    for item in raw:
        if isinstance(item, str):
            entries.append(MethodEntry(item, plain_name(item, f"{where}: method")))
            continue
        m = _mapping(item, f"{where}: methods entry")
        _keys(m, f"{where}: methods entry", required={"method"}, optional={"label", "hyperparameters", "tune"})
        name = _str(m["method"], f"{where}: methods.method")
        label = plain_name(_str(m.get("label", name), f"{where}: methods.label"), f"{where}: method label")
        hp = m.get("hyperparameters") or {}
        entries.append(MethodEntry(name, label, dict(_mapping(hp, f"{where}: {label}.hyperparameters")),
                                   _bool(m.get("tune", True), f"{where}: {label}.tune")))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: method labels are repeated: {labels}")
    return tuple(entries)


def _train(raw: Any, where: str) -> TrainConfig:
    m = _mapping(raw, where)
    _keys(m, where, required={"epochs", "batch_size"}, optional={"optimizer", "schedule"})
    opt_raw = dict(_mapping(m.get("optimizer", {}), f"{where}.optimizer"))
    opt_name = _choice(opt_raw.pop("name", "sgd"), OPTIMIZERS, f"{where}.optimizer: unknown optimizer")
    _keys(opt_raw, f"{where}.optimizer", required=set(), optional=OPTIMIZERS[opt_name])
    opt = OptimizerConfig(
        name=opt_name,
        lr=_float(opt_raw.get("lr", 0.05), f"{where}.optimizer.lr", positive=True),
        momentum=_float(opt_raw.get("momentum", 0.9), f"{where}.optimizer.momentum", maximum=1.0),
        weight_decay=_float(opt_raw.get("weight_decay", 5e-4), f"{where}.optimizer.weight_decay"),
        nesterov=_bool(opt_raw.get("nesterov", False), f"{where}.optimizer.nesterov"),
    )
    sch_raw = dict(_mapping(m.get("schedule", {}), f"{where}.schedule"))
    sch_name = _choice(sch_raw.pop("name", "cosine"), SCHEDULES, f"{where}.schedule: unknown schedule")
    _keys(sch_raw, f"{where}.schedule", required=set(), optional=SCHEDULES[sch_name])
    milestones = sch_raw.get("milestones", [])
    if not isinstance(milestones, list):
        raise ConfigError(f"{where}.schedule.milestones must be a list of epochs")
    milestones = [_int(x, f"{where}.schedule.milestones", minimum=1, maximum=MAX_EPOCHS) for x in milestones]
    if milestones != sorted(set(milestones)):
        raise ConfigError(f"{where}.schedule.milestones must be increasing epochs, got {milestones}")
    sched = ScheduleConfig(
        name=sch_name,
        milestones=tuple(milestones),
        gamma=_float(sch_raw.get("gamma", 0.1), f"{where}.schedule.gamma", positive=True),
    )
    return TrainConfig(
        epochs=_int(m["epochs"], f"{where}.epochs", minimum=1, maximum=MAX_EPOCHS),
        batch_size=_int(m["batch_size"], f"{where}.batch_size", minimum=1, maximum=MAX_BATCH_SIZE),
        optimizer=opt,
        schedule=sched,
    )


def _mapping(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _keys(m: dict, where: str, required: set[str], optional: set[str]) -> None:
    missing = required - set(m)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    unknown = set(m) - required - optional
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where} must be a non-empty string, got {v!r}")
    return v


def _choice(v: Any, known, what: str) -> str:
    """One of ``known``'s names; anything else (a list or a mapping included) names the known ones."""
    if not isinstance(v, str) or v not in known:
        raise ConfigError(f"{what} {v!r}; known: {sorted(known)}")
    return v


def _path(v: Any, folder: Path, where: str) -> Path:
    """A file or folder the suite names, relative to the suite's folder, as an absolute path."""
    return checked_path(folder / _str(v, where), where).resolve()


def _int(v: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"{where} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{where} must be at least {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{where} must be at most {maximum:,}, got {v:,}")
    return v


def check_seed(v: Any, where: str) -> int:
    """A seed: an integer in [0, MAX_SEED] (also the check on ``--seeds``)."""
    return _int(v, where, minimum=0, maximum=MAX_SEED)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where} must be true or false, got {v!r}")
    return v


def _optional_int(v: Any, where: str) -> int | None:
    return None if v is None else _int(v, where, minimum=1)


def _float(v: Any, where: str, positive: bool = False, maximum: float | None = None) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ConfigError(f"{where} must be a number, got {v!r}")
    try:
        finite = math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise ConfigError(f"{where} must be a finite number, got {v if isinstance(v, float) else 'a huge integer'}")
    if v < 0 or (positive and v == 0):
        raise ConfigError(f"{where} must be {'positive' if positive else 'non-negative'}, got {v}")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{where} must be at most {maximum:g}, got {v}")
    return float(v)
