"""The schema of a claim's checks: typed parameters per check kind, and selections.

In:  a check's YAML mapping (``{kind: greater, metric: sparsity_gamma, a: adam, b: sgd, margin: 15}``)
     and the tier's run groups.
Out: a frozen parameter record per kind (``CompareParams``, ``EqualParams``, ...) or the list of
     problems, each ``(field, message)``. The records are the one definition of each kind's
     parameters: ``claimbench validate`` builds them and ``claimbench.check.kinds`` evaluates them, so a
     parameter the schema does not know (``margn: 15``) is an error, never a silent default.
     ``CHECK_PARAMS`` is the one list of check kinds; the evaluators register against it.

A *selection* names what to measure on which runs:
    adam_l2                       a run group without axis (every seed)
    lam_sweep@0.001               one point of a group with an axis
    {run: adam_l2, metric: layer_sparsity_gamma, layers: [6, 7]}   mean over C6, C7
    {run: adam_l2, metric: beta, layer: 6, stat: fraction_below, threshold: 0}
A selection without ``metric`` uses the check's ``metric``. Metric names come from the catalogue
(``claimbench.spec.metrics``) of the group's producer (a training run or a simulation), and the
metric's shape decides which of layers/layer/stat the selection needs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from claimbench.runconfig import parse_number, unknown_keys, unknown_name_message
from claimbench.spec.metrics import PER_FEATURE, PER_LAYER, SCALAR, Metric, metric_catalogue, missing_layers, unrecorded

# A per-feature list -> one number (percentages are 0..100).
STATS: dict[str, Callable[[Any, float], float]] = {
    "fraction_below": lambda v, t: float(np.mean(np.asarray(v) < t)) * 100,
    "fraction_above": lambda v, t: float(np.mean(np.asarray(v) > t)) * 100,
    "fraction_at_most": lambda v, t: float(np.mean(np.asarray(v) <= t)) * 100,
    "mean": lambda v, t: float(np.mean(v)),
}
SELECTION_KEYS = ("run", "at", "metric", "layers", "layer", "stat", "threshold", "label")


class SchemaError(ValueError):
    """One bad value; ``field`` is relative to the check (``a.layers``), '' for the check itself."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


# --- selections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    run: str
    at: Any
    metric: str
    layers: tuple[int, ...] | None = None
    layer: int | None = None
    stat: str | None = None
    threshold: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", _label(self))


def _label(s: Selection) -> str:
    out = f"{s.run}@{s.at}" if s.at is not None else s.run
    out += f" {s.metric}"
    if s.layers:
        out += "[C" + ",C".join(map(str, s.layers)) + "]"
    if s.layer:
        out += f"[C{s.layer}]"
    if s.stat:
        out += f" {s.stat}"
    return out


def split_run(text: str) -> tuple[str, Any]:
    """``lam@1.0e-4`` -> ("lam", 0.0001); ``adam`` -> ("adam", None)."""
    run, sep, at = text.partition("@")
    return run, (_axis_value(at) if sep else None)


def _axis_value(text: Any) -> Any:
    try:
        return parse_number(text)
    except ValueError:
        return text  # an axis over names, e.g. data.dataset


def parse_selection(raw: Any, default_metric: str | None) -> Selection:
    if isinstance(raw, str):
        raw = {"run": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("run"), str):
        raise SchemaError("", "a selection is a run name, 'run@axis_value' or a mapping with run")
    for key, message in unknown_keys(raw, SELECTION_KEYS, "selection key")[:1]:
        raise SchemaError(key, message)
    run, at = split_run(raw["run"])
    if raw.get("at") is not None:
        if at is not None:
            raise SchemaError("at", "give the axis value either as run@value or as at, not both")
        at = _axis_value(raw["at"])
    metric = raw.get("metric", default_metric)
    if not isinstance(metric, str) or not metric:
        raise SchemaError("metric", "no metric: give one on the check or the selection")
    stat = raw.get("stat")
    if stat is not None and (not isinstance(stat, str) or stat not in STATS):
        raise SchemaError("stat", unknown_name_message("stat", stat, STATS))
    layers = raw.get("layers")
    if layers is not None:
        layers = tuple(_layer_list(layers, "layers"))
    layer = raw.get("layer")
    if layer is not None:
        layer = _layer_number(layer, "layer")
    try:
        threshold = float(parse_number(raw.get("threshold", 0.0)))
    except ValueError as e:
        raise SchemaError("threshold", str(e)) from None
    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        raise SchemaError("label", f"expected text, got {label!r}")
    return Selection(run, at, metric, layers, layer, stat, threshold, label or "")


def validate_selection(sel: Selection, groups: dict) -> list[tuple[str, str]]:
    """Problems of a parsed selection against the tier's groups: run, axis point, metric, shape."""
    if sel.run not in groups:
        return [("run", unknown_name_message("run", sel.run, groups))]
    group = groups[sel.run]
    problems = []
    if sel.at is not None:
        if group.axis is None:
            problems.append(("run", f"run {sel.run!r} has no axis, so '@{sel.at}' selects nothing"))
        elif not any(same_value(p.axis_value, sel.at) for p in group.points):
            problems.append(("run", f"run {sel.run!r} has no point {group.axis}={sel.at}; "
                                    f"its values: {[p.axis_value for p in group.points]}"))
    elif group.axis is not None and len(group.points) > 1:
        problems.append(("run", f"run {sel.run!r} has an axis ({group.axis}); select a point with '{sel.run}@<value>'"))
    catalogue = group_catalogue(group)
    if sel.metric not in catalogue and group.broken:
        # A group whose configs are broken (reported already) may name a trainer, whose metrics
        # are then unknown: the metric is not judged rather than called unknown.
        return problems
    if sel.metric not in catalogue:
        producer = "a simulation" if group.simulate is not None else "a training run"
        problems.append(("metric", unknown_name_message(f"metric of {producer}", sel.metric, catalogue)))
        return problems
    problems += _shape_problems(catalogue[sel.metric], sel)
    problems += [p for p in _config_problems(catalogue[sel.metric], sel, group) if p not in problems]
    return problems


def group_catalogue(group) -> dict[str, Metric]:  # noqa: ANN001  (a claimbench.spec.run_groups.RunGroup)
    """The metrics a run group's runs or simulation may record: claimbench's, and those of the
    trainers its runs name (judged per point by ``_config_problems``)."""
    return metric_catalogue(group.simulate is not None, (p.configs[0] for p in group.points if p.configs))


def _config_problems(metric: Metric, sel: Selection, group) -> list[tuple[str, str]]:
    """What the selected runs' configurations cannot record: a metric (top-5 error on 10
    classes) or a conv layer beyond the network's. Judged on each selected point's config (a
    group whose configs are broken has none, and is reported already)."""
    if group.simulate is not None:
        return []
    layers = sel.layers or ((sel.layer,) if sel.layer else ())
    problems: list[tuple[str, str]] = []
    for point in group.points:
        if not point.configs or (sel.at is not None and not same_value(point.axis_value, sel.at)):
            continue
        for fld, why in (("metric", unrecorded(metric, point.configs[0])),
                         ("layers" if sel.layers else "layer", missing_layers(layers, point.configs[0]))):
            if why and (fld, why) not in problems:
                problems.append((fld, why))
    return problems


def _shape_problems(metric: Metric, sel: Selection) -> list[tuple[str, str]]:
    if metric.shape == SCALAR and (sel.layers or sel.layer or sel.stat):
        return [("metric", f"{metric.name} is one number per run; layers/layer/stat do not apply")]
    if metric.shape == PER_LAYER:
        if not sel.layers and not sel.layer:
            return [("metric", f"{metric.name} is a per-layer list; select layers: [..] or layer: N")]
        if sel.stat:
            return [("stat", f"{metric.name} is a per-layer list; a stat applies to per-feature metrics")]
    if metric.shape == PER_FEATURE and (sel.layer is None or sel.stat is None):
        return [("metric", f"{metric.name} is a per-feature list per layer; select layer: N and a stat "
                           f"({', '.join(STATS)})")]
    return []


def selection_range(sel: Selection, groups: dict) -> tuple[float | None, float | None]:
    """Every value the selection can take (for finding checks that cannot fail)."""
    metric = group_catalogue(groups[sel.run])[sel.metric]
    if sel.stat and sel.stat.startswith("fraction"):
        return 0.0, 100.0
    return metric.lo, metric.hi


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0) or a == b
    return a == b


def _layer_number(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(name, f"expected a 1-based conv layer number, got {value!r}")
    return value


def _layer_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SchemaError(name, f"expected a non-empty list of 1-based conv layer numbers, got {value!r}")
    return [_layer_number(v, name) for v in value]


# --- parameter parsers ---------------------------------------------------------------------


def _number(v: Any) -> float:
    """A number parameter of a check (a margin, a tolerance): as written in the claim file, so
    quoted text is refused (``'10.5'``)."""
    return float(parse_number(v, text=False))


def _non_negative(v: Any) -> float:
    x = _number(v)
    if x < 0:
        raise ValueError(f"expected a number >= 0, got {v!r}")
    return x


def _probability(v: Any) -> float:
    x = _number(v)
    if not 0 < x < 1:
        raise ValueError(f"expected a number between 0 and 1, got {v!r}")
    return x


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected non-empty text, got {v!r}")
    return v.strip()


def _direction(v: Any) -> str:
    if v not in ("increasing", "decreasing"):
        raise ValueError(unknown_name_message("direction", v, ("increasing", "decreasing")))
    return v


def _layers(v: Any) -> tuple[int, ...]:
    try:
        return tuple(_layer_list(v, ""))
    except SchemaError as e:
        raise ValueError(e.message) from None


def _layer(v: Any) -> int:
    try:
        return _layer_number(v, "")
    except SchemaError as e:
        raise ValueError(e.message) from None


def _stat(v: Any) -> str:
    if not isinstance(v, str) or v not in STATS:
        raise ValueError(unknown_name_message("stat", v, STATS))
    return v


def param(parse: Callable[[Any], Any], default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A check parameter: how YAML is parsed into it, its default (none: required), its meaning."""
    return field(default=default, metadata={"parse": parse, "doc": doc})


def selection_param(doc: str = "") -> Any:
    return field(metadata={"selection": True, "doc": doc})


# --- per-kind parameter records ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CheckParams:
    description: str | None = param(_text, None, "what is checked, in words (shown in reports)")
    paper_fails: str | None = param(_text, None, "why the paper's own numbers fail this check")
    robustness: str | None = param(_text, None, "makes it a robustness row: the check at a setting other than the "
                                                "one the claim judges (what it varies, in words); reported beside the "
                                                "verdict, never deciding it")

    def selections(self) -> dict[str, Selection]:
        """The selections the check reads, by role."""
        return {}

    def validate(self, groups: dict) -> list[tuple[str, str]]:
        """Cross-field problems once every field parsed."""
        return []


@dataclass(frozen=True, kw_only=True)
class CompareParams(CheckParams):
    """greater: mean(a) - mean(b) > margin; less: mean(b) - mean(a) > margin; at_most:
    mean(a) <= mean(b) + margin (a bound, e.g. 'pruning raises the error by at most 1 point')."""

    metric: str | None = param(_text, None, "metric of a and b unless a selection names its own")
    a: Selection = selection_param()
    b: Selection = selection_param()
    margin: float = param(_non_negative, 0.0, "how far beyond b (or, for at_most, the allowed excess)")
    alpha: float = param(_probability, 0.05, "significance level of the one-sided test (n >= 3)")

    def selections(self):
        return {"a": self.a, "b": self.b}


@dataclass(frozen=True, kw_only=True)
class EqualParams(CheckParams):
    metric: str | None = param(_text, None)
    a: Selection = selection_param()
    b: Selection = selection_param()
    tolerance: float = param(_non_negative, doc="largest |mean(a) - mean(b)| that counts as equal")

    def selections(self):
        return {"a": self.a, "b": self.b}


@dataclass(frozen=True, kw_only=True)
class ValueParams(CheckParams):
    metric: str | None = param(_text, None)
    a: Selection = selection_param()
    tolerance: float = param(_non_negative, doc="largest |mean(a) - expected|")
    expected: float | None = param(_number, None, "default: the paper's number for a")

    def selections(self):
        return {"a": self.a}


@dataclass(frozen=True, kw_only=True)
class DistributionParams(CheckParams):
    metric: str | None = param(_text, None)
    a: Selection = selection_param()
    min: float | None = param(_number, None)
    max: float | None = param(_number, None)

    def selections(self):
        return {"a": self.a}

    def validate(self, groups):
        if self.min is None and self.max is None:
            return [("", "give min and/or max")]
        if self.min is not None and self.max is not None and self.min > self.max:
            return [("min", f"min {self.min:g} > max {self.max:g}")]
        return []


@dataclass(frozen=True, kw_only=True)
class MonotonicParams(CheckParams):
    run: str = param(_text, doc="a run group with an axis of at least 2 values")
    metric: str = param(_text)
    direction: str = param(_direction)
    slack: float = param(_non_negative, 0.0, "how far one step may go against the direction")
    min_change: float = param(_non_negative, 0.0, "last - first must exceed this (in the direction)")
    alpha: float = param(_probability, 0.05)
    layers: tuple[int, ...] | None = param(_layers, None)
    layer: int | None = param(_layer, None)
    stat: str | None = param(_stat, None)
    threshold: float = param(_number, 0.0)

    def point(self, group, axis_value: Any) -> Selection:
        return Selection(group.name, axis_value, self.metric, self.layers, self.layer, self.stat, self.threshold)

    def validate(self, groups):
        if self.run not in groups:
            return [("run", unknown_name_message("run", self.run, groups))]
        group = groups[self.run]
        if group.axis is None or len(group.points) < 2:
            return [("run", f"run {self.run!r} needs an axis with at least 2 values")]
        problems: list[tuple[str, str]] = []
        for point in group.points:  # every point: one axis value may change what a run records
            problems += [(f, m) for f, m in validate_selection(self.point(group, point.axis_value), groups)
                         if f != "run" and (f, m) not in problems]
        return problems


@dataclass(frozen=True, kw_only=True)
class LayerPatternParams(CheckParams):
    """Within one run: mean of a per-layer metric over ``layers`` > that over ``than`` by margin."""

    run: str = param(_text, doc="a run group, or run@value for one axis point")
    metric: str = param(_text)
    layers: tuple[int, ...] = param(_layers)
    than: tuple[int, ...] = param(_layers)
    margin: float = param(_non_negative, 0.0)
    alpha: float = param(_probability, 0.05)

    def selections(self):
        run, at = split_run(self.run)
        return {"a": Selection(run, at, self.metric, self.layers), "b": Selection(run, at, self.metric, self.than)}

    def validate(self, groups):
        problems = validate_selection(self.selections()["a"], groups)
        problems += [("than" if f == "layers" else f, m) for f, m in validate_selection(self.selections()["b"], groups)
                     if f in ("layers", "layer")]
        if not problems and group_catalogue(groups[split_run(self.run)[0]])[self.metric].shape != PER_LAYER:
            problems.append(("metric", f"{self.metric} is not a per-layer metric"))
        if set(self.layers) & set(self.than):
            problems.append(("than", f"layers {sorted(set(self.layers) & set(self.than))} are on both sides"))
        return problems


# The one list of check kinds: what a claim file may name, with each kind's parameter record. The
# evaluators (claimbench.check.kinds.KINDS) register against these names and fail to import when
# a kind here has none (claimbench.spec.registry).
CHECK_PARAMS: dict[str, type[CheckParams]] = {
    "greater": CompareParams,
    "less": CompareParams,
    "at_most": CompareParams,
    "equal": EqualParams,
    "value": ValueParams,
    "monotonic": MonotonicParams,
    "layer_pattern": LayerPatternParams,
    "distribution": DistributionParams,
}


def parse_check_params(kind: str, raw: dict, groups: dict) -> tuple[CheckParams | None, list[tuple[str, str]]]:
    """Build the kind's parameter record from a check's mapping; every problem at once."""
    cls = CHECK_PARAMS[kind]
    fields = dataclasses.fields(cls)
    known = [f.name for f in fields]
    problems = unknown_keys({k: v for k, v in raw.items() if k != "kind"}, known, f"{kind!r} parameter")
    values: dict[str, Any] = {}
    for f in fields:
        if f.metadata.get("selection"):
            continue
        if f.name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append((f.name, f"required by check kind {kind!r}"))
            continue
        try:
            values[f.name] = f.metadata["parse"](raw[f.name])
        except ValueError as e:
            problems.append((f.name, str(e)))
    for f in fields:
        if not f.metadata.get("selection"):
            continue
        if f.name not in raw:
            problems.append((f.name, f"required by check kind {kind!r}"))
            continue
        try:
            sel = parse_selection(raw[f.name], values.get("metric"))
        except SchemaError as e:
            problems.append((f"{f.name}.{e.field}" if e.field else f.name, e.message))
            continue
        for sub, msg in validate_selection(sel, groups):
            own = isinstance(raw[f.name], dict) and sub in raw[f.name]
            where = f"{f.name}.{sub}" if own else ("metric" if sub == "metric" and "metric" in raw else f.name)
            if (where, msg) not in problems:  # a check-level metric is reported once, not per side
                problems.append((where, msg))
        values[f.name] = sel
    if problems:
        return None, problems
    params = cls(**values)
    problems += params.validate(groups)
    return (None, problems) if problems else (params, [])
