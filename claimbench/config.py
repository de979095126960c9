"""Typed, frozen description of one training run of the paper: what training reads.

In:  field values (a ``RunConfig`` is built by ``claimbench.runconfig`` from a nested dict: YAML,
     JSON or ``--set key=value`` overrides; or directly, with the defaults).
Out: ``RunConfig``, a frozen dataclass tree whose canonical JSON is what the cache key hashes; the
     constants training and validation share (the built-in names, the paper's base learning rates,
     the datasets' shapes); ``phase_steps``, ``group_key``, ``dataset_shape`` and the small
     predicates ``stackable`` and ``plugins_used``; ``PLUGIN_FIELDS``, the one list of the fields
     that name a plug-in.

Every field has the paper's value as its default where the paper states one; odd values carry a
one-line reason. Parsing, validation and their messages live in ``claimbench.runconfig``, which
training does not import. Nothing here touches torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass, field
from typing import Any

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
    # Flush float32 denormals (magnitudes below 1.2e-38) to zero in the CPU's arithmetic. A
    # switched-off filter's weights and optimizer state decay through that range, where a CPU
    # computes many times slower (measured on the smoke tier: an Adagrad run 105 s -> 34 s, an
    # Adam run 42 -> 36 s). Off by default: the paper's arithmetic, and CUDA's, keep them. The
    # numbers differ (a few bits of a switched-off filter, which a long run amplifies like a
    # seed would), so it is part of the config and of the key; left out of the canonical JSON
    # while False, so no other run's key changes.
    flush_denormals: bool = field(default=False, metadata={"omitted_when_default": True})


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
        parts = [m.arch + ("" if m.width == 1 else f"x{m.width:g}"), d.dataset, o.name]
        if o.lr is not None and o.lr != BASE_LR.get(o.name):
            parts.append(f"lr={o.lr:g}")
        parts.append(reg)
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
        if t.flush_denormals:
            parts.append("ftz")
        if t.trainer is not None:
            parts.append(f"trainer={t.trainer}")
        parts += [f"b{t.batch_size}", f"s{t.seed}"]
        return " ".join(parts)


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


# --- plug-ins: names that are not built in -------------------------------------------------


@dataclass(frozen=True)
class PluginField:
    """A config field that names a plug-in wherever it names nothing built in: the one list of
    them (``PLUGIN_FIELDS``) is what parsing looks plug-ins up by (claimbench.runconfig), what a run's
    key covers (``plugins_used``) and so what the cache keeps, unread, when the plug-in is missing."""

    kind: str  # the plug-in registry's kind (claimbench.plugins.resolve): model, dataset or trainer
    path: str  # the dotted field that names it, e.g. ``model.arch``
    built_in: tuple[str, ...]  # the names claimbench itself provides there (None, too, is claimbench's own)
    params: str | None  # the dotted field of the plug-in's own settings; None: it takes none there

    def name(self, config: RunConfig) -> str | None:
        """The name ``config`` gives this field."""
        section, name = self.path.split(".")
        return getattr(getattr(config, section), name)

    def names_plugin(self, config: RunConfig) -> bool:
        value = self.name(config)
        return value is not None and value not in self.built_in


PLUGIN_FIELDS = (
    PluginField("model", "model.arch", ARCHS, "model.params"),
    PluginField("dataset", "data.dataset", DATASETS, None),
    PluginField("trainer", "train.trainer", (), "train.params"),
)
PLUGIN_FIELD = {f.kind: f for f in PLUGIN_FIELDS}


def plugin_registry() -> types.ModuleType:
    """``claimbench.plugins``, imported when a config names an architecture or dataset that is not
    built in, or a trainer (it is in every run's training key, being imported by this module; a
    plug-in run's key also covers the plug-in's own code: claimbench.cache.keys.plugin_identity)."""
    from claimbench import plugins

    return plugins


def plugins_used(config: RunConfig) -> tuple[tuple[str, str], ...]:
    """The plug-ins a run of ``config`` runs, as (kind, name): its architecture, dataset and trainer
    where they are not claimbench's own. The cache key covers exactly these (claimbench.cache.keys)."""
    return tuple((f.kind, f.name(config)) for f in PLUGIN_FIELDS if f.names_plugin(config))


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


def group_key(config: RunConfig) -> str:
    """Runs with equal keys can train together in one stacked network (claimbench.train.loop): everything but the seed, the whole optimizer
    section (optimizer, learning rate and its BN scales, regularizer, lambda) and the BN beta
    initialisation."""
    d = config.to_dict()
    d["model"].pop("bn_beta_init")
    d.pop("optim")
    d["train"].pop("seed")
    return json.dumps(d, sort_keys=True)
