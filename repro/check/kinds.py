"""Check kinds: how a claim's numbers are compared. One evaluator per kind, registered by name.

In:  a CheckSpec (its kind and its typed parameter record from ``repro.spec.checks``) and an
     ``Observations`` (per-seed metric values of run selections).
Out: a CheckResult with status, the arithmetic that decided it, and the observed statistics.

The parameters of each kind are declared once, in ``repro.spec.checks.CHECK_PARAMS``; this module
only reads them. Adding a kind = a parameter record there and an evaluator in KINDS here.
"""

from __future__ import annotations

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
from repro.spec.checks import (
    STATS,
    CompareParams,
    DistributionParams,
    EqualParams,
    LayerPatternParams,
    MonotonicParams,
    Selection,
    ValueParams,
    same_value,
)
from repro.spec.claims import CheckSpec, RunGroup


class CheckFailure(Exception):
    """A selection that cannot be evaluated (diverged run, metric absent)."""


class RunsMissing(CheckFailure):
    """A selection whose runs are not in the cache (not trained yet)."""


class Observations:
    """Per-seed values of selections, read from finished runs (``metrics_for(group, point)``)."""

    def __init__(self, groups: dict[str, RunGroup], metrics_for: Callable[[RunGroup, Any], list[dict | None]]):
        self.groups = groups
        self.metrics_for = metrics_for

    def _point(self, sel: Selection):
        group = self.groups[sel.run]
        return group, next(p for p in group.points if sel.at is None or same_value(p.axis_value, sel.at))

    def stats(self, sel: Selection) -> Stats:
        group, point = self._point(sel)
        per_seed = self.metrics_for(group, point.axis_value)
        missing = sum(m is None for m in per_seed)
        if missing:
            raise RunsMissing(f"{sel.label}: {missing} of {len(per_seed)} runs not trained")
        values = []
        for m in per_seed:
            if m.get("diverged_at") is not None:
                raise CheckFailure(f"run diverged: {sel.run} at step {m['diverged_at']}")
            values.append(self._value(m, sel))
        return Stats(tuple(values))

    def paper(self, sel: Selection) -> Any:
        _, point = self._point(sel)
        return paper_value(point.paper.get(sel.metric), sel)

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
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CheckFailure(f"{sel.label} is not a number")
        return float(v)


def paper_value(ref: Any, sel: Selection) -> Any:
    """The paper's number for a selection (a per-layer list reduced as the selection reduces it)."""
    if isinstance(ref, list) and sel.layers:
        return float(np.mean([ref[i - 1] for i in sel.layers])) if max(sel.layers) <= len(ref) else None
    if isinstance(ref, list) and sel.layer is not None:
        return ref[sel.layer - 1] if sel.layer <= len(ref) else None
    return ref


def _paired(a: Selection, b: Selection) -> bool:
    """Two metrics of the same runs (e.g. error before vs after pruning) pair up seed by seed."""
    return a.run == b.run and (same_value(a.at, b.at) if a.at is not None else b.at is None)


def _observed(obs: Observations, sels: Iterable[Selection], stats: Iterable[Stats]) -> dict:
    return {
        s.label: {"mean": st.mean, "std": st.std, "n": st.n, "values": list(st.values), "paper": obs.paper(s)}
        for s, st in zip(sels, stats)
    }


def _result(kind: str, status: str, desc: str, arith: str, reason: str = "", observed: dict | None = None) -> CheckResult:
    return CheckResult(kind, status, desc, arith, reason, observed=observed or {})


def compare(kind: str, p: CompareParams | LayerPatternParams, obs: Observations) -> CheckResult:
    """greater/layer_pattern: mean(a) - mean(b) > margin; less: mean(b) - mean(a) > margin; with
    n >= 3 on both sides a one-sided test (paired for two metrics of the same runs, else Welch)
    must also give p < alpha, else inconclusive. at_most: mean(a) <= mean(b) + margin, the test
    being that b + margin exceeds a."""
    sels = p.selections()
    a_sel, b_sel = sels["a"], sels["b"]
    a, b = obs.stats(a_sel), obs.stats(b_sel)
    paired = _paired(a_sel, b_sel)
    test = paired_greater if paired else welch_greater
    test_name = "paired t-test over seeds" if paired else "Welch"
    margin = p.margin
    observed = _observed(obs, (a_sel, b_sel), (a, b))
    if kind == "at_most":
        desc = f"{a_sel.label} <= {b_sel.label} + {fmt(margin)}"
        excess = a.mean - b.mean
        p_value = test(Stats(tuple(v + margin for v in b.values)), a)
        arith = f"{fmt(a.mean)} - {fmt(b.mean)} = {fmt(excess)}; need <= {fmt(margin)}"
        arith += f"; {test_name} one-sided p = {p_value:.3g} (alpha {p.alpha})" if p_value is not None else "; n < 3: no test"
        if excess > margin:
            return _result(kind, NOT_REPRODUCED, desc, arith, f"{fmt(excess)} exceeds the bound {fmt(margin)}", observed)
        if p_value is not None and p_value >= p.alpha:
            return _result(kind, INCONCLUSIVE, desc, arith, f"within the bound but p = {p_value:.3g} >= {p.alpha}", observed)
        return _result(kind, REPRODUCED, desc, arith, observed=observed)
    sign = -1 if kind == "less" else 1
    diff = (a.mean - b.mean) * sign
    op = "<" if sign < 0 else ">"
    desc = f"{a_sel.label} {op} {b_sel.label} by more than {fmt(margin)}"
    p_value = test(a, b) if sign > 0 else test(b, a)
    arith = f"{fmt(a.mean)} - {fmt(b.mean)} = {fmt(a.mean - b.mean)}; need {op} {'-' if sign < 0 else ''}{fmt(margin)}"
    arith += f"; {test_name} one-sided p = {p_value:.3g} (alpha {p.alpha})" if p_value is not None else "; n < 3: no test, margin only"
    if diff <= margin:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"difference {fmt(a.mean - b.mean)} does not exceed margin {fmt(margin)}", observed)
    if p_value is not None and p_value >= p.alpha:
        return _result(kind, INCONCLUSIVE, desc, arith, f"margin met but p = {p_value:.3g} >= {p.alpha}", observed)
    # Without a test, a difference that clears the margin by less than twice the seed spread
    # seen on either side could be one seed's luck.
    noise = max(a.std, b.std)
    if p_value is None and diff - margin <= 2 * noise:
        arith += f"; clears the margin by {fmt(diff - margin)} <= 2 x seed std {fmt(noise)}"
        return _result(kind, INCONCLUSIVE, desc, arith,
                       f"margin met by less than 2 seed std ({fmt(noise)}) and too few seeds for a test", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def equal(kind: str, p: EqualParams, obs: Observations) -> CheckResult:
    """|mean(a) - mean(b)| <= tolerance; with n >= 3 the 95% CI of the difference must lie inside
    +-tolerance too, else inconclusive."""
    a, b = obs.stats(p.a), obs.stats(p.b)
    tol = p.tolerance
    diff = a.mean - b.mean
    paired = _paired(p.a, p.b)
    ci = paired_diff_ci(a, b) if paired else welch_diff_ci(a, b)
    desc = f"{p.a.label} == {p.b.label} within ±{fmt(tol)}"
    arith = f"|{fmt(a.mean)} - {fmt(b.mean)}| = {fmt(abs(diff))}; need <= {fmt(tol)}"
    if ci is not None:
        arith += f"; 95% CI of {'per-seed (paired) ' if paired else ''}difference [{fmt(ci[0])}, {fmt(ci[1])}]"
    observed = _observed(obs, (p.a, p.b), (a, b))
    if abs(diff) > tol:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"difference {fmt(diff)} exceeds ±{fmt(tol)}", observed)
    if ci is not None and (ci[0] < -tol or ci[1] > tol):
        return _result(kind, INCONCLUSIVE, desc, arith, "means agree but the CI is wider than the tolerance", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def value(kind: str, p: ValueParams, obs: Observations) -> CheckResult:
    """mean(a) within ``tolerance`` of ``expected`` (default: the paper's number for a)."""
    a = obs.stats(p.a)
    expected = p.expected if p.expected is not None else obs.paper(p.a)
    if not isinstance(expected, (int, float)):
        raise CheckFailure(f"no expected value: give 'expected' or a paper number for {p.a.label}")
    tol = p.tolerance
    desc = f"{p.a.label} = {fmt(expected)} ± {fmt(tol)}"
    arith = f"|{fmt(a.mean)} - {fmt(expected)}| = {fmt(abs(a.mean - expected))}; need <= {fmt(tol)}"
    observed = _observed(obs, (p.a,), (a,))
    if abs(a.mean - expected) > tol:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"{fmt(a.mean)} is outside {fmt(expected)} ± {fmt(tol)}", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def monotonic(kind: str, p: MonotonicParams, obs: Observations) -> CheckResult:
    """The metric's means along a run's axis rise (or fall): every step may go against the
    direction by at most ``slack``, and last - first must exceed ``min_change``; with n >= 3 the
    endpoints must also differ by a one-sided Welch test."""
    group = obs.groups[p.run]
    sign = 1 if p.direction == "increasing" else -1
    points = [p.point(group, pt.axis_value) for pt in group.points]
    stats = [obs.stats(s) for s in points]
    means = [s.mean for s in stats]
    steps = [(b - a) * sign for a, b in zip(means, means[1:])]
    total = (means[-1] - means[0]) * sign
    desc = f"{p.metric} {p.direction} along {group.axis} {[pt.axis_value for pt in group.points]}"
    arith = ("means " + " -> ".join(fmt(m) for m in means)
             + f"; worst step {fmt(min(steps) * sign)} (slack {fmt(p.slack)}); total change {fmt(total * sign)} (need > {fmt(p.min_change)})")
    a, b = (stats[-1], stats[0]) if sign > 0 else (stats[0], stats[-1])
    p_value = welch_greater(a, b)
    if p_value is not None:
        arith += f"; endpoints Welch p = {p_value:.3g}"
    observed = _observed(obs, points, stats)
    if min(steps) < -p.slack or total <= p.min_change:
        return _result(kind, NOT_REPRODUCED, desc, arith, "not monotonic" if min(steps) < -p.slack else "change too small", observed)
    if p_value is not None and p_value >= p.alpha:
        return _result(kind, INCONCLUSIVE, desc, arith, f"endpoints p = {p_value:.3g} >= {p.alpha}", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def distribution(kind: str, p: DistributionParams, obs: Observations) -> CheckResult:
    """A statistic of the selection (e.g. % of negative betas in C6) is >= ``min`` and/or <= ``max``."""
    a = obs.stats(p.a)
    lo, hi = p.min, p.max
    bounds = " and ".join(x for x in (f">= {fmt(lo)}" if lo is not None else "", f"<= {fmt(hi)}" if hi is not None else "") if x)
    desc = f"{p.a.label} {bounds}"
    arith = f"mean {fmt(a.mean)} (per seed {', '.join(fmt(v) for v in a.values)}); need {bounds}"
    observed = _observed(obs, (p.a,), (a,))
    if not ((lo is None or a.mean >= lo) and (hi is None or a.mean <= hi)):
        return _result(kind, NOT_REPRODUCED, desc, arith, f"{fmt(a.mean)} not {bounds}", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


KINDS: dict[str, Callable[[str, Any, Observations], CheckResult]] = {
    "greater": compare,
    "less": compare,
    "at_most": compare,
    "layer_pattern": compare,
    "equal": equal,
    "value": value,
    "monotonic": monotonic,
    "distribution": distribution,
}


def evaluate_check(spec: CheckSpec, obs: Observations) -> CheckResult:
    """One check's result; a run that is missing, diverged or lacks the metric is an error result."""
    try:
        result = KINDS[spec.kind](spec.kind, spec.params, obs)
    except CheckFailure as e:
        result = CheckResult(spec.kind, ERROR, spec.params.description or spec.kind, "", str(e))
    result.field_path, result.line = spec.field_path, spec.line
    if spec.params.description:
        result.description = spec.params.description
    result.paper_fails = spec.params.paper_fails or ""
    if result.paper_fails and result.status != REPRODUCED:
        result.reason += f" (the paper's own numbers fail this check too: {result.paper_fails})"
    return result


def check_claim_tier(checks: Iterable[CheckSpec], obs: Observations) -> list[CheckResult]:
    return [evaluate_check(spec, obs) for spec in checks]
