"""Check kinds: how a claim's numbers are compared. One evaluator per kind, registered by name.

In:  a CheckSpec (its kind and its typed parameter record from ``claimbench.spec.checks``) and an
     ``Observations`` (per-seed metric values of run selections).
Out: a CheckResult with status, the arithmetic that decided it, and the observed statistics.

The kinds and their parameters are declared once, in ``claimbench.spec.checks.CHECK_PARAMS``; this
module registers an evaluator against each of those names (``claimbench.spec.registry``), so a kind
added there without a ``Kind`` here, or a ``Kind`` for a name the parser does not accept, stops this
module from importing. Adding a kind = a parameter record there and a ``Kind`` in KINDS here.

Fail closed: every number a kind compares comes from ``Observations.stats``, which refuses a
selection with no seeds, a run not trained or diverged, and a metric that is absent, None, not a
number or not finite (NaN, +-inf) on any seed, down to the one layer or feature a selection reads.
Such a check is an ``error`` naming the run, seed and metric, never a comparison: every comparison
with NaN is False, so ``nan - 0 > 20`` fails but ``nan <= margin`` also fails, and a kind that
rejects on ``diff <= margin`` would have reproduced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from claimbench.check.verdict import (
    ERROR,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    CheckResult,
    NonFinite,
    Stats,
    finite_number,
    fixed,
    fmt,
    paired_diff_ci,
    show_arithmetic,
    paired_greater,
    welch_diff_ci,
    welch_greater,
)
from claimbench.spec.checks import (
    CHECK_PARAMS,
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
from claimbench.spec.claims import CheckSpec
from claimbench.spec.registry import registered
from claimbench.spec.run_groups import RunGroup


class CheckFailure(Exception):
    """A selection that cannot be evaluated (diverged run, metric absent or not a finite number).
    ``arithmetic`` is what a report shows in place of the comparison that was not made."""

    def __init__(self, message: str, arithmetic: str = ""):
        super().__init__(message)
        self.arithmetic = arithmetic


class RunsMissing(CheckFailure):
    """A selection whose runs are not in the cache (not trained yet)."""


class TooFewSeeds(CheckFailure):
    """A selection with fewer seeds than its check's kind needs to judge (inconclusive, not an
    error: the runs are fine, there are just not enough of them)."""


class Observations:
    """Per-seed values of selections, read from finished runs (``metrics_for(group, point)``).

    ``stats`` is the one place a check reads numbers, so it is where unusable ones are refused
    (see the module docstring); ``min_seeds`` is the fewest seeds a selection may have.
    ``with_paper`` False: the claims are about one's own experiment, so what a check says when it
    cannot be made names no paper (there is no paper number to give)."""

    def __init__(self, groups: dict[str, RunGroup], metrics_for: Callable[[RunGroup, Any], list[dict | None]],
                 min_seeds: int = 1, with_paper: bool = True):
        self.groups = groups
        self.metrics_for = metrics_for
        self.min_seeds = min_seeds
        self.with_paper = with_paper

    def requiring(self, min_seeds: int) -> "Observations":
        """The same observations, refusing selections with fewer than ``min_seeds`` seeds."""
        return Observations(self.groups, self.metrics_for, max(1, min_seeds), self.with_paper)

    def _point(self, sel: Selection):
        group = self.groups[sel.run]
        return group, next(p for p in group.points if sel.at is None or same_value(p.axis_value, sel.at))

    def stats(self, sel: Selection) -> Stats:
        group, point = self._point(sel)
        per_seed = list(self.metrics_for(group, point.axis_value))
        run = _run_name(sel)
        if not per_seed:
            # No seeds: a mean of nothing is NaN, and NaN must not reach a comparison.
            raise CheckFailure(f"{sel.label}: no runs to read (run {run} has no seeds)",
                               f"{sel.label}: n=0, nothing to compare")
        missing = sum(m is None for m in per_seed)
        if missing:
            raise RunsMissing(f"{sel.label}: {missing} of {len(per_seed)} runs not trained")
        values = []
        for i, m in enumerate(per_seed):
            seed = _seed_name(group, point, i, len(per_seed))
            if not isinstance(m, dict):
                raise CheckFailure(f"run {run} ({seed}): its metrics are {type(m).__name__}, not a mapping")
            if m.get("diverged_at") is not None:
                raise CheckFailure(f"run diverged: {sel.run} at step {m['diverged_at']}")
            values.append(self._value(m, sel, seed))
        stats = Stats(tuple(values), sel.label)
        try:
            stats.require_finite()  # finite values can still overflow to an infinite mean or std
        except NonFinite as e:
            raise CheckFailure(f"{e} (run {run}, metric {sel.metric!r})", str(e)) from None
        if stats.n < self.min_seeds:
            raise TooFewSeeds(f"{sel.label}: n={stats.n}, this check needs at least {self.min_seeds} seeds",
                              f"{sel.label}: n={stats.n} < {self.min_seeds}; not compared")
        return stats

    def seeds(self, sel: Selection) -> tuple[int, ...]:
        """The training seeds of a selection's runs, in the order ``stats`` reads them (none known
        for runs without configs)."""
        _, point = self._point(sel)
        return tuple(c.train.seed for c in point.configs)

    def paired(self, a: Selection, b: Selection) -> bool:
        """Whether a and b pair up seed by seed: two metrics of the same runs (e.g. error before vs
        after pruning), or two runs trained on the same seeds in the same order, which share
        their data order and, where the shapes agree, their initial weights, so a per-seed
        difference removes the seed's own luck from the comparison."""
        if a.run == b.run and (same_value(a.at, b.at) if a.at is not None else b.at is None):
            return True
        seeds = self.seeds(a)
        return bool(seeds) and seeds == self.seeds(b)

    def paper(self, sel: Selection) -> Any:
        _, point = self._point(sel)
        return paper_value(point.paper.get(sel.metric), sel)

    def _value(self, m: dict, sel: Selection, seed: str) -> float:
        run = _run_name(sel)
        if sel.metric not in m:
            raise CheckFailure(f"metric {sel.metric!r} missing from run {run} ({seed})",
                               f"{sel.label}: run {run} ({seed}) has no {sel.metric!r}; not compared")
        raw = m[sel.metric]
        try:
            # Exactly what the selection reads, checked before it is reduced: a NaN in one
            # feature would otherwise vanish into a fraction (NaN < 0 is False) as a finite number.
            if sel.layers is not None:
                read, names = [raw[i - 1] for i in sel.layers], [f"[C{i}]" for i in sel.layers]
            elif sel.layer is not None:
                read, names = [raw[sel.layer - 1]], [f"[C{sel.layer}]"]
            else:
                read, names = [raw], [""]
        except (IndexError, TypeError, KeyError) as e:
            raise CheckFailure(f"cannot take {sel.label} from run {run} ({seed}): {type(e).__name__}: {e}") from None
        for part, name in zip(read, names):
            bad = _unusable_leaf(part)
            if bad is not None:
                path, leaf = bad
                where = f"{sel.metric}{name}" + (f" feature {path[0] + 1}" if path else "")
                what = "not measured" if leaf is None else "not a finite number" if _is_number(leaf) else "not a number"
                raise CheckFailure(f"{sel.label}: run {run} ({seed}) metric {where} = {leaf!r}, {what}",
                                   f"run {run} ({seed}) metric {where} = {leaf!r}: {what}; not compared")
        try:
            v = float(np.mean(read)) if sel.layers is not None else read[0]
            if sel.stat is not None:
                v = STATS[sel.stat](v, sel.threshold)
        except (IndexError, TypeError, KeyError, ValueError) as e:
            raise CheckFailure(f"cannot take {sel.label} from run {run} ({seed}): {type(e).__name__}: {e}") from None
        if not finite_number(v):
            # E.g. a stat over an empty per-feature list (the mean of nothing is NaN).
            raise CheckFailure(f"{sel.label}: run {run} ({seed}) gives {v!r}, not a finite number",
                               f"run {run} ({seed}): {sel.label} = {v!r}; not compared")
        return float(v)


def _run_name(sel: Selection) -> str:
    return f"{sel.run}@{sel.at}" if sel.at is not None else sel.run


def _seed_name(group: RunGroup, point: Any, i: int, n: int) -> str:
    """The training seed of the i-th of n per-seed records, where the group says which it is."""
    if len(point.configs) == n:
        return f"seed {point.configs[i].train.seed}"
    if len(group.seeds) == n:
        return f"seed {group.seeds[i]}"
    return f"seed #{i + 1} of {n}"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def _unusable_leaf(x: Any, path: tuple[int, ...] = ()) -> tuple[tuple[int, ...], Any] | None:
    """(index path, value) of the first number in ``x`` (a number or nested lists of numbers)
    that is None, not a number, NaN or infinite; None when every one is finite."""
    if isinstance(x, (list, tuple)):
        for i, e in enumerate(x):
            bad = _unusable_leaf(e, path + (i,))
            if bad is not None:
                return bad
        return None
    return None if finite_number(x) else (path, x)


def paper_value(ref: Any, sel: Selection) -> Any:
    """The paper's number for a selection (a per-layer list reduced as the selection reduces it)."""
    if isinstance(ref, list) and sel.layers:
        return float(np.mean([ref[i - 1] for i in sel.layers])) if max(sel.layers) <= len(ref) else None
    if isinstance(ref, list) and sel.layer is not None:
        return ref[sel.layer - 1] if sel.layer <= len(ref) else None
    return ref


def _observed(obs: Observations, sels: Iterable[Selection], stats: Iterable[Stats]) -> dict:
    return {
        s.label: {"mean": st.mean, "std": st.std, "n": st.n, "values": list(st.values), "paper": obs.paper(s)}
        for s, st in zip(sels, stats)
    }


def _result(kind: str, status: str, desc: str, arith: str, reason: str = "", observed: dict | None = None) -> CheckResult:
    return CheckResult(kind, status, desc, arith, reason, observed=observed or {})


def compare(kind: str, p: CompareParams | LayerPatternParams, obs: Observations) -> CheckResult:
    """greater/layer_pattern: mean(a) - mean(b) > margin; less: mean(b) - mean(a) > margin; with
    n >= 3 on both sides a one-sided test (paired where the two sides pair up seed by seed,
    ``Observations.paired``, else Welch)
    must also give p < alpha, else inconclusive. at_most: mean(a) <= mean(b) + margin, the test
    being that b + margin exceeds a."""
    sels = p.selections()
    a_sel, b_sel = sels["a"], sels["b"]
    a, b = obs.stats(a_sel), obs.stats(b_sel)
    paired = obs.paired(a_sel, b_sel)
    test = paired_greater if paired else welch_greater
    test_name = "paired t-test over seeds" if paired else "Welch"
    margin = p.margin
    observed = _observed(obs, (a_sel, b_sel), (a, b))
    if kind == "at_most":
        desc = f"{a_sel.label} <= {b_sel.label} + {fmt(margin)}"
        excess = a.mean - b.mean
        p_value = test(Stats(tuple(v + margin for v in b.values)), a)
        shown = show_arithmetic([a.mean, b.mean], lambda v: [v[0] - v[1]], ((0, margin),))
        arith = f"{shown.operands[0]} - {shown.operands[1]} = {shown.results[0]}; need <= {fmt(margin)}"
        arith += f"; {test_name} one-sided p = {p_value:.3g} (alpha {p.alpha})" if p_value is not None else "; n < 3: no test"
        if excess > margin:
            return _result(kind, NOT_REPRODUCED, desc, arith, f"{shown.results[0]} exceeds the bound {fmt(margin)}", observed)
        if p_value is not None and p_value >= p.alpha:
            return _result(kind, INCONCLUSIVE, desc, arith, f"within the bound but p = {p_value:.3g} >= {p.alpha}", observed)
        return _result(kind, REPRODUCED, desc, arith, observed=observed)
    sign = -1 if kind == "less" else 1
    diff = (a.mean - b.mean) * sign
    op = "<" if sign < 0 else ">"
    desc = f"{a_sel.label} {op} {b_sel.label} by more than {fmt(margin)}"
    p_value = test(a, b) if sign > 0 else test(b, a)
    noise = max(a.std, b.std)
    # Shown: a - b, and by how much the difference clears the margin (against twice the noise).
    shown = show_arithmetic([a.mean, b.mean], lambda v: [v[0] - v[1], (v[0] - v[1]) * sign - margin],
                            ((0, sign * margin), (1, 0.0), (1, 2 * noise)))
    arith = f"{shown.operands[0]} - {shown.operands[1]} = {shown.results[0]}; need {op} {'-' if sign < 0 else ''}{fmt(margin)}"
    arith += f"; {test_name} one-sided p = {p_value:.3g} (alpha {p.alpha})" if p_value is not None else "; n < 3: no test, margin only"
    if diff <= margin:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"difference {shown.results[0]} does not exceed margin {fmt(margin)}", observed)
    if p_value is not None and p_value >= p.alpha:
        return _result(kind, INCONCLUSIVE, desc, arith, f"margin met but p = {p_value:.3g} >= {p.alpha}", observed)
    # Without a test, a difference that clears the margin by less than twice the seed spread
    # seen on either side could be one seed's luck.
    if p_value is None and diff - margin <= 2 * noise:
        arith += f"; clears the margin by {shown.results[1]} <= 2 x seed std {fmt(noise)}"
        return _result(kind, INCONCLUSIVE, desc, arith,
                       f"margin met by less than 2 seed std ({fmt(noise)}) and too few seeds for a test", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def equal(kind: str, p: EqualParams, obs: Observations) -> CheckResult:
    """|mean(a) - mean(b)| <= tolerance; with n >= 3 the 95% CI of the difference must lie inside
    +-tolerance too, else inconclusive."""
    a, b = obs.stats(p.a), obs.stats(p.b)
    tol = p.tolerance
    diff = a.mean - b.mean
    paired = obs.paired(p.a, p.b)
    ci = paired_diff_ci(a, b) if paired else welch_diff_ci(a, b)
    desc = f"{p.a.label} == {p.b.label} within ±{fmt(tol)}"
    shown = show_arithmetic([a.mean, b.mean], lambda v: [v[0] - v[1]], ((0, tol), (0, -tol)))
    arith = f"|{shown.operands[0]} - {shown.operands[1]}| = {shown.results[0].lstrip('-')}; need <= {fmt(tol)}"
    if ci is not None:
        arith += f"; 95% CI of {'per-seed (paired) ' if paired else ''}difference [{fmt(ci[0])}, {fmt(ci[1])}]"
    observed = _observed(obs, (p.a, p.b), (a, b))
    if abs(diff) > tol:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"difference {shown.results[0]} exceeds ±{fmt(tol)}", observed)
    if ci is not None and (ci[0] < -tol or ci[1] > tol):
        return _result(kind, INCONCLUSIVE, desc, arith, "means agree but the CI is wider than the tolerance", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def value(kind: str, p: ValueParams, obs: Observations) -> CheckResult:
    """mean(a) within ``tolerance`` of ``expected`` (default: the paper's number for a, where the
    claims are a paper's)."""
    a = obs.stats(p.a)
    expected = p.expected if p.expected is not None else obs.paper(p.a)
    if not isinstance(expected, (int, float)) or isinstance(expected, bool):
        # Where the folder quotes no paper, a paper number is no way out: only 'expected' is.
        raise CheckFailure(f"no expected value: give 'expected' or a paper number for {p.a.label}" if obs.with_paper
                           else f"no expected value for {p.a.label}: give 'expected'")
    if not math.isfinite(expected):
        raise CheckFailure(f"expected value {expected!r} for {p.a.label} is not a finite number",
                           f"|{fmt(a.mean)} - {expected!r}|: not compared")
    tol = p.tolerance
    desc = f"{p.a.label} = {fmt(expected)} ± {fmt(tol)}"
    shown = show_arithmetic([a.mean, expected], lambda v: [abs(v[0] - v[1])], ((0, tol),))
    arith = f"|{shown.operands[0]} - {shown.operands[1]}| = {shown.results[0]}; need <= {fmt(tol)}"
    observed = _observed(obs, (p.a,), (a,))
    if abs(a.mean - expected) > tol:
        return _result(kind, NOT_REPRODUCED, desc, arith, f"{shown.operands[0]} is outside {fmt(expected)} ± {fmt(tol)}", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


def monotonic(kind: str, p: MonotonicParams, obs: Observations) -> CheckResult:
    """The metric's means along a run's axis rise (or fall): every step may go against the
    direction by at most ``slack``, and last - first must exceed ``min_change``; with n >= 3 the
    endpoints must also differ by a one-sided test (paired when they share seeds, else Welch)."""
    group = obs.groups[p.run]
    sign = 1 if p.direction == "increasing" else -1
    points = [p.point(group, pt.axis_value) for pt in group.points]
    stats = [obs.stats(s) for s in points]
    means = [s.mean for s in stats]
    steps = [(b - a) * sign for a, b in zip(means, means[1:])]
    total = (means[-1] - means[0]) * sign
    desc = f"{p.metric} {p.direction} along {group.axis} {[pt.axis_value for pt in group.points]}"
    # Shown in the decision's direction (worst step against -slack, total against min_change),
    # written back in the metric's own direction.
    shown = show_arithmetic(means, lambda m: [min((y - x) * sign for x, y in zip(m, m[1:])), (m[-1] - m[0]) * sign],
                            ((0, -p.slack), (1, p.min_change)))
    worst, change = (x * sign for x in shown.result_values)
    arith = ("means " + " -> ".join(shown.operands)
             + f"; worst step {fixed(worst, shown.decimals)} (slack {fmt(p.slack)}); "
             f"total change {fixed(change, shown.decimals)} (need > {fmt(p.min_change)})")
    a, b = (stats[-1], stats[0]) if sign > 0 else (stats[0], stats[-1])
    ends = (points[-1], points[0]) if sign > 0 else (points[0], points[-1])
    paired = obs.paired(*ends)
    p_value = (paired_greater if paired else welch_greater)(a, b)
    if p_value is not None:
        arith += f"; endpoints {'paired t-test over seeds' if paired else 'Welch'} p = {p_value:.3g}"
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
    shown = show_arithmetic(list(a.values), lambda v: [sum(v) / len(v)], tuple((0, x) for x in (lo, hi) if x is not None))
    arith = f"mean {shown.results[0]} (per seed {', '.join(shown.operands)}); need {bounds}"
    observed = _observed(obs, (p.a,), (a,))
    if not ((lo is None or a.mean >= lo) and (hi is None or a.mean <= hi)):
        return _result(kind, NOT_REPRODUCED, desc, arith, f"{shown.results[0]} not {bounds}", observed)
    return _result(kind, REPRODUCED, desc, arith, observed=observed)


@dataclass(frozen=True)
class Kind:
    """A check kind: its evaluator, and the fewest seeds per selection it judges from.

    Every kind so far judges a single seed: below 3 seeds no test is made and the margin,
    tolerance or bounds alone decide (the arithmetic says "no test"; compare kinds also want the
    margin cleared by twice the seed std seen). A kind whose rule cannot work without a spread
    sets ``min_seeds``; fewer seeds then make its checks inconclusive, never reproduced."""

    evaluate: Callable[[str, Any, Observations], CheckResult]
    min_seeds: int = 1


# One evaluator per kind the parser accepts, checked against its list as this module loads.
KINDS: dict[str, Kind] = registered(CHECK_PARAMS, {
    "greater": Kind(compare),
    "less": Kind(compare),
    "at_most": Kind(compare),
    "layer_pattern": Kind(compare),
    "equal": Kind(equal),
    "value": Kind(value),
    "monotonic": Kind(monotonic),
    "distribution": Kind(distribution),
}, "check kind", "claimbench.check.kinds")


def evaluate_check(spec: CheckSpec, obs: Observations) -> CheckResult:
    """One check's result; a run that is missing or diverged, or a metric that is absent or not a
    finite number, is an error result (too few seeds for the kind: inconclusive)."""
    kind = KINDS[spec.kind]
    desc = spec.params.description or spec.kind
    try:
        result = kind.evaluate(spec.kind, spec.params, obs.requiring(kind.min_seeds))
    except TooFewSeeds as e:
        result = CheckResult(spec.kind, INCONCLUSIVE, desc, e.arithmetic, str(e))
    except CheckFailure as e:
        result = CheckResult(spec.kind, ERROR, desc, e.arithmetic, str(e))
    except NonFinite as e:
        # A statistic that came out NaN or infinite from finite seeds (overflow): undecidable.
        result = CheckResult(spec.kind, ERROR, desc, f"{e}; not compared", f"cannot be judged: {e}")
    result.field_path, result.line = spec.field_path, spec.line
    if spec.params.description:
        result.description = spec.params.description
    result.paper_fails = spec.params.paper_fails or ""
    result.robustness = spec.params.robustness or ""
    if result.paper_fails and result.status != REPRODUCED:
        result.reason += f" (the paper's own numbers fail this check too: {result.paper_fails})"
    return result


def check_claim_tier(checks: Iterable[CheckSpec], obs: Observations) -> list[CheckResult]:
    return [evaluate_check(spec, obs) for spec in checks]
