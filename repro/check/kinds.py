"""Check kinds: how a claim's numbers are compared. One class per kind, registered by name.

In:  a CheckSpec's parameters and an ``Observations`` (per-seed metric values of run selections).
Out: a CheckResult with status, the arithmetic that decided it, and the observed statistics.

A *selection* names what to measure on which runs:
    adam_l2                       a run group without axis (every seed)
    lam_sweep@0.001               one point of a group with an axis
    {run: adam_l2, metric: layer_sparsity_gamma, layers: [6, 7]}   mean over C6, C7
    {run: adam_l2, metric: beta, layer: 6, stat: fraction_below, threshold: 0}
A selection without ``metric`` uses the check's ``metric``. Adding a kind = a new class in
KINDS; nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from repro.check.verdict import (
    ERROR,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    CheckResult,
    Stats,
    fmt,
    paired_diff_ci,
    paired_greater,
    welch_diff_ci,
    welch_greater,
)
from repro.spec.claims import CheckSpec, RunGroup

STATS = {
    "fraction_below": lambda v, t: float(np.mean(np.asarray(v) < t)) * 100,
    "fraction_above": lambda v, t: float(np.mean(np.asarray(v) > t)) * 100,
    "fraction_at_most": lambda v, t: float(np.mean(np.asarray(v) <= t)) * 100,
    "mean": lambda v, t: float(np.mean(v)),
    "median": lambda v, t: float(np.median(v)),
}
TRANSFORMS = {"log10": lambda x: math.log10(max(x, 1e-300))}
SELECTION_KEYS = {"run", "at", "metric", "layers", "layer", "stat", "threshold", "transform", "label"}


class CheckFailure(Exception):
    """A selection that cannot be evaluated (missing run, diverged run, metric absent)."""


@dataclass(frozen=True)
class Selection:
    run: str
    at: Any
    metric: str
    layers: tuple[int, ...] | None
    layer: int | None
    stat: str | None
    threshold: float
    transform: str | None
    label: str

    @classmethod
    def parse(cls, raw: Any, default_metric: str | None) -> "Selection":
        if isinstance(raw, str):
            raw = {"run": raw}
        if isinstance(raw, dict) and isinstance(raw.get("run"), str) and "@" in raw["run"] and raw.get("at") is None:
            run, _, at = raw["run"].partition("@")
            raw = {**raw, "run": run, "at": _number(at)}
        if not isinstance(raw, dict) or not isinstance(raw.get("run"), str):
            raise ValueError("a selection is a run name, 'run@axis_value' or a mapping with run")
        unknown = set(raw) - SELECTION_KEYS
        if unknown:
            raise ValueError(f"unknown selection key {sorted(map(str, unknown))[0]!r}; known: {', '.join(sorted(SELECTION_KEYS))}")
        metric = raw.get("metric", default_metric)
        if not metric:
            raise ValueError("no metric: give one on the check or the selection")
        if raw.get("stat") is not None and (not isinstance(raw["stat"], str) or raw["stat"] not in STATS):
            raise ValueError(f"unknown stat {raw['stat']!r}; known: {', '.join(STATS)}")
        if raw.get("transform") is not None and (not isinstance(raw["transform"], str) or raw["transform"] not in TRANSFORMS):
            raise ValueError(f"unknown transform {raw['transform']!r}; known: {', '.join(TRANSFORMS)}")
        if raw.get("layers") is not None and (not isinstance(raw["layers"], list) or not all(_layer_number(i) for i in raw["layers"])):
            raise ValueError(f"layers: expected a list of 1-based conv layer numbers, got {raw['layers']!r}")
        if raw.get("layer") is not None and not _layer_number(raw["layer"]):
            raise ValueError(f"layer: expected a 1-based conv layer number, got {raw['layer']!r}")
        threshold = raw.get("threshold", 0.0)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, str)):
            raise ValueError(f"threshold: expected a number, got {threshold!r}")
        try:
            threshold = float(threshold)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            raise ValueError(f"threshold: expected a number, got {threshold!r}") from None
        if raw.get("label") is not None and not isinstance(raw["label"], str):
            raise ValueError(f"label: expected text, got {raw['label']!r}")
        at = raw.get("at")
        at = _number(at) if isinstance(at, str) else at
        layers = tuple(raw["layers"]) if raw.get("layers") is not None else None
        label = raw.get("label") or _label(raw["run"], at, metric, layers, raw.get("layer"), raw.get("stat"))
        return cls(str(raw["run"]), at, str(metric), layers, raw.get("layer"), raw.get("stat"),
                   threshold, raw.get("transform"), label)

    def validate(self, groups: dict[str, RunGroup]) -> str | None:
        if self.run not in groups:
            return f"unknown run {self.run!r}; known: {', '.join(sorted(groups)) or '(none)'}"
        group = groups[self.run]
        if self.at is not None:
            if group.axis is None:
                return f"run {self.run!r} has no axis, so '@{self.at}' selects nothing"
            values = [p.axis_value for p in group.points]
            if not any(_same(v, self.at) for v in values):
                return f"run {self.run!r} has no point {group.axis}={self.at}; its values: {values}"
        elif group.axis is not None and len(group.points) > 1:
            return f"run {self.run!r} has an axis ({group.axis}); select a point with '{self.run}@<value>'"
        return None


def _layer_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(text: str) -> Any:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0) or a == b
    return a == b


def _label(run: str, at: Any, metric: str, layers, layer, stat) -> str:
    out = f"{run}@{at}" if at is not None else run
    out += f" {metric}"
    if layers:
        out += "[C" + ",C".join(map(str, layers)) + "]"
    if layer:
        out += f"[C{layer}]"
    if stat:
        out += f" {stat}"
    return out


class Observations:
    """Per-seed values of selections, read from finished runs (``metrics_for(group, point)``)."""

    def __init__(self, groups: dict[str, RunGroup], metrics_for: Callable[[RunGroup, Any], list[dict]]):
        self.groups = groups
        self.metrics_for = metrics_for

    def stats(self, sel: Selection) -> Stats:
        group = self.groups[sel.run]
        point = next(p for p in group.points if sel.at is None or _same(p.axis_value, sel.at))
        values = []
        for m in self.metrics_for(group, point.axis_value):
            if m is None:
                raise CheckFailure(f"run {sel.label} has no result (not trained)")
            if m.get("diverged_at") is not None:
                raise CheckFailure(f"run diverged: {sel.run} at step {m['diverged_at']}")
            values.append(self._value(m, sel))
        return Stats(tuple(values))

    def paper(self, sel: Selection) -> Any:
        group = self.groups[sel.run]
        point = next(p for p in group.points if sel.at is None or _same(p.axis_value, sel.at))
        ref = point.paper.get(sel.metric)
        if isinstance(ref, list) and sel.layers:
            return float(np.mean([ref[i - 1] for i in sel.layers])) if max(sel.layers) <= len(ref) else None
        if isinstance(ref, list) and sel.layer is not None:
            return ref[sel.layer - 1] if sel.layer <= len(ref) else None
        return ref

    def _value(self, m: dict, sel: Selection) -> float:
        if sel.metric not in m:
            raise CheckFailure(f"metric {sel.metric!r} missing from run {sel.run}")
        v = m[sel.metric]
        try:
            if sel.layers is not None:
                v = float(np.mean([v[i - 1] for i in sel.layers]))
            elif sel.layer is not None:
                v = v[sel.layer - 1]
            if sel.stat is not None:
                v = STATS[sel.stat](v, sel.threshold)
        except (IndexError, TypeError, KeyError) as e:
            raise CheckFailure(f"cannot take {sel.label} from run {sel.run}: {type(e).__name__}: {e}") from None
        if not isinstance(v, (int, float)):
            raise CheckFailure(f"{sel.label} is not a number; select layers/layer/stat")
        v = float(v)
        return TRANSFORMS[sel.transform](v) if sel.transform else v


def _paired(sels: dict[str, "Selection"]) -> bool:
    """Two metrics of the same runs (e.g. error before vs after pruning) pair up seed by seed."""
    a, b = sels["a"], sels["b"]
    return a.run == b.run and _same(a.at, b.at) if a.at is not None else (a.run == b.run and b.at is None)


def _observed(obs: Observations, sels: Iterable[Selection], stats: Iterable[Stats]) -> dict:
    return {
        s.label: {"mean": st.mean, "std": st.std, "n": st.n, "values": list(st.values), "paper": obs.paper(s)}
        for s, st in zip(sels, stats)
    }


class CheckKind:
    """Base class. ``selections`` names the parameters holding selections."""

    name = ""
    selections: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    describe_fmt = ""

    def parse(self, params: dict) -> dict[str, Selection]:
        return {k: Selection.parse(params[k], params.get("metric")) for k in self.selections if k in params}

    def validate(self, raw: dict, groups: dict[str, RunGroup]) -> list[tuple[str, str]]:
        problems = []
        for k in (*self.selections, *self.required):
            if k not in raw:
                problems.append((k, f"required by check kind {self.name!r}"))
        for k in self.selections:
            if k not in raw:
                continue
            try:
                sel = Selection.parse(raw[k], raw.get("metric"))
            except ValueError as e:
                problems.append((k, str(e)))
                continue
            msg = sel.validate(groups)
            if msg:
                problems.append((k, msg))
        for k in ("margin", "tolerance", "slack", "alpha", "min_change"):
            if k in raw and (not isinstance(raw[k], (int, float)) or isinstance(raw[k], bool) or raw[k] < 0):
                problems.append((k, f"expected a number >= 0, got {raw[k]!r}"))
        return problems + self.extra_validate(raw, groups)

    def extra_validate(self, raw: dict, groups: dict[str, RunGroup]) -> list[tuple[str, str]]:
        return []

    def evaluate(self, spec: CheckSpec, obs: Observations) -> CheckResult:
        try:
            return self.decide(spec.params, self.parse(spec.params), obs)
        except CheckFailure as e:
            return CheckResult(self.name, ERROR, self.describe(spec.params), "", str(e))

    def describe(self, params: dict) -> str:
        return params.get("description") or self.name

    def decide(self, params: dict, sels: dict[str, Selection], obs: Observations) -> CheckResult:
        raise NotImplementedError


class Compare(CheckKind):
    """a > b (kind 'greater') or a < b ('less') by ``margin`` on the means; with n >= 3 on both
    sides a one-sided Welch test must also give p < alpha, else the verdict is inconclusive."""

    selections = ("a", "b")

    def __init__(self, name: str, sign: int):
        self.name, self.sign = name, sign

    def decide(self, params, sels, obs):
        a, b = obs.stats(sels["a"]), obs.stats(sels["b"])
        margin = float(params.get("margin", 0))
        alpha = float(params.get("alpha", 0.05))
        diff = (a.mean - b.mean) * self.sign
        op = ">" if self.sign > 0 else "<"
        desc = f"{sels['a'].label} {op} {sels['b'].label} by more than {fmt(margin)}"
        paired = _paired(sels)
        test = paired_greater if paired else welch_greater
        p = test(a, b) if self.sign > 0 else test(b, a)
        arith = f"{fmt(a.mean)} - {fmt(b.mean)} = {fmt(a.mean - b.mean)}; need {op} {'' if self.sign > 0 else '-'}{fmt(margin)}"
        name = "paired t-test over seeds" if paired else "Welch"
        arith += f"; {name} one-sided p = {p:.3g} (alpha {alpha})" if p is not None else "; n < 3: no test, margin only"
        observed = _observed(obs, sels.values(), (a, b))
        if diff <= margin:
            return CheckResult(self.name, NOT_REPRODUCED, desc, arith, f"difference {fmt(a.mean - b.mean)} does not exceed margin {fmt(margin)}", observed=observed)
        if p is not None and p >= alpha:
            return CheckResult(self.name, INCONCLUSIVE, desc, arith, f"margin met but p = {p:.3g} >= {alpha}", observed=observed)
        # Without a test, a difference that clears the margin by less than twice the seed spread
        # seen on either side could be one seed's luck.
        noise = max(a.std, b.std)
        if p is None and diff - margin <= 2 * noise:
            arith += f"; clears the margin by {fmt(diff - margin)} <= 2 x seed std {fmt(noise)}"
            return CheckResult(self.name, INCONCLUSIVE, desc, arith,
                               f"margin met by less than 2 seed std ({fmt(noise)}) and too few seeds for a test", observed=observed)
        return CheckResult(self.name, REPRODUCED, desc, arith, observed=observed)


class Equal(CheckKind):
    """|mean(a) - mean(b)| <= tolerance; with n >= 3 the 95% Welch CI of the difference must lie
    inside +-tolerance too, else inconclusive."""

    name = "equal"
    selections = ("a", "b")
    required = ("tolerance",)

    def decide(self, params, sels, obs):
        a, b = obs.stats(sels["a"]), obs.stats(sels["b"])
        tol = float(params["tolerance"])
        diff = a.mean - b.mean
        paired = _paired(sels)
        ci = paired_diff_ci(a, b) if paired else welch_diff_ci(a, b)
        desc = f"{sels['a'].label} == {sels['b'].label} within ±{fmt(tol)}"
        arith = f"|{fmt(a.mean)} - {fmt(b.mean)}| = {fmt(abs(diff))}; need <= {fmt(tol)}"
        if ci is not None:
            arith += f"; 95% CI of {'per-seed (paired) ' if paired else ''}difference [{fmt(ci[0])}, {fmt(ci[1])}]"
        observed = _observed(obs, sels.values(), (a, b))
        if abs(diff) > tol:
            return CheckResult(self.name, NOT_REPRODUCED, desc, arith, f"difference {fmt(diff)} exceeds ±{fmt(tol)}", observed=observed)
        if ci is not None and (ci[0] < -tol or ci[1] > tol):
            return CheckResult(self.name, INCONCLUSIVE, desc, arith, "means agree but the CI is wider than the tolerance", observed=observed)
        return CheckResult(self.name, REPRODUCED, desc, arith, observed=observed)


class Value(CheckKind):
    """mean(a) within ``tolerance`` of ``expected`` (default: the paper's number for a)."""

    name = "value"
    selections = ("a",)
    required = ("tolerance",)

    def decide(self, params, sels, obs):
        a = obs.stats(sels["a"])
        expected = params.get("expected", obs.paper(sels["a"]))
        if not isinstance(expected, (int, float)):
            raise CheckFailure(f"no expected value: give 'expected' or a paper number for {sels['a'].label}")
        tol = float(params["tolerance"])
        desc = f"{sels['a'].label} = {fmt(expected)} ± {fmt(tol)}"
        arith = f"|{fmt(a.mean)} - {fmt(expected)}| = {fmt(abs(a.mean - expected))}; need <= {fmt(tol)}"
        observed = _observed(obs, sels.values(), (a,))
        if abs(a.mean - expected) > tol:
            return CheckResult(self.name, NOT_REPRODUCED, desc, arith, f"{fmt(a.mean)} is outside {fmt(expected)} ± {fmt(tol)}", observed=observed)
        return CheckResult(self.name, REPRODUCED, desc, arith, observed=observed)


class Monotonic(CheckKind):
    """The metric's means along a run's axis rise (or fall): every step may go against the
    direction by at most ``slack``, and last - first must exceed ``min_change``; with n >= 3 the
    endpoints must also differ by a one-sided Welch test."""

    name = "monotonic"
    required = ("run", "direction")

    def extra_validate(self, raw, groups):
        problems = []
        run = raw.get("run")
        if run is not None:
            if not isinstance(run, str) or run not in groups:
                problems.append(("run", f"unknown run {run!r}; known: {', '.join(sorted(groups))}"))
            elif groups[run].axis is None or len(groups[run].points) < 2:
                problems.append(("run", f"run {run!r} needs an axis with at least 2 values"))
        if raw.get("direction") not in ("increasing", "decreasing"):
            problems.append(("direction", "expected increasing or decreasing"))
        if not raw.get("metric"):
            problems.append(("metric", "required"))
        elif isinstance(run, str):
            try:  # the per-point selection decide() builds
                Selection.parse({**{k: raw[k] for k in ("metric", "layers", "layer", "stat", "threshold") if k in raw},
                                 "run": run}, None)
            except ValueError as e:
                problems.append(("", str(e)))
        return problems

    def parse(self, params):
        return {}

    def decide(self, params, sels, obs):
        group = obs.groups[params["run"]]
        sign = 1 if params["direction"] == "increasing" else -1
        slack = float(params.get("slack", 0))
        min_change = float(params.get("min_change", 0))
        alpha = float(params.get("alpha", 0.05))
        points = [Selection.parse({**{k: params[k] for k in ("metric", "layers", "layer", "stat", "threshold") if k in params},
                                   "run": group.name, "at": p.axis_value}, params["metric"]) for p in group.points]
        stats = [obs.stats(s) for s in points]
        means = [s.mean for s in stats]
        steps = [(b - a) * sign for a, b in zip(means, means[1:])]
        total = (means[-1] - means[0]) * sign
        desc = f"{params['metric']} {params['direction']} along {group.axis} {[p.axis_value for p in group.points]}"
        arith = "means " + " -> ".join(fmt(m) for m in means) + f"; worst step {fmt(min(steps) * sign)} (slack {fmt(slack)}); total change {fmt(total * sign)} (need > {fmt(min_change)})"
        a, b = (stats[-1], stats[0]) if sign > 0 else (stats[0], stats[-1])
        p = welch_greater(a, b)
        if p is not None:
            arith += f"; endpoints Welch p = {p:.3g}"
        observed = _observed(obs, points, stats)
        if min(steps) < -slack or total <= min_change:
            return CheckResult(self.name, NOT_REPRODUCED, desc, arith, "not monotonic" if min(steps) < -slack else "change too small", observed=observed)
        if p is not None and p >= alpha:
            return CheckResult(self.name, INCONCLUSIVE, desc, arith, f"endpoints p = {p:.3g} >= {alpha}", observed=observed)
        return CheckResult(self.name, REPRODUCED, desc, arith, observed=observed)


class LayerPattern(Compare):
    """Per-layer pattern within one run: mean over ``layers`` > mean over ``than`` by ``margin``
    (e.g. Adam's late layers C6-C7 sparser than its middle layers C3-C4)."""

    selections = ()
    required = ("run", "metric", "layers", "than")

    def __init__(self):
        super().__init__("layer_pattern", 1)

    def extra_validate(self, raw, groups):
        problems = []
        try:
            msg = Selection.parse(raw.get("run", ""), raw.get("metric")).validate(groups)
        except ValueError as e:
            msg = str(e)
        if msg:
            problems.append(("run", msg))
        for k in ("layers", "than"):
            v = raw.get(k)
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(i, int) and i >= 1 for i in v)):
                problems.append((k, "expected a list of 1-based conv layer numbers"))
        return problems

    def parse(self, params):
        base = Selection.parse(params["run"], params["metric"])
        mk = lambda layers: Selection.parse({"run": base.run, "at": base.at, "metric": params["metric"], "layers": layers}, None)
        return {"a": mk(params["layers"]), "b": mk(params["than"])}


class Distribution(CheckKind):
    """A statistic of a per-feature distribution (e.g. % of negative betas in C6) is at least
    ``min`` and/or at most ``max``."""

    name = "distribution"
    selections = ("a",)

    def extra_validate(self, raw, groups):
        problems = []
        if "min" not in raw and "max" not in raw:
            problems.append(("", "give min and/or max"))
        for k in ("min", "max"):
            if k in raw and (isinstance(raw[k], bool) or not isinstance(raw[k], (int, float))):
                problems.append((k, f"expected a number, got {raw[k]!r}"))
        return problems

    def decide(self, params, sels, obs):
        a = obs.stats(sels["a"])
        lo, hi = params.get("min"), params.get("max")
        bounds = " and ".join(x for x in (f">= {fmt(lo)}" if lo is not None else "", f"<= {fmt(hi)}" if hi is not None else "") if x)
        desc = f"{sels['a'].label} {bounds}"
        arith = f"mean {fmt(a.mean)} (per seed {', '.join(fmt(v) for v in a.values)}); need {bounds}"
        observed = _observed(obs, sels.values(), (a,))
        ok = (lo is None or a.mean >= lo) and (hi is None or a.mean <= hi)
        if not ok:
            return CheckResult(self.name, NOT_REPRODUCED, desc, arith, f"{fmt(a.mean)} not {bounds}", observed=observed)
        return CheckResult(self.name, REPRODUCED, desc, arith, observed=observed)


KINDS: dict[str, CheckKind] = {
    k.name: k
    for k in (Compare("greater", 1), Compare("less", -1), Equal(), Value(), Monotonic(), LayerPattern(), Distribution())
}


def check_claim_tier(checks: Iterable[CheckSpec], obs: Observations) -> list[CheckResult]:
    results = []
    for spec in checks:
        result = KINDS[spec.kind].evaluate(spec, obs)
        result.field_path, result.line = spec.field_path, spec.line
        if spec.params.get("description"):
            result.description = spec.params["description"]
        results.append(result)
    return results
