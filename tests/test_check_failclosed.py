"""Checks fail closed: a measurement that is NaN, infinite, None or absent, a selection with no
seeds, and too few seeds for a kind never give 'reproduced', in every registered check kind.

Each kind has at least one scenario: fabricated runs and a check that reproduces on them as they
are. The property tests read which selections the clean check reads (so a kind's own way of
reading, per layer, per feature or along an axis, is followed without knowing it), then spoil one
seed of one of them and evaluate again.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimbench.check.evaluate import evaluate_claim
from claimbench.check.kinds import KINDS, Kind, Observations, compare, evaluate_check
from claimbench.check.verdict import (
    ERROR,
    INCONCLUSIVE,
    REPRODUCED,
    CheckResult,
    NonFinite,
    Stats,
    paired_diff_ci,
    paired_greater,
    welch_diff_ci,
    welch_greater,
)
from claimbench.spec.checks import Selection, parse_check_params, same_value
from claimbench.spec.claims import CheckSpec
from tests.helpers import BETAS, LAYERS, Runs, diverge_claim, fabricate, sweep, two

NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
MISSING = ("None", "absent", "untrained")  # the value is None, the key is absent, the run is not stored
FAULTS = (*NON_FINITE, *MISSING, "empty", "n=1")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Per scenario and fault: which selection, seed, layer and feature is hit (a small space).
PER_FAULT = settings(PROPERTY, max_examples=20)


@dataclass(frozen=True)
class Scenario:
    """Runs on which a check of ``kind`` with ``params`` reproduces as they are."""

    name: str
    kind: str
    runs: Callable[[], Runs]
    params: dict[str, Any]


SCENARIOS = [
    Scenario("greater", "greater", lambda: two([80, 82, 84], [40, 41, 43]),
             dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd", margin=10)),
    Scenario("less", "less", lambda: two([10, 11, 12], [40, 41, 43]),
             dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd", margin=10)),
    Scenario("at_most", "at_most", lambda: two([10.0, 10.2, 10.1], [10.1, 10.0, 10.2], "test_error"),
             dict(metric="test_error", a="adam_l2", b="adam_wd", margin=1)),
    Scenario("at_most paired", "at_most",
             lambda: Runs().add("adam", [{"test_error": e, "pruned_test_error": e + 0.1} for e in (10.0, 11.0, 10.5)]),
             dict(a={"run": "adam", "metric": "pruned_test_error"}, b={"run": "adam", "metric": "test_error"}, margin=1)),
    Scenario("layer_pattern", "layer_pattern",
             lambda: Runs().add("amsgrad", [{"layer_sparsity_gamma": v} for v in LAYERS]),
             dict(run="amsgrad", metric="layer_sparsity_gamma", layers=[6, 7], than=[1, 2, 3, 4], margin=5)),
    Scenario("equal", "equal", lambda: two([10.0, 10.1, 10.2], [10.05, 10.15, 10.25], "test_error"),
             dict(metric="test_error", a="adam_l2", b="adam_wd", tolerance=0.5)),
    Scenario("equal paired", "equal",
             lambda: Runs().add("adam", [{"test_error": e, "pruned_test_error": e} for e in (1.0, 2.0, 1.5)]),
             dict(a={"run": "adam", "metric": "pruned_test_error"}, b={"run": "adam", "metric": "test_error"},
                  tolerance=0.5)),
    Scenario("value", "value", lambda: two([69, 70, 71], [40, 40, 40]),
             dict(metric="sparsity_gamma", a="adam_l2", tolerance=5)),
    Scenario("value per layer", "value",
             lambda: Runs().add("amsgrad", [{"layer_sparsity_gamma": v} for v in LAYERS]),
             dict(a={"run": "amsgrad", "metric": "layer_sparsity_gamma", "layers": [6, 7]}, tolerance=5, expected=45)),
    Scenario("monotonic", "monotonic", lambda: sweep([[1, 2, 3], [20, 21, 22], [50, 52, 54]]),
             dict(run="lam_sweep", metric="sparsity_gamma", direction="increasing")),
    Scenario("monotonic per layer", "monotonic",
             lambda: Runs().add_axis("lam_sweep", "optim.lam", [
                 (lam, [{"layer_sparsity_gamma": [0, 0, 0, 0, 0, k * 10 + d, 0]} for d in (0, 1, 2)], {})
                 for k, lam in enumerate((0, 1e-4, 1e-3))]),
             dict(run="lam_sweep", metric="layer_sparsity_gamma", layer=6, direction="increasing")),
    Scenario("distribution", "distribution", lambda: Runs().add("adam", [{"beta": b} for b in BETAS]),
             dict(a={"run": "adam", "metric": "beta", "layer": 6, "stat": "fraction_below", "threshold": 0}, min=10)),
]


class Recording(Observations):
    """Observations that remember which selections a kind read."""

    def __init__(self, runs: Runs):
        super().__init__(runs.groups, lambda group, value: runs.metrics[(group.name, value)])
        self.read: list[Selection] = []

    def requiring(self, min_seeds: int) -> "Recording":
        self.min_seeds = min_seeds
        return self

    def stats(self, sel: Selection) -> Stats:
        self.read.append(sel)
        return super().stats(sel)


def check_spec(runs: Runs, kind: str, params: dict) -> CheckSpec:
    typed, problems = parse_check_params(kind, {"kind": kind, **params}, runs.groups)
    assert problems == [], problems
    return CheckSpec(kind, typed, 3, "tiers.smoke.checks[0]")


def evaluate(runs: Runs, spec: CheckSpec) -> tuple[CheckResult, list[Selection]]:
    obs = Recording(runs)
    return evaluate_check(spec, obs), obs.read


def run_name(sel: Selection) -> str:
    return f"{sel.run}@{sel.at}" if sel.at is not None else sel.run


def test_every_registered_kind_has_a_scenario():
    # A new kind in KINDS fails here until it has a scenario, so the properties below cover it.
    assert set(KINDS) <= {s.kind for s in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_clean_scenario_reproduces(scenario):
    # Without this the properties below could hold because nothing ever reproduces.
    runs = scenario.runs()
    result, read = evaluate(runs, check_spec(runs, scenario.kind, scenario.params))
    assert result.status == REPRODUCED, (result.reason, result.arithmetic)
    assert read, "the check read no selection"


@st.composite
def spoiled(draw, scenario: Scenario, fault: str):
    """(runs with ``fault`` in one seed of one selection the check reads, the check, that selection)."""
    runs = scenario.runs()
    spec = check_spec(runs, scenario.kind, scenario.params)
    _, read = evaluate(runs, spec)
    sel = draw(st.sampled_from(read))
    group = runs.groups[sel.run]
    point = next(p for p in group.points if sel.at is None or same_value(p.axis_value, sel.at))
    key = (group.name, point.axis_value)
    bad = Runs()
    bad.groups, bad.metrics = runs.groups, copy.deepcopy(runs.metrics)
    seeds = bad.metrics[key]
    i = draw(st.integers(0, len(seeds) - 1))
    if fault == "empty":
        bad.metrics[key] = []
    elif fault == "n=1":
        bad.metrics[key] = [seeds[i]]
    elif fault == "untrained":
        seeds[i] = None
    elif fault == "absent":
        del seeds[i][sel.metric]
    else:
        # The number the selection reads: a scalar, one of its layers, or one feature of its layer.
        value = None if fault == "None" else NON_FINITE[fault]
        holder, index = seeds[i], sel.metric
        if sel.layers or sel.layer:
            holder, index = holder[index], draw(st.sampled_from(sel.layers or (sel.layer,))) - 1
            if sel.stat:
                holder, index = holder[index], draw(st.integers(0, len(holder[index]) - 1))
        holder[index] = value
    return bad, spec, sel


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
@PER_FAULT
@given(data=st.data())
def test_one_spoiled_seed_never_reproduces(scenario, fault, data):
    runs, spec, sel = data.draw(spoiled(scenario, fault))
    result, _ = evaluate(runs, spec)
    if fault == "n=1":
        # One seed is a measurement, not a fault: a kind decides on it as documented (margin
        # or tolerance alone), unless the kind says it needs more seeds.
        assert result.status != ERROR, result.reason
        if KINDS[spec.kind].min_seeds > 1:
            assert result.status == INCONCLUSIVE
        return
    assert result.status == ERROR, (fault, result.status, result.arithmetic)
    assert run_name(sel) in result.reason and sel.metric in result.reason
    if fault in NON_FINITE or fault in ("None", "absent"):
        # The report's arithmetic line says what was not compared and why.
        assert run_name(sel) in result.arithmetic and sel.metric in result.arithmetic
        assert "not compared" in result.arithmetic
    if fault in NON_FINITE:
        assert f"= {NON_FINITE[fault]!r}" in result.reason and "not a finite number" in result.reason


def test_a_nan_in_one_feature_does_not_vanish_into_a_fraction():
    # fraction_below counts NaN as "not below": without the guard the stat is a finite number.
    betas = copy.deepcopy(BETAS)
    betas[1][5][1] = math.nan
    runs = Runs().add("adam", [{"beta": b} for b in betas])
    scenario = next(s for s in SCENARIOS if s.kind == "distribution")
    result, _ = evaluate(runs, check_spec(runs, "distribution", scenario.params))
    assert result.status == ERROR
    assert result.reason == ("adam beta[C6] fraction_below: run adam (seed #2 of 3) metric beta[C6] feature 2 = nan, "
                             "not a finite number")
    assert result.arithmetic == "run adam (seed #2 of 3) metric beta[C6] feature 2 = nan: not a finite number; not compared"


def test_the_reported_case_nan_minus_zero_is_an_error_not_reproduced():
    runs = two([math.nan, math.nan, math.nan], [0, 0, 0])
    result, _ = evaluate(runs, check_spec(runs, "greater", dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd",
                                                                 margin=20)))
    assert result.status == ERROR
    assert result.arithmetic == "run adam_l2 (seed #1 of 3) metric sparsity_gamma = nan: not a finite number; not compared"


def test_a_nan_in_an_unread_layer_does_not_matter():
    runs = Runs().add("amsgrad", [{"layer_sparsity_gamma": [math.nan, *v[1:]]} for v in LAYERS])
    result, _ = evaluate(runs, check_spec(runs, "value", dict(
        a={"run": "amsgrad", "metric": "layer_sparsity_gamma", "layers": [6, 7]}, tolerance=5, expected=45)))
    assert result.status == REPRODUCED


@pytest.mark.parametrize("kind, params", [
    ("greater", dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd")),
    ("distribution", dict(metric="sparsity_gamma", a="adam_l2", min=0)),  # no test to catch it later
])
def test_finite_values_whose_mean_overflows_are_an_error(kind, params):
    runs = two([1.7e308, 1.7e308, 1.7e308], [0, 0, 0])
    result, _ = evaluate(runs, check_spec(runs, kind, params))
    assert result.status == ERROR and "adam_l2 sparsity_gamma" in result.reason and "not finite" in result.reason


def test_a_kind_that_needs_a_spread_is_inconclusive_on_fewer_seeds(monkeypatch):
    # Every kind so far judges one seed; a kind that declares more makes fewer inconclusive.
    runs = two([80], [40, 41, 43])
    spec = check_spec(runs, "greater", dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd", margin=10))
    assert evaluate(runs, spec)[0].status == REPRODUCED
    monkeypatch.setitem(KINDS, "greater", Kind(compare, min_seeds=3))
    result, _ = evaluate(runs, spec)
    assert result.status == INCONCLUSIVE
    assert result.reason == "adam_l2 sparsity_gamma: n=1, this check needs at least 3 seeds"


def test_a_nan_in_the_cache_names_the_training_seed(tmp_path):
    spec, store, groups = diverge_claim(tmp_path)
    fabricate(store, groups["adam_l2"], [70, 71, 72])
    fabricate(store, groups["adam_wd"], [40, math.nan, 42])
    fabricate(store, groups["sgd_l2"], [20, 21, 22])
    verdict = evaluate_claim(spec, "smoke", store)
    greater, value, less = verdict.checks
    assert verdict.status == ERROR and greater.status == ERROR
    assert greater.reason == "adam_wd sparsity_gamma: run adam_wd (seed 1) metric sparsity_gamma = nan, not a finite number"
    assert (value.status, less.status) == (REPRODUCED, REPRODUCED)


# --- the statistics helpers ----------------------------------------------------------------

HELPERS = (welch_greater, welch_diff_ci, paired_greater, paired_diff_ci)
finite = st.floats(-1e3, 1e3, allow_nan=False)
anything = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf]), st.floats())


@pytest.mark.parametrize("helper", HELPERS, ids=lambda h: h.__name__)
@PROPERTY
@given(a=st.lists(anything, max_size=5), b=st.lists(anything, max_size=5))
def test_helpers_refuse_what_is_not_finite(helper, a, b):
    sa, sb = Stats(tuple(a), "a"), Stats(tuple(b), "b")
    usable = bool(a and b) and all(map(math.isfinite, a + b))
    try:
        out = helper(sa, sb)
    except NonFinite:
        return  # refusing is always safe (finite input can still overflow, e.g. 1e308 - -1e308)
    assert usable, f"{helper.__name__} accepted {a} vs {b}"
    assert out is None or all(map(math.isfinite, out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("helper", HELPERS, ids=lambda h: h.__name__)
@pytest.mark.parametrize("bad", [(), (math.nan, 1.0, 2.0), (1.0, math.inf, 2.0), (-math.inf, 1.0, 2.0)])
def test_each_helper_refuses_empty_and_non_finite_input_naming_it(helper, bad):
    with pytest.raises(NonFinite, match="^bad sparsity: "):
        helper(Stats(bad, "bad sparsity"), Stats((1.0, 2.0, 3.0)))
    with pytest.raises(NonFinite, match="^bad sparsity: "):
        helper(Stats((1.0, 2.0, 3.0)), Stats(bad, "bad sparsity"))


def test_stats_still_hold_non_finite_values_for_reports():
    # Reports print what was measured; only deciding from it is refused.
    s = Stats((math.nan, 1.0))
    assert s.n == 2 and math.isnan(s.mean)
    assert math.isnan(Stats(()).mean)
    with pytest.raises(NonFinite, match=r"^values: value 1 of 2 is nan, not a finite number$"):
        s.require_finite()
    with pytest.raises(NonFinite, match=r"^values: no values \(n=0\)$"):
        Stats(()).require_finite()


def test_welch_interval_of_huge_finite_values_does_not_overflow():
    """Found by the property test above: squaring variances of 1e77-sized values overflowed
    (OverflowError, neither an interval nor a refusal)."""
    low, high = welch_diff_ci(Stats((0.0, 0.0, 0.0)), Stats((0.0, 0.0, 3.4737626771194864e77)))
    assert math.isfinite(low) and math.isfinite(high) and low < 0 < high


def test_a_p_value_scipy_calls_unreliable_is_refused():
    """Nearly identical values of large magnitude: scipy warns that its moments lost their
    precision; that p-value decides nothing."""
    nearly = Stats((1e10, 1e10 + 1e-5, 1e10), "a")
    with pytest.raises(NonFinite, match="cannot be computed reliably"):
        welch_greater(nearly, Stats((1.0, 2.0, 3.0), "b"))
