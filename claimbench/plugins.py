"""Models, datasets and trainers that are not part of claimbench: the plug-in registry.

In:  the name a run config gives (``model.arch: mlp``, ``data.dataset: skdigits``,
     ``train.trainer: smoothsgd``) that is not a built-in, and the Python entry points installed
     packages declare in the groups ``claimbench.models``, ``claimbench.datasets`` and ``claimbench.trainers``
     (``[project.entry-points."claimbench.models"]`` in a pyproject.toml: ``mlp = "mypkg.declare:mlp"``).
Out: ``model_plugin(name)`` / ``dataset_plugin(name)`` / ``trainer_plugin(name)``: a ``Resolved``
     plug-in, i.e. its declaration (``ModelPlugin`` / ``DatasetPlugin`` / ``TrainerPlugin``) with
     where it came from (module, distribution, version), which the cache key needs;
     ``model_names()`` / ``dataset_names()`` / ``trainer_names()``; ``TrainerRun`` and
     ``TrainerResult``, what a trainer is handed and returns.

Only a name a config uses is loaded (``EntryPoint.load``), so an installed plug-in that no config
names costs nothing and cannot break anything. Entry point *names* are read for every lookup, so
a plug-in that takes a built-in's name, or a name two distributions both declare, is an error
naming both whenever a plug-in is looked up; built-in names never reach this module.

No torch here: a declaration module should import torch only inside ``build`` (the example in
examples/plugin-example/ does), so validating and planning a plug-in run loads no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from claimbench.names import ARCHS, DATASETS

MODEL_GROUP = "claimbench.models"
DATASET_GROUP = "claimbench.datasets"
TRAINER_GROUP = "claimbench.trainers"
# A trainer's metric name: what a claim writes after ``metric:`` (no spaces, no brackets).
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class PluginError(ValueError):
    """A plug-in that cannot be used: not installed, badly declared, or clashing with another."""


@dataclass(frozen=True)
class ModelPlugin:
    """A network architecture from outside claimbench.

    ``build(in_channels, image_size, num_classes, **fields) -> torch.nn.Module``: the network for
    images (N, in_channels, image_size, image_size) and ``num_classes`` logits; it initialises its
    own weights (the run's seed is set just before). Its features, for every sparsity metric, are
    its ``nn.BatchNorm2d`` channels, each BatchNorm registered right before its ``nn.ReLU`` or
    ``nn.LeakyReLU`` module (``claimbench.train.models.PluginNet`` checks that when it builds).
    ``fields``: a frozen dataclass of the plug-in's typed settings, every one with a default,
    given in a config as ``model.params`` and validated as strictly as claimbench's own fields.
    ``flops_per_image(in_channels, image_size, num_classes, fields)``: forward FLOPs of one
    image, for ``claimbench plan``'s estimate (without it the plan counts steps only).

    ``stackable``: whether runs may train fused into one network, as claimbench's own
    ``ConvNet(spec, runs=K)`` (``claimbench.train.models``). False: each run trains alone and
    ``build`` is called without ``runs``. True: ``build(..., runs=K, **fields)`` must return K
    independent networks in one: every parameter and buffer has K times the leading dimension of
    the single network's (run k's part being rows k*n..(k+1)*n, ``run_view``), 0-dim buffers
    shared; input (B, K * in_channels, H, W), run k's images in channels k*C..(k+1)*C; output
    (B, K * num_classes), run k's logits in columns k*classes..(k+1)*classes; nothing mixes
    between runs (no BatchNorm over runs: per-channel BatchNorm is per run). ``runs=1`` is the
    plain network, with the same state_dict keys. claimbench checks the shapes when it stacks (an
    error naming the plug-in otherwise); a stacked run ends as it would alone, within float
    rounding, if its forward draws no random numbers (dropout would draw them for all runs
    at once)."""

    name: str
    build: Callable[..., Any]
    fields: type | None = None
    stackable: bool = False
    flops_per_image: Callable[..., float] | None = None


@dataclass(frozen=True)
class DatasetPlugin:
    """A dataset from outside claimbench. ``load(root, seed)`` returns an object or mapping with
    ``train_x``, ``test_x`` (float images (N, channels, image_size, image_size)) and ``train_y``,
    ``test_y`` (integer labels in 0..classes-1), as tensors or numpy arrays; claimbench normalises the
    images per channel with the training split's statistics, as it does its own data. ``root`` is
    the data root (``$CLAIMBENCH_DATA``), ``seed`` the run's ``data.data_seed``. The shape facts are
    what validation and planning use without loading it; the loaded data must match them."""

    name: str
    load: Callable[..., Any]
    train_size: int
    image_size: int
    channels: int
    classes: int


@dataclass(frozen=True)
class TrainerPlugin:
    """A whole training function from outside claimbench, for runs whose config names it
    (``train.trainer``). claimbench still plans, seeds, caches, measures, checks and reports the run;
    the trainer replaces only claimbench's loop.

    ``train(run: TrainerRun) -> TrainerResult``. The network is the config's (``model``: a
    built-in or plug-in architecture), built and initialised by claimbench under the run's seed and
    handed over as ``run.model``; the trainer trains it as it likes and returns its weights, which
    claimbench loads into a fresh build of that network and measures like any run (every metric of
    claimbench's catalogue), so the trainer cannot return another network. ``fields``: a frozen
    dataclass of the trainer's typed settings (``train.params``), validated as strictly as
    ``model.params``. ``metrics``: the names of the numbers the trainer reports beyond claimbench's
    (claims may name them; a name of claimbench's own metrics is refused); it must report exactly
    these, each a finite real number, or the run fails (nothing is stored). The config's other
    sections (``optim``, ``train.batch_size``, ``train.phases``...) are the trainer's to read; all
    of them are part of the run's cache key, read or not.

    ``resumable``: the trainer saves its state to ``run.checkpoint`` (a file path) as it goes and
    resumes from that file when it exists at the start. A trainer that is not resumable gets
    ``run.checkpoint = None``, and an interrupted run starts over. A trainer's runs never stack:
    each trains alone."""

    name: str
    train: Callable[..., Any]
    fields: type | None = None
    metrics: tuple[str, ...] = ()
    resumable: bool = False


@dataclass(frozen=True)
class TrainerRun:
    """What a trainer is handed for one run. claimbench has seeded torch, ``random`` and numpy's global
    generator with ``train.seed`` and then built ``model``, so a trainer that draws from them is
    repeatable; on a CPU the same config gives the same weights.

    ``config``: the ``claimbench.config.RunConfig``; ``fields``: the trainer's ``train.params`` (an
    instance of its ``fields`` dataclass, None without fields); ``data``: a
    ``claimbench.data.base.ImageData`` on ``device`` (``train_x``, ``train_y``, ``test_x``, ``test_y``,
    images normalised per channel); ``device``: a ``torch.device``; ``model``: the network, on
    ``device``, in training mode; ``total_steps``: the steps ``train.phases`` plan for, which
    ``claimbench plan`` prices; ``checkpoint``: where a resumable trainer keeps its state (None for
    the others); ``report(step)``: call it now and then with the steps done, for progress."""

    config: Any
    fields: Any
    data: Any
    device: Any
    model: Any
    total_steps: int
    checkpoint: Path | None
    report: Callable[[int], None]


@dataclass(frozen=True)
class TrainerResult:
    """What a trainer returns. ``state_dict``: the trained network's weights (the keys of
    ``run.model.state_dict()``); ``metrics``: name -> finite number, exactly the trainer's
    declared ``metrics``; ``history``: anything JSON can hold (numbers finite), stored with the
    run; ``steps``: the steps taken (None: ``run.total_steps``)."""

    state_dict: Mapping[str, Any]
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    history: Mapping[str, Any] | None = None
    steps: int | None = None


@dataclass(frozen=True)
class Resolved:
    """A loaded plug-in and where it came from: the module its entry point names, the folder of
    that module's top-level package (a module that is no package: its file), and the distribution
    that declared it."""

    kind: str  # "model", "dataset" or "trainer"
    name: str
    plugin: Any  # ModelPlugin | DatasetPlugin | TrainerPlugin
    entry_point: str  # "mypkg.declare:mlp"
    module: str
    source: Path
    distribution: str
    version: str


# kind -> (entry point group, built-in names, what it is called in messages, declaration class).
# claimbench has no trainer of its own but its loop, which no name selects.
_KINDS = {"model": (MODEL_GROUP, ARCHS, "architecture", ModelPlugin),
          "dataset": (DATASET_GROUP, DATASETS, "dataset", DatasetPlugin),
          "trainer": (TRAINER_GROUP, (), "trainer", TrainerPlugin)}
_DECLARATIONS = tuple(cls for _group, _builtins, _what, cls in _KINDS.values())


# Plug-ins named as "module:attribute" rather than installed with entry points: a claims folder's
# claimbench.yaml adds its own here (claimbench.spec.folder), and worker processes inherit the variable.
NAMED_ENV = "CLAIMBENCH_PLUGINS"


def add_named(values: tuple[str, ...] | list[str]) -> None:
    """Make the plug-ins named "module:attribute" known to this process and to those it starts."""
    current = [v for v in os.environ.get(NAMED_ENV, "").split(",") if v]
    os.environ[NAMED_ENV] = ",".join(dict.fromkeys([*current, *values]))


def _named(kind: str) -> list[importlib.metadata.EntryPoint]:
    """The "module:attribute" plug-ins of ``kind``, as entry points (without a distribution)."""
    group, _builtins, _what, cls = _KINDS[kind]
    found = []
    for value in (v.strip() for v in os.environ.get(NAMED_ENV, "").split(",")):
        if not value:
            continue
        module, _, attribute = value.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attribute)
        except Exception as e:  # noqa: BLE001  (any error of the user's module is reported, named)
            raise PluginError(f"plug-in {value} (named in ${NAMED_ENV} or a claims folder's claimbench.yaml): loading it "
                              f"failed: {type(e).__name__}: {e}") from e
        if isinstance(obj, _DECLARATIONS) and not isinstance(obj, cls):
            continue  # a plug-in of another kind
        if not isinstance(obj, cls):
            raise PluginError(f"plug-in {value}: names a {type(obj).__name__}, expected a claimbench.plugins.ModelPlugin, "
                              "DatasetPlugin or TrainerPlugin")
        found.append(importlib.metadata.EntryPoint(obj.name, value, group))
    return found


def _entry_points(kind: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The group's entry points by name (installed ones, then those named "module:attribute"),
    refusing names of built-ins and names declared twice."""
    group, builtins, what, _ = _KINDS[kind]
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in [*importlib.metadata.entry_points(group=group), *_named(kind)]:
        if ep.name in builtins:
            raise PluginError(f"the plug-in {what} {ep.name!r} ({ep.value}, {_dist_label(ep)}, entry point group "
                              f"{group}) has the name of claimbench's built-in {what} {ep.name!r}: rename the plug-in")
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise PluginError(f"two plug-in {what}s are named {ep.name!r}: {other.value} ({_dist_label(other)}) "
                              f"and {ep.value} ({_dist_label(ep)}); uninstall or rename one")
        found[ep.name] = ep
    return found


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"distribution {dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_entry_points("model")))


def dataset_names() -> tuple[str, ...]:
    return tuple(sorted(_entry_points("dataset")))


def trainer_names() -> tuple[str, ...]:
    return tuple(sorted(_entry_points("trainer")))


def names(kind: str) -> tuple[str, ...]:
    return tuple(sorted(_entry_points(kind)))


def model_plugin(name: str) -> Resolved:
    return _resolve("model", name)


def dataset_plugin(name: str) -> Resolved:
    return _resolve("dataset", name)


def trainer_plugin(name: str) -> Resolved:
    return _resolve("trainer", name)


def resolve(kind: str, name: str) -> Resolved:
    """The plug-in of ``kind`` ("model", "dataset" or "trainer") named ``name``."""
    if kind not in _KINDS:
        raise ValueError(f"no plug-in kind {kind!r}; the kinds are {', '.join(_KINDS)}")
    return _resolve(kind, name)


class UnknownPlugin(PluginError):
    """No built-in and no installed plug-in has the name; ``known`` lists both."""

    def __init__(self, kind: str, name: str, known: tuple[str, ...]):
        super().__init__(f"no {kind} {name!r}")
        self.kind, self.name, self.known = kind, name, known


def _resolve(kind: str, name: str) -> Resolved:
    return _resolve_with(kind, name, os.environ.get(NAMED_ENV, ""))


@functools.lru_cache(maxsize=None)
def _resolve_with(kind: str, name: str, named: str) -> Resolved:
    """``_resolve`` for one value of the named plug-ins (a folder that adds some resolves anew)."""
    group, builtins, what, cls = _KINDS[kind]
    eps = _entry_points(kind)
    ep = eps.get(name)
    if ep is None:
        raise UnknownPlugin(what, name, tuple(builtins) + tuple(sorted(eps)))
    where = f"plug-in {what} {name!r} ({ep.value}, {_dist_label(ep)})"
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001  (any error of the user's module is reported, named)
        raise PluginError(f"{where}: loading it failed: {type(e).__name__}: {e}") from e
    if not isinstance(obj, cls):
        raise PluginError(f"{where}: the entry point names a {type(obj).__name__}, expected a claimbench.plugins.{cls.__name__}")
    if obj.name != name:
        raise PluginError(f"{where}: the declaration is named {obj.name!r}; the entry point and the declaration "
                          f"must have one name")
    problems = {"model": _model_problems, "dataset": _dataset_problems, "trainer": _trainer_problems}[kind](obj)
    if problems:
        raise PluginError(f"{where}: " + "; ".join(problems))
    dist = getattr(ep, "dist", None)
    if dist is None:  # named "module:attribute": its package's version where it has one
        top = ep.module.split(".")[0]
        try:
            version = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            version = "unversioned"
        return Resolved(kind, name, obj, ep.value, ep.module, _source(ep.module), top, version)
    return Resolved(kind, name, obj, ep.value, ep.module, _source(ep.module), dist.metadata["Name"], dist.version)


def _source(module: str) -> Path:
    """The folder of ``module``'s top-level package, or the file of a top-level module."""
    top = sys.modules.get(module.split(".")[0])
    file = getattr(top, "__file__", None)
    if file is None:
        raise PluginError(f"module {module}: its source file is unknown (a namespace package?), so its code "
                          f"cannot be part of the cache key")
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def _model_problems(p: ModelPlugin) -> list[str]:
    problems = []
    if not callable(p.build):
        problems.append("build is not callable")
    if not isinstance(p.stackable, bool):
        problems.append(f"stackable must be True or False, got {p.stackable!r}")
    if p.flops_per_image is not None and not callable(p.flops_per_image):
        problems.append("flops_per_image is not callable")
    if p.fields is not None:
        problems += fields_problems(p.fields)
    return problems


def _trainer_problems(p: TrainerPlugin) -> list[str]:
    problems = [] if callable(p.train) else ["train is not callable"]
    if not isinstance(p.resumable, bool):
        problems.append(f"resumable must be True or False, got {p.resumable!r}")
    if not isinstance(p.metrics, tuple):
        problems.append(f"metrics must be a tuple of names, got {p.metrics!r}")
    else:
        for m in p.metrics:
            if not isinstance(m, str) or not _METRIC_NAME.match(m):
                problems.append(f"metric name {m!r} is not a name a claim can write (a letter, then letters, "
                                f"digits, '_', '.' or '-')")
        seen = [m for i, m in enumerate(p.metrics) if m in p.metrics[:i]]
        if seen:
            problems.append(f"metrics names {sorted(set(map(str, seen)))} twice")
    if p.fields is not None:
        problems += fields_problems(p.fields)
    return problems


def _dataset_problems(p: DatasetPlugin) -> list[str]:
    problems = [] if callable(p.load) else ["load is not callable"]
    for name, least in (("train_size", 2), ("image_size", 1), ("channels", 1), ("classes", 2)):
        value = getattr(p, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{name} must be an integer >= {least}, got {value!r}")
    return problems


# The field types a config can hold (those ``claimbench.config`` parses): what a plug-in's fields use.
_SCALARS = (int, float, str, bool)


def _supported(hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return len(inner) == 1 and type(None) in args and _supported(inner[0])
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS
    return hint in _SCALARS


def fields_problems(cls: Any) -> list[str]:
    """Why ``cls`` cannot be a plug-in's typed fields (empty: it can)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return [f"fields must be a dataclass, got {cls!r}"]
    if not cls.__dataclass_params__.frozen:
        return [f"fields {cls.__name__} must be a frozen dataclass (@dataclass(frozen=True))"]
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # noqa: BLE001
        return [f"fields {cls.__name__}: its type hints cannot be read ({e})"]
    problems = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"field {f.name} of {cls.__name__} has no default (every field needs one)")
        if not _supported(hints[f.name]):
            problems.append(f"field {f.name} of {cls.__name__} has the type {hints[f.name]}; a config field is "
                            f"int, float, str, bool, tuple[T, ...] of those, or T | None")
    return problems


def field_values(params: Any) -> dict[str, Any]:
    """A plug-in's fields as keyword arguments (of a model's ``build``; ``{}`` for None)."""
    if params is None:
        return {}
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
