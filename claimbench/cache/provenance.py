"""What a stored run (or a recorded failure) says about the plug-ins that trained it.

In:  a RunConfig whose plug-ins resolve here (at training time); later, that record as JSON.
Out: ``plugin_provenance(config)``: per plug-in its kind, name, entry point, distribution and
     version, and the facts of its declaration that reading its runs needs (typed fields with
     their defaults, a model's ``stackable``, a dataset's shape, a trainer's metrics);
     ``stand_in(item)``: a declaration with those facts and no code, for reading runs where the
     plug-in is not installed (``claimbench.report.stored``).

A report says from this which plug-ins, at which versions, trained its runs. A stand-in validates
a config exactly as the plug-in it records did, since a stored run is found again by its config;
anything that would run its code (build, load, train) raises instead. No torch here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from claimbench.config import RunConfig, plugins_used
from claimbench.plugins import DatasetPlugin, ModelPlugin, TrainerPlugin, resolve

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
SHAPE = ("train_size", "image_size", "channels", "classes")


def plugin_provenance(config: RunConfig) -> list[dict]:
    out = []
    for kind, name in plugins_used(config):
        r = resolve(kind, name)
        p = r.plugin
        item: dict = {"kind": kind, "name": name, "entry_point": r.entry_point, "distribution": r.distribution,
                      "version": r.version}
        fields = getattr(p, "fields", None)
        if fields is not None:
            hints = typing.get_type_hints(fields)
            item["fields"] = [{"name": f.name, "type": type_text(hints[f.name]),
                               "default": _plain(f.default if f.default is not dataclasses.MISSING
                                                 else f.default_factory())} for f in dataclasses.fields(fields)]
        if kind == "model":
            item["stackable"] = bool(p.stackable)
        elif kind == "dataset":
            item["shape"] = {k: getattr(p, k) for k in SHAPE}
        else:
            item.update(metrics=list(p.metrics), resumable=bool(p.resumable))
        out.append(item)
    return out


def type_text(hint: Any) -> str:
    """A plug-in field's type (one ``claimbench.plugins.fields_problems`` accepts) as text: "int",
    "tuple[float, ...]", "int | None"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return f"{type_text(inner)} | None"
    if origin is tuple:
        return f"tuple[{args[0].__name__}, ...]"
    return hint.__name__


def field_type(text: str) -> Any:
    """The type ``type_text`` wrote."""
    if text.endswith(" | None"):
        return typing.Optional[field_type(text[: -len(" | None")])]
    if text.startswith("tuple[") and text.endswith(", ...]"):
        return tuple[_TYPES[text[len("tuple["):-len(", ...]")]], ...]
    return _TYPES[text]


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _not_here(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"the plug-in {name} is not installed here: its stored runs can be read, not trained")

    return call


def stand_in(item: dict) -> Any:
    """A declaration with the recorded facts of ``item`` (one of ``plugin_provenance``) and no
    code. KeyError, TypeError or ValueError: a record this code cannot read."""
    kind, name = item["kind"], item["name"]
    fields = None
    if item.get("fields") is not None:
        specs = []
        for f in item["fields"]:
            default = tuple(f["default"]) if isinstance(f["default"], list) else f["default"]
            specs.append((f["name"], field_type(f["type"]), dataclasses.field(default=default)))
        fields = dataclasses.make_dataclass(f"{name}_fields", specs, frozen=True)
    if kind == "model":
        return ModelPlugin(name=name, build=_not_here(name), fields=fields, stackable=bool(item.get("stackable")))
    if kind == "dataset":
        return DatasetPlugin(name=name, load=_not_here(name), **{k: int(item["shape"][k]) for k in SHAPE})
    if kind == "trainer":
        return TrainerPlugin(name=name, train=_not_here(name), fields=fields, metrics=tuple(item.get("metrics", ())),
                             resumable=bool(item.get("resumable")))
    raise ValueError(f"unknown plug-in kind {kind!r}")
