"""Run configs from YAML and dicts: parsing, validation, feasibility and their messages.

In:  a nested dict (from YAML, JSON or ``--set key=value`` overrides), or dotted overrides.
Out: ``run_config_from_dict`` (a ``claimbench.config.RunConfig``, or the first ``ConfigError``),
     ``parse_run_config`` (the config, or every problem found); the message helpers the claim,
     table and scope parsers share (``unknown_name_message`` with its did-you-mean,
     ``unknown_keys``, ``seed_problem``, ``parse_number``); the override helpers of
     ``claimbench.spec`` (``deep_merge``, ``dotted_to_nested``, ``has_path``).

Unknown keys, wrong types and out-of-range values are a ``ConfigError`` that names the field path
(``optim.name``) and, for unknown names, the known ones. A field of ``config.PLUGIN_FIELDS`` that
names a plug-in which cannot be used here (none installed provides it, it fails to load, or the
installed version does not declare the fields the config gives it) is a ``PluginUnavailable``, so
that a reader of stored configs (the cache) can tell "install the plug-in" from "damaged".

Training does not import this module (claimbench.train reads the typed records of
``claimbench.config`` only), so rewording a message here changes no training code.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Any, Mapping

from claimbench.config import (
    ACTIVATIONS,
    ARCHS,
    BASICNET_CONVS,
    DATASETS,
    IMAGENET_AVGPOOL,
    OPTIMIZERS,
    PLUGIN_FIELD,
    PLUGIN_FIELDS,
    PRECISIONS,
    REGULARIZERS,
    SCHEDULE_UNITS,
    SEED_LIMIT,
    SHAPES_MAX_CLASSES,
    VGG_POOLS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PluginField,
    RunConfig,
    TrainConfig,
    dataset_shape,
    plugin_registry,
)


class PluginUnavailable(ConfigError):
    """A field of ``config.PLUGIN_FIELDS`` names a plug-in that cannot be used here: none
    installed provides the name, the one installed fails to load, or its installed version does
    not declare the fields the config gives it (``path`` is then one of those fields)."""


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


# Upper bounds of train.phases and train.snapshots (why: in _validate).
MAX_PHASE = 10 ** 9
MAX_SNAPSHOTS = 100_000


# --- parsing -------------------------------------------------------------------------------

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}
# The sections with a ``params`` field holding a plug-in's own settings (model, train).
_PARAMS_SECTIONS = frozenset(f.params.split(".")[0] for f in PLUGIN_FIELDS if f.params)


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
        if name in _PARAMS_SECTIONS and isinstance(value, Mapping) and "params" in value:
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


def _plugin(field: PluginField, name: str, errors: list[ConfigError]) -> Any:
    """The declaration of the plug-in ``name`` that ``field`` names, or None with the problem
    (a ``PluginUnavailable``) added to ``errors``."""
    registry = plugin_registry()
    try:
        resolved = registry.resolve(field.kind, name)
    except registry.UnknownPlugin as e:
        errors.append(PluginUnavailable(field.path, unknown_name_message(e.kind, name, e.known)))
        return None
    except registry.PluginError as e:
        errors.append(PluginUnavailable(field.path, str(e)))
        return None
    return resolved.plugin


def _with_params(model: ModelConfig, params: Any, errors: list[ConfigError]) -> ModelConfig:
    """``model`` with its plug-in fields parsed from ``params`` (the raw ``model.params``)."""
    field = PLUGIN_FIELD["model"]
    if model.arch in field.built_in:
        if params is not None:
            errors.append(ConfigError(field.params, f"applies to plug-in architectures only; {model.arch} is "
                                                    f"built in and takes the fields of the model section"))
        return model
    return _plugin_fields(model, field, model.arch, params, f"the plug-in architecture {model.arch}", errors)


def _with_trainer_params(train: TrainConfig, params: Any, errors: list[ConfigError]) -> TrainConfig:
    """``train`` with its trainer's fields parsed from ``params`` (the raw ``train.params``)."""
    field = PLUGIN_FIELD["trainer"]
    if train.trainer is None:
        if params is not None:
            errors.append(ConfigError(field.params, f"applies to a registered trainer only; name one in {field.path}"))
        return train
    return _plugin_fields(train, field, train.trainer, params, f"the trainer {train.trainer}", errors)


def _plugin_fields(section: Any, field: PluginField, name: str, params: Any, what: str,
                   errors: list[ConfigError]) -> Any:
    """``section`` with ``params`` parsed as the typed fields the plug-in ``name`` declares. A
    field the plug-in does not declare, or of another type, is a ``PluginUnavailable``: the
    installed version of the plug-in is not the one the config was written for, or the config
    has a typo (the message says which field either way)."""
    plugin = _plugin(field, name, errors)
    if plugin is None:
        return section
    if plugin.fields is None:
        if params:
            errors.append(PluginUnavailable(field.params, f"{what} declares no fields"))
        return section
    problems: list[ConfigError] = []
    parsed = _parse_dataclass(plugin.fields, {} if params is None else params, field.params, problems)
    errors += [PluginUnavailable(e.path, e.message) for e in problems]
    return dataclasses.replace(section, params=parsed)


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
    if PLUGIN_FIELD["dataset"].names_plugin(c):
        _plugin(PLUGIN_FIELD["dataset"], c.data.dataset, errors)
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
