"""Typed, frozen description of one training run of the paper.

In:  a nested dict (from YAML, JSON or ``--set key=value`` overrides).
Out: ``RunConfig``, a frozen dataclass tree whose canonical JSON is what the cache key hashes.

Every field has the paper's value as its default where the paper states one; odd values carry a
one-line reason. ``run_config_from_dict`` rejects unknown keys, wrong types and out-of-range values
with a ``ConfigError`` that names the field path (``optim.name``) and, for unknown names, the
known ones. Nothing here touches torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from claimbench.names import ARCHS, DATASETS  # re-exported: one list of the built-in names

OPTIMIZERS = ("sgd", "adam", "amsgrad", "adamax", "rmsprop", "adagrad", "adadelta")
# Paper section 2.1 and supplement Fig. 3: method-specific base learning rates.
BASE_LR = {
    "sgd": 0.1,
    "adam": 1e-3,
    "amsgrad": 1e-3,
    "adamax": 2e-3,
    "rmsprop": 1e-3,
    "adagrad": 1e-2,
    "adadelta": 1.0,
}
REGULARIZERS = ("none", "l2", "wd")
ACTIVATIONS = ("relu", "leaky_relu")
SCHEDULE_UNITS = ("steps", "epochs")
# fp32: strict IEEE float32 everywhere (the paper's). tf32: convolutions and matmuls may use
# TensorFloat-32 on GPUs that have it (faster, ~1e-3 relative error per product): a different run.
PRECISIONS = ("fp32", "tf32")
# (train images, image side, channels, classes) of each dataset, known without loading it: what
# validation and planning need. The loaders read their sizes from here (claimbench/data/catalog.py), so
# a plan and a loaded dataset agree (tests/test_plan_report.py pins them to the loaders'
# constants). For the synthetic shapes these are defaults, overridden by data.train_size /
# data.image_size / data.num_classes.
DATASET_SHAPES = {
    "digits": (1400, 8, 3, 10),  # of sklearn's 1,797 digits; the remaining 397 are the test set
    "shapes_clean": (4000, 16, 3, 10),
    "shapes_cluttered": (4000, 16, 3, 10),
    "cifar10": (50000, 32, 3, 10),
    "cifar100": (50000, 32, 3, 100),
    "tinyimagenet": (100000, 64, 3, 200),
    "imagenet": (1281167, 224, 3, 1000),
}
# The synthetic shapes have this many distinct shapes (claimbench/data/embedded.py: SHAPE_NAMES).
SHAPES_MAX_CLASSES = 16
# 2x2 max-pool stages of each VGG (conv layouts in claimbench/netshape.py).
VGG_POOLS = {"vgg11": 5, "vgg16": 5, "vgg19": 4}
BASICNET_CONVS = 7
# ImageNet BasicNet ends with avgpool(5, stride 4): its input must be at least 5x5.
IMAGENET_AVGPOOL = 5
# Seeds (train.seed, data.data_seed) are 0 <= seed < 2**32: what numpy's generators accept, and
# within torch.manual_seed's range, so every seed that validates also seeds both libraries.
SEED_LIMIT = 2 ** 32


class ConfigError(ValueError):
    """A bad value in a run config. ``path`` is the dotted field path, e.g. ``optim.name``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_number(value: Any, text: bool = True) -> int | float:
    """The one number parser for YAML values: ints and floats as they are, and numeric text
    (``1e-4`` typed as ``--set`` or ``run@value`` text). ``text=False`` for a value of a claim or
    table file, where numbers are written plainly (claimbench.spec.source reads ``1e-4`` as a number):
    there quoted text (``'10.5'``) is text, and refused. Raises ValueError for anything else,
    booleans and non-finite values included."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        written = value
        try:
            value = int(written.strip())
        except ValueError:
            try:
                value = float(written.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {written!r}") from None
        if not text:
            raise ValueError(f"expected a number, got the text {written!r}: write the number without quotes")
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        raise ValueError(f"expected a number within float range, got an integer of {len(str(abs(value)))} "
                         "digits") from None
    if not finite:
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def seed_problem(seed: int) -> str:
    return f"a seed is 0 <= seed < 2**32 (what numpy and torch both accept), got {seed}"


def unknown_name_message(kind: str, value: object, known: typing.Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(str(value), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {value!r}{hint}; known: {', '.join(known)}"


def unknown_keys(raw: Mapping, known: typing.Iterable[str], what: str = "key") -> list[tuple[str, str]]:
    """The one unknown-key check: ``(key, message with did-you-mean)`` for every key of ``raw``
    that is not in ``known``."""
    known = tuple(known)
    return [(str(k), unknown_name_message(what, str(k) if not isinstance(k, str) else k, known))
            for k in raw if k not in known]


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "basicnet"
    # Multiplier on the paper's conv widths (64,128,128,256,256,512,512 for BasicNet). Table 6
    # variants: 64-1x = (1.0, c1=None), 64-0.5x = (0.5, c1=64), 32-0.25x = (0.25, c1=32).
    width: float = 1.0
    c1_channels: int | None = None
    activation: str = "relu"
    negative_slope: float = 0.01
    bn_beta_init: float = 0.0
    # Figure 1 (the only place pooling is drawn) is lost from the text; 2x2 max-pool after
    # C1, C3 and C5 takes 32x32 CIFAR to 4x4 before global pooling. 1-based conv indices.
    pool_after: tuple[int, ...] = (1, 3, 5)
    # None: the paper's head for the dataset (CIFAR [256][C], TinyImageNet [512][256][200],
    # ImageNet avgpool(5,4) + [4096][2048][1000]; VGG-11/16 CIFAR [512][C]).
    fc_hidden: tuple[int, ...] | None = None
    # A plug-in architecture's own settings (``model.params``): an instance of the frozen
    # dataclass the plug-in declares (claimbench.plugins.ModelPlugin.fields). None for the built-ins,
    # and left out of the canonical JSON while None, so that no built-in run's key changes.
    params: Any = field(default=None, metadata={"omitted_when_default": True})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    # Side length the images are resized to; None keeps the native size.
    image_size: int | None = None
    # Synthetic shapes only: number of classes and training/test images (deterministic).
    num_classes: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    flip: bool = True
    # Seed of the synthetic generator / digits split; independent of the training seed so
    # that seeds of one experiment share the same data.
    data_seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    lr: float | None = None  # None: the paper's base LR for the optimizer (BASE_LR)
    regularizer: str = "l2"
    lam: float = 1e-4  # the paper's lambda; default is its headline setting (Adam, L2 1e-4)
    gamma_lr_scale: float = 1.0  # supplement Table 3
    beta_lr_scale: float = 1.0

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else BASE_LR[self.name]


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 40
    # Learning rate is divided by 10 at the start of every phase after the first.
    # unit=epochs counts epochs at reference_batch_size, so changing batch_size keeps the number
    # of iterations fixed (the paper's rule). CIFAR: 250+75 epochs = 406,250 steps at batch 40.
    unit: str = "epochs"
    phases: tuple[int, ...] = (250, 75)
    reference_batch_size: int = 40
    seed: int = 0
    # Snapshot every BN gamma/beta and the loss this many times over the run (Figure 2).
    snapshots: int = 20
    # Float32 arithmetic of convolutions and matmuls (PRECISIONS); only GPUs differ.
    precision: str = "fp32"
    # A registered trainer (claimbench.plugins.TrainerPlugin) that trains the run instead of claimbench's
    # loop, and its own settings (``train.params``: an instance of the frozen dataclass the
    # trainer declares). None: claimbench's loop. Both are left out of the canonical JSON while None,
    # so that no other run's key changes.
    trainer: str | None = field(default=None, metadata={"omitted_when_default": True})
    params: Any = field(default=None, metadata={"omitted_when_default": True})


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def total_steps(self, train_size: int) -> int:
        return sum(phase_steps(self.train, train_size))

    def summary(self) -> str:
        """A short human label, e.g. ``basicnet digits adam l2=1e-3 b40 s0``."""
        o, m, d, t = self.optim, self.model, self.data, self.train
        reg = "noreg" if o.regularizer == "none" or o.lam == 0 else f"{o.regularizer}={o.lam:g}"
        parts = [m.arch + ("" if m.width == 1 else f"x{m.width:g}"), d.dataset, o.name, reg]
        if m.activation != "relu":
            parts.append(f"leaky{m.negative_slope:g}")
        if m.bn_beta_init:
            parts.append(f"beta0={m.bn_beta_init:g}")
        if o.gamma_lr_scale != 1:
            parts.append(f"lr_gamma x{o.gamma_lr_scale:g}")
        if o.beta_lr_scale != 1:
            parts.append(f"lr_beta x{o.beta_lr_scale:g}")
        if t.precision != "fp32":
            parts.append(t.precision)
        if t.trainer is not None:
            parts.append(f"trainer={t.trainer}")
        parts += [f"b{t.batch_size}", f"s{t.seed}"]
        return " ".join(parts)


MAX_PHASE = 10 ** 9
MAX_SNAPSHOTS = 100_000


def phase_steps(train: TrainConfig, train_size: int) -> list[int]:
    """Iterations in each LR phase. Epochs are counted at the reference batch size."""
    if train.unit == "steps":
        return list(train.phases)
    per_epoch = math.ceil(train_size / train.reference_batch_size)
    return [p * per_epoch for p in train.phases]


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omitted_when_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, tuple):
        return [_to_plain(x) for x in obj]
    return obj


# --- parsing -------------------------------------------------------------------------------

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def run_config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig, raising ConfigError for the first bad field (``parse_run_config``
    collects them all)."""
    config, errors = parse_run_config(raw)
    if errors:
        raise errors[0]
    assert config is not None
    return config


def parse_run_config(raw: Any) -> tuple[RunConfig | None, list[ConfigError]]:
    """Parse and validate, returning every problem found rather than stopping at the first."""
    errors: list[ConfigError] = []
    if not isinstance(raw, Mapping):
        return None, [ConfigError("", f"expected a mapping, got {type(raw).__name__}")]
    errors += [ConfigError(key, message) for key, message in unknown_keys(raw, _SECTIONS, "section")]
    sections = {}
    params: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        value = raw.get(name) or {}
        if name in ("model", "train") and isinstance(value, Mapping) and "params" in value:
            # Typed by the plug-in the section names (model.arch, train.trainer): parsed once it is known.
            params[name] = value["params"]
            value = {k: v for k, v in value.items() if k != "params"}
        sections[name] = _parse_dataclass(cls, value, name, errors)
    if errors:
        return None, errors
    sections["model"] = _with_params(sections["model"], params.get("model"), errors)
    sections["train"] = _with_trainer_params(sections["train"], params.get("train"), errors)
    if errors:
        return None, errors
    config = RunConfig(**sections)
    errors.extend(_validate(config))
    return (None, errors) if errors else (config, [])


# --- plug-ins: names that are not built in -------------------------------------------------


def plugin_registry() -> types.ModuleType:
    """``claimbench.plugins``, imported when a config names an architecture or dataset that is not
    built in, or a trainer (it is in every run's training key, being imported by this module; a
    plug-in run's key also covers the plug-in's own code: claimbench.cache.keys.plugin_fingerprint)."""
    from claimbench import plugins

    return plugins


def _plugin(kind: str, name: str, path: str, errors: list[ConfigError]) -> Any:
    """The plug-in declaration named ``name``, or None with the problem added to ``errors``."""
    registry = plugin_registry()
    try:
        resolved = registry.resolve(kind, name)
    except registry.UnknownPlugin as e:
        errors.append(ConfigError(path, unknown_name_message(e.kind, name, e.known)))
        return None
    except registry.PluginError as e:
        errors.append(ConfigError(path, str(e)))
        return None
    return resolved.plugin


def _with_params(model: ModelConfig, params: Any, errors: list[ConfigError]) -> ModelConfig:
    """``model`` with its plug-in fields parsed from ``params`` (the raw ``model.params``)."""
    if model.arch in ARCHS:
        if params is not None:
            errors.append(ConfigError("model.params", f"applies to plug-in architectures only; {model.arch} is "
                                                      f"built in and takes the fields of the model section"))
        return model
    return _plugin_fields(model, "model", model.arch, "model.arch", params, "model.params",
                          f"the plug-in architecture {model.arch}", errors)


def _with_trainer_params(train: TrainConfig, params: Any, errors: list[ConfigError]) -> TrainConfig:
    """``train`` with its trainer's fields parsed from ``params`` (the raw ``train.params``)."""
    if train.trainer is None:
        if params is not None:
            errors.append(ConfigError("train.params", "applies to a registered trainer only; name one in train.trainer"))
        return train
    return _plugin_fields(train, "trainer", train.trainer, "train.trainer", params, "train.params",
                          f"the trainer {train.trainer}", errors)


def _plugin_fields(section: Any, kind: str, name: str, name_path: str, params: Any, params_path: str, what: str,
                   errors: list[ConfigError]) -> Any:
    """``section`` with ``params`` parsed as the typed fields the plug-in ``name`` declares."""
    plugin = _plugin(kind, name, name_path, errors)
    if plugin is None:
        return section
    if plugin.fields is None:
        if params:
            errors.append(ConfigError(params_path, f"{what} declares no fields"))
        return section
    parsed = _parse_dataclass(plugin.fields, {} if params is None else params, params_path, errors)
    return dataclasses.replace(section, params=parsed)


def plugins_used(config: RunConfig) -> tuple[tuple[str, str], ...]:
    """The plug-ins a run of ``config`` runs, as (kind, name): its architecture, dataset and trainer
    where they are not claimbench's own. The cache key covers exactly these (claimbench.cache.keys)."""
    used = []
    if config.model.arch not in ARCHS:
        used.append(("model", config.model.arch))
    if config.data.dataset not in DATASETS:
        used.append(("dataset", config.data.dataset))
    if config.train.trainer is not None:
        used.append(("trainer", config.train.trainer))
    return tuple(used)


def stackable(config: RunConfig) -> bool:
    """Whether runs of ``config`` may train stacked with the others of their ``group_key``: a
    built-in architecture, or a plug-in that declares ``stackable``, trained by claimbench's loop (a
    trainer's runs train one at a time)."""
    if config.train.trainer is not None:
        return False
    if config.model.arch in ARCHS:
        return True
    return bool(plugin_registry().model_plugin(config.model.arch).plugin.stackable)


def dataset_shape(name: str) -> tuple[int, int, int, int]:
    """(train images, image side, channels, classes) of a built-in (``DATASET_SHAPES``) or plug-in
    dataset, without loading it."""
    if name in DATASET_SHAPES:
        return DATASET_SHAPES[name]
    p = plugin_registry().dataset_plugin(name).plugin
    return p.train_size, p.image_size, p.channels, p.classes


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    return typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def _parse_dataclass(cls: type, raw: Any, path: str, errors: list[ConfigError]) -> Any:
    if not isinstance(raw, Mapping):
        errors.append(ConfigError(path, f"expected a mapping, got {type(raw).__name__}"))
        return cls()
    hints, names = _fields(cls)
    kwargs = {}
    errors += [ConfigError(f"{path}.{key}", message) for key, message in unknown_keys(raw, sorted(names))]
    for key, value in raw.items():
        if key not in names:
            continue
        try:
            kwargs[key] = _coerce(value, hints[key], f"{path}.{key}")
        except ConfigError as e:
            errors.append(e)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        try:
            return float(parse_number(value))
        except ValueError as e:
            raise ConfigError(path, str(e)) from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {path}")  # a bug in this module


def _validate(c: RunConfig) -> list[ConfigError]:
    errors = []

    def check(ok: bool, path: str, message: str) -> None:
        if not ok:
            errors.append(ConfigError(path, message))

    def name_in(value: str, known: tuple[str, ...], path: str, kind: str) -> None:
        if value not in known:  # the did-you-mean search only for a name that is wrong
            errors.append(ConfigError(path, unknown_name_message(kind, value, known)))

    # A name that is not built in was looked up as a plug-in architecture when the params were
    # parsed (a problem there stops before this); a dataset is looked up here.
    name_in(c.model.activation, ACTIVATIONS, "model.activation", "activation")
    if c.data.dataset not in DATASETS:
        _plugin("dataset", c.data.dataset, "data.dataset", errors)
    name_in(c.optim.name, OPTIMIZERS, "optim.name", "optimizer")
    name_in(c.optim.regularizer, REGULARIZERS, "optim.regularizer", "regularizer")
    name_in(c.train.unit, SCHEDULE_UNITS, "train.unit", "schedule unit")
    name_in(c.train.precision, PRECISIONS, "train.precision", "precision")
    check(c.model.width > 0, "model.width", f"must be > 0, got {c.model.width}")
    check(c.model.c1_channels is None or c.model.c1_channels > 0, "model.c1_channels", "must be > 0")
    check(c.model.negative_slope >= 0, "model.negative_slope", "must be >= 0")
    check(all(p >= 1 for p in c.model.pool_after), "model.pool_after", "conv indices are 1-based")
    check(c.model.fc_hidden is None or all(h > 0 for h in c.model.fc_hidden), "model.fc_hidden", "must be > 0")
    check(c.data.image_size is None or c.data.image_size >= 4, "data.image_size", "must be >= 4")
    for name in ("num_classes", "train_size", "test_size"):
        v = getattr(c.data, name)
        check(v is None or v >= 2, f"data.{name}", f"must be >= 2, got {v}")
    check(c.optim.lr is None or c.optim.lr > 0, "optim.lr", f"must be > 0, got {c.optim.lr}")
    # The paper: 1 > lambda >= 0 (weight decay multiplies by 1 - lambda).
    check(0 <= c.optim.lam < 1, "optim.lam", f"must satisfy 0 <= lam < 1, got {c.optim.lam}")
    check(c.optim.gamma_lr_scale > 0, "optim.gamma_lr_scale", "must be > 0")
    check(c.optim.beta_lr_scale > 0, "optim.beta_lr_scale", "must be > 0")
    check(c.train.batch_size >= 2, "train.batch_size", "must be >= 2 (BatchNorm needs a batch)")
    check(c.train.reference_batch_size >= 1, "train.reference_batch_size", "must be >= 1")
    check(len(c.train.phases) >= 1 and all(p > 0 for p in c.train.phases), "train.phases",
          f"must be a non-empty list of positive lengths, got {list(c.train.phases)}")
    # Bounds far above any real run that keep arithmetic on them in float range and loops over them
    # short: a 400-digit phase crashed the plan's cost estimate, 10**12 snapshots spun forever.
    check(all(p <= MAX_PHASE for p in c.train.phases), "train.phases", f"each length must be at most {MAX_PHASE}")
    check(c.train.snapshots >= 1, "train.snapshots", "must be >= 1")
    check(c.train.snapshots <= MAX_SNAPSHOTS, "train.snapshots",
          f"must be at most {MAX_SNAPSHOTS}, got {str(c.train.snapshots)[:30]}")
    for path, seed in (("train.seed", c.train.seed), ("data.data_seed", c.data.data_seed)):
        check(0 <= seed < SEED_LIMIT, path, seed_problem(seed))
    if c.model.arch not in ARCHS:
        # The built-in layout's fields mean nothing to a plug-in: a value there would be ignored.
        defaults = ModelConfig()
        for f in dataclasses.fields(ModelConfig):
            if f.name not in ("arch", "params") and getattr(c.model, f.name) != getattr(defaults, f.name):
                errors.append(ConfigError(f"model.{f.name}", f"applies to the built-in architectures; the plug-in "
                                                             f"{c.model.arch} takes its fields in model.params"))
    if not errors:
        errors.extend(_feasibility(c))
    return errors


def _feasibility(c: RunConfig) -> list[ConfigError]:
    """Values each valid alone that cannot work together (a torch error hours later otherwise)."""
    errors = []
    native_train, native_side, _, _ = dataset_shape(c.data.dataset)
    if c.data.dataset not in DATASETS and c.data.image_size is not None:
        errors.append(ConfigError("data.image_size", f"the plug-in dataset {c.data.dataset} has a fixed image size "
                                                     f"({native_side}); claimbench does not resize it"))
    if not c.data.dataset.startswith("shapes"):
        for name in ("num_classes", "train_size", "test_size"):
            if getattr(c.data, name) is not None:
                errors.append(ConfigError(f"data.{name}", f"applies to the synthetic shapes only; "
                                                          f"{c.data.dataset} has a fixed {name.replace('_', ' ')}"))
    elif c.data.num_classes is not None and c.data.num_classes > SHAPES_MAX_CLASSES:
        errors.append(ConfigError("data.num_classes", f"the synthetic shapes have {SHAPES_MAX_CLASSES} classes at most, "
                                                      f"got {c.data.num_classes}"))
    side = c.data.image_size or native_side
    if c.model.arch not in ARCHS:
        pools = 0  # a plug-in's layout is its own: nothing here knows what image size it needs
    elif c.model.arch == "basicnet":
        beyond = sorted(p for p in set(c.model.pool_after) if p > BASICNET_CONVS)
        if beyond:
            errors.append(ConfigError("model.pool_after", f"BasicNet has {BASICNET_CONVS} conv layers; no C{beyond[0]}"))
        pools = len(set(c.model.pool_after))
    else:
        pools = VGG_POOLS[c.model.arch]
    needed = 2 ** pools * (IMAGENET_AVGPOOL if c.data.dataset == "imagenet" and c.model.arch == "basicnet" else 1)
    if side < needed:
        where = "data.image_size" if c.data.image_size else ("model.pool_after" if c.model.arch == "basicnet" else "model.arch")
        errors.append(ConfigError(where, f"{pools} 2x2 pooling stages need images of at least {needed}x{needed}; "
                                         f"{c.data.dataset} images are {side}x{side}"))
    train_size = c.data.train_size or native_train
    if c.train.batch_size > train_size:
        errors.append(ConfigError("train.batch_size", f"batch {c.train.batch_size} is larger than the "
                                                      f"{train_size:,} training images of {c.data.dataset}"))
    return errors


# --- overrides -----------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dotted_to_nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """{"optim.lam": 1e-3} -> {"optim": {"lam": 1e-3}}."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "conflicts with another override")
        node[leaf] = value
    return nested


def has_path(tree: Any, dotted: str) -> bool:
    """Whether a nested mapping holds the dotted field (``x[2]`` addresses the list ``x``)."""
    node = tree
    for part in dotted.split("."):
        part = part.split("[", 1)[0]
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def group_key(config: RunConfig) -> str:
    """Runs with equal keys can train together in one stacked network (claimbench.train.loop): everything but the seed, the whole optimizer
    section (optimizer, learning rate and its BN scales, regularizer, lambda) and the BN beta
    initialisation."""
    d = config.to_dict()
    d["model"].pop("bn_beta_init")
    d.pop("optim")
    d["train"].pop("seed")
    return json.dumps(d, sort_keys=True)
