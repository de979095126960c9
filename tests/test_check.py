"""Check kinds and verdicts on fabricated per-seed values (nothing is trained)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from scipy import stats as sps

from claimbench.check.evaluate import evaluate_claim
from claimbench.check.kinds import check_claim_tier
from claimbench.spec.checks import SchemaError, parse_check_params, parse_selection, validate_selection
from claimbench.check.verdict import (
    ERROR,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    CheckResult,
    Stats,
    Verdict,
    fmt,
    welch_diff_ci,
    welch_greater,
)
from claimbench.spec.claims import CheckSpec
from tests.helpers import BETAS, LAYERS, Runs, diverge_claim, fabricate, per_seed, sweep, two


def run_check(runs: Runs, kind: str, **params) -> CheckResult:
    # The parameters must pass the claim-file validation first.
    typed, problems = parse_check_params(kind, {"kind": kind, **params}, runs.groups)
    assert problems == []
    spec = CheckSpec(kind, typed, 7, "tiers.smoke.checks[0]")
    (result,) = check_claim_tier([spec], runs.obs())
    assert result.kind == kind and result.line == 7 and result.field_path == "tiers.smoke.checks[0]"
    return result


def scipy_greater(a, b) -> float:
    return float(sps.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


GT = dict(metric="sparsity_gamma", a="adam_l2", b="adam_wd")


# --- statistics ----------------------------------------------------------------------------


def test_stats_and_fmt():
    s = Stats((1.0, 2.0, 3.0))
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert str(s) == "2.0 ± 1.0 (n=3)"
    assert Stats((5.0,)).std == 0.0
    assert [fmt(x) for x in (None, 0, 0.5, 12.34, 1234.5, 0.0001234, -3.21)] == \
        ["-", "0", "0.5", "12.3", "1.23e+03", "0.000123", "-3.2"]
    assert fmt(float("nan")) == "nan"


def test_welch_greater_matches_scipy():
    a, b = [80.0, 82.0, 84.0], [40.0, 41.0, 43.0]
    p = welch_greater(Stats(tuple(a)), Stats(tuple(b)))
    assert p == pytest.approx(scipy_greater(a, b), rel=1e-12)
    # ... and the Welch formula by hand.
    va, vb = 4.0 / 3, (sps.tstd(b) ** 2) / 3
    t = (82.0 - 124 / 3) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert p == pytest.approx(float(sps.t.sf(t, dof)), rel=1e-9)
    assert p < 1e-3
    # n < 3 on either side: no test.
    assert welch_greater(Stats((1.0, 2.0)), Stats((0.0, 0.1, 0.2))) is None
    # No spread at all: decided by the means.
    assert welch_greater(Stats((2.0, 2.0, 2.0)), Stats((1.0, 1.0, 1.0))) == 0.0
    assert welch_greater(Stats((1.0, 1.0, 1.0)), Stats((1.0, 1.0, 1.0))) == 1.0


def test_welch_ci_matches_scipy():
    a, b = [9.0, 10.0, 11.5, 10.2], [9.4, 10.6, 11.2]
    lo, hi = welch_diff_ci(Stats(tuple(a)), Stats(tuple(b)))
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert welch_diff_ci(Stats((1.0, 2.0)), Stats((1.0, 2.0, 3.0))) is None
    assert welch_diff_ci(Stats((2.0, 2.0, 2.0)), Stats((1.0, 1.0, 1.0))) == (1.0, 1.0)


# --- greater / less ------------------------------------------------------------------------


def test_greater_reproduced():
    a, b = [80, 82, 84], [40, 41, 43]
    r = run_check(two(a, b), "greater", margin=10, **GT)
    p = scipy_greater(a, b)
    assert r.status == REPRODUCED and r.reason == ""
    assert r.description == "adam_l2 sparsity_gamma > adam_wd sparsity_gamma by more than 10.0"
    assert r.arithmetic == f"82.0 - 41.3 = 40.7; need > 10.0; Welch one-sided p = {p:.3g} (alpha 0.05)"
    assert r.observed == {
        "adam_l2 sparsity_gamma": {"mean": 82.0, "std": 2.0, "n": 3, "values": [80.0, 82.0, 84.0], "paper": 70},
        "adam_wd sparsity_gamma": {"mean": pytest.approx(124 / 3), "std": pytest.approx(sps.tstd(b)), "n": 3,
                                   "values": [40.0, 41.0, 43.0], "paper": 40},
    }


def test_greater_not_reproduced():
    r = run_check(two([50, 51, 52], [45, 46, 47]), "greater", margin=10, **GT)
    assert r.status == NOT_REPRODUCED
    assert r.reason == "difference 5.0 does not exceed margin 10.0"
    # The margin is strict: a difference of exactly the margin does not pass.
    r = run_check(two([50, 51, 52], [40, 41, 42]), "greater", margin=10, **GT)
    assert r.status == NOT_REPRODUCED


def test_greater_inconclusive_when_margin_met_but_not_significant():
    a, b = [10, 60, 110], [0, 1, 2]
    p = scipy_greater(a, b)
    assert 0.05 <= p < 0.2  # the data are built for this
    r = run_check(two(a, b), "greater", margin=15, **GT)
    assert r.status == INCONCLUSIVE
    assert r.reason == f"margin met but p = {p:.3g} >= 0.05"
    assert f"Welch one-sided p = {p:.3g} (alpha 0.05)" in r.arithmetic
    # A looser alpha accepts the same data.
    r = run_check(two(a, b), "greater", margin=15, alpha=0.2, **GT)
    assert r.status == REPRODUCED
    assert r.arithmetic.endswith(f"Welch one-sided p = {p:.3g} (alpha 0.2)")


@pytest.mark.parametrize("a, b", [([50, 52], [0, 1]), ([80], [40]), ([60, 62, 64], [0, 1])])
def test_greater_with_fewer_than_3_seeds_decides_on_margin_only(a, b):
    r = run_check(two(a, b), "greater", margin=15, **GT)
    assert r.status == REPRODUCED
    assert r.arithmetic.endswith("; n < 3: no test, margin only")
    assert "Welch" not in r.arithmetic
    assert [o["n"] for o in r.observed.values()] == [len(a), len(b)]


@pytest.mark.parametrize("a, b", [([10, 60], [0, 1]), ([52], [45, 48, 51])])
def test_greater_without_test_is_inconclusive_within_seed_spread(a, b):
    # [10, 60]: mean 35 clears the margin by 19.5, but the seeds spread by 35 (std).
    # [52] vs [45, 48, 51]: one seed above a 3-seed baseline by 4, margin 3, baseline std 3.
    margin = 15 if len(a) == 2 else 3
    r = run_check(two(a, b), "greater", margin=margin, **GT)
    assert r.status == INCONCLUSIVE
    assert "2 x seed std" in r.arithmetic and "too few seeds" in r.reason


def test_less():
    a, b = [10, 11, 12], [40, 41, 43]
    r = run_check(two(a, b), "less", margin=10, **GT)
    p = scipy_greater(b, a)
    assert r.status == REPRODUCED
    assert r.description == "adam_l2 sparsity_gamma < adam_wd sparsity_gamma by more than 10.0"
    assert r.arithmetic == f"11.0 - 41.3 = -30.3; need < -10.0; Welch one-sided p = {p:.3g} (alpha 0.05)"
    r = run_check(two(b, a), "less", margin=10, **GT)
    assert r.status == NOT_REPRODUCED and r.reason == "difference 30.3 does not exceed margin 10.0"


# --- equal ---------------------------------------------------------------------------------


def test_equal_reproduced_with_ci_inside_tolerance():
    a, b = [10.0, 10.1, 10.2], [10.05, 10.15, 10.25]
    r = run_check(two(a, b, "test_error"), "equal", metric="test_error", a="adam_l2", b="adam_wd", tolerance=0.5)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert -0.5 < ci.low < ci.high < 0.5
    assert r.status == REPRODUCED
    assert r.description == "adam_l2 test_error == adam_wd test_error within ±0.5"
    # The operands at the result's decimals: the shown numbers give the shown difference.
    assert r.arithmetic == (f"|10.10 - 10.15| = 0.05; need <= 0.5; "
                            f"95% CI of difference [{fmt(ci.low)}, {fmt(ci.high)}]")


def test_equal_not_reproduced():
    r = run_check(two([10, 10, 10], [12, 12, 12], "test_error"), "equal",
                  metric="test_error", a="adam_l2", b="adam_wd", tolerance=1)
    assert r.status == NOT_REPRODUCED and r.reason == "difference -2.0 exceeds ±1.0"


def test_equal_inconclusive_when_ci_is_wider_than_tolerance():
    r = run_check(two([9, 10, 11], [9.2, 10.2, 11.2], "test_error"), "equal",
                  metric="test_error", a="adam_l2", b="adam_wd", tolerance=0.5)
    assert r.status == INCONCLUSIVE
    assert r.reason == "means agree but the CI is wider than the tolerance"
    # With two seeds there is no CI: the means decide.
    r = run_check(two([9, 11], [9.2, 11.2], "test_error"), "equal",
                  metric="test_error", a="adam_l2", b="adam_wd", tolerance=0.5)
    assert r.status == REPRODUCED and "CI" not in r.arithmetic


def test_equal_between_two_metrics_of_one_run():
    runs = Runs().add("adam_l2", [{"test_error": e, "pruned_test_error": e + d}
                                  for e, d in ((10.4, 0.0), (10.6, 0.1), (10.5, -0.1))])
    r = run_check(runs, "equal", a={"run": "adam_l2", "metric": "pruned_test_error"},
                  b={"run": "adam_l2", "metric": "test_error"}, tolerance=0.5)
    assert r.status == REPRODUCED
    assert list(r.observed) == ["adam_l2 pruned_test_error", "adam_l2 test_error"]


# --- value ---------------------------------------------------------------------------------


def test_value_uses_the_paper_reference_by_default():
    runs = two([65, 68, 71], [40, 40, 40])
    r = run_check(runs, "value", metric="sparsity_gamma", a="adam_l2", tolerance=5)
    assert r.status == REPRODUCED
    assert r.description == "adam_l2 sparsity_gamma = 70.0 ± 5.0"
    assert r.arithmetic == "|68.0 - 70.0| = 2.0; need <= 5.0"
    r = run_check(runs, "value", metric="sparsity_gamma", a="adam_l2", tolerance=1)
    assert r.status == NOT_REPRODUCED and r.reason == "68.0 is outside 70.0 ± 1.0"
    # An explicit expected value wins over the paper's.
    r = run_check(runs, "value", metric="sparsity_gamma", a="adam_l2", tolerance=5, expected=50)
    assert r.status == NOT_REPRODUCED and r.arithmetic == "|68.0 - 50.0| = 18.0; need <= 5.0"


def test_value_without_reference_is_an_error():
    runs = Runs().add("adam_l2", per_seed("sparsity_gamma", [65, 68, 71]))
    r = run_check(runs, "value", metric="sparsity_gamma", a="adam_l2", tolerance=5)
    assert r.status == ERROR and "no expected value" in r.reason


def test_value_at_an_axis_point_and_per_layer_references():
    runs = Runs().add_axis("sweep", "optim.lam", [
        (1e-4, per_seed("sparsity_gamma", [69, 70, 71]), {"sparsity_gamma": 70}),
        (1e-3, per_seed("sparsity_gamma", [60, 61, 62]), {"sparsity_gamma": 83}),
    ])
    r = run_check(runs, "value", metric="sparsity_gamma", a="sweep@1e-3", tolerance=5)
    assert r.status == NOT_REPRODUCED and r.description == "sweep@0.001 sparsity_gamma = 83.0 ± 5.0"
    assert run_check(runs, "value", metric="sparsity_gamma", a="sweep@0.0001", tolerance=5).status == REPRODUCED

    paper = {"layer_sparsity_gamma": [0, 0, 0, 0, 1, 25, 23]}
    layers = [[0, 0, 0, 0, 2, 24, 22], [0, 0, 0, 0, 2, 26, 24], [0, 0, 0, 0, 2, 25, 23]]
    runs = Runs().add("amsgrad", [{"layer_sparsity_gamma": v} for v in layers], paper)
    r = run_check(runs, "value", a={"run": "amsgrad", "metric": "layer_sparsity_gamma", "layers": [6, 7]}, tolerance=1)
    assert r.status == REPRODUCED and r.arithmetic == "|24.0 - 24.0| = 0; need <= 1.0"
    r = run_check(runs, "value", a={"run": "amsgrad", "metric": "layer_sparsity_gamma", "layer": 6}, tolerance=0.5)
    assert r.status == REPRODUCED and r.arithmetic == "|25.0 - 25.0| = 0; need <= 0.5"


# --- monotonic -----------------------------------------------------------------------------


MONO = dict(run="lam_sweep", metric="sparsity_gamma")


def test_monotonic_increasing():
    points = [[1, 2, 3], [20, 21, 22], [50, 52, 54]]
    r = run_check(sweep(points), "monotonic", direction="increasing", **MONO)
    p = scipy_greater(points[2], points[0])
    assert r.status == REPRODUCED
    assert r.description == "sparsity_gamma increasing along optim.lam [0, 0.0001, 0.001]"
    assert r.arithmetic == ("means 2.0 -> 21.0 -> 52.0; worst step 19.0 (slack 0); total change 50.0 (need > 0)"
                            f"; endpoints Welch p = {p:.3g}")
    assert list(r.observed) == ["lam_sweep@0 sparsity_gamma", "lam_sweep@0.0001 sparsity_gamma",
                                "lam_sweep@0.001 sparsity_gamma"]
    r = run_check(sweep(points), "monotonic", direction="decreasing", **MONO)
    assert r.status == NOT_REPRODUCED and r.reason == "not monotonic"


def test_monotonic_decreasing():
    r = run_check(sweep([[30], [20], [5]]), "monotonic", direction="decreasing", **MONO)
    assert r.status == REPRODUCED and "Welch" not in r.arithmetic
    r = run_check(sweep([[30], [20], [5]]), "monotonic", direction="increasing", **MONO)
    assert r.status == NOT_REPRODUCED and r.reason == "not monotonic"


def test_monotonic_slack_and_min_change():
    dip = [[10], [9.5], [30]]
    r = run_check(sweep(dip), "monotonic", direction="increasing", slack=1, **MONO)
    assert r.status == REPRODUCED
    assert "worst step -0.5 (slack 1.0)" in r.arithmetic
    r = run_check(sweep(dip), "monotonic", direction="increasing", slack=0.2, **MONO)
    assert r.status == NOT_REPRODUCED and r.reason == "not monotonic"
    flat = [[10], [10.2], [10.5]]
    r = run_check(sweep(flat), "monotonic", direction="increasing", min_change=1, **MONO)
    assert r.status == NOT_REPRODUCED and r.reason == "change too small"
    assert run_check(sweep(flat), "monotonic", direction="increasing", **MONO).status == REPRODUCED


def test_monotonic_inconclusive_endpoints():
    points = [[0, 10, 20], [5, 15, 25], [10, 20, 30]]
    p = scipy_greater(points[2], points[0])
    assert p >= 0.05
    r = run_check(sweep(points), "monotonic", direction="increasing", **MONO)
    assert r.status == INCONCLUSIVE and r.reason == f"endpoints p = {p:.3g} >= 0.05"


# --- layer_pattern -------------------------------------------------------------------------


def test_layer_pattern():
    runs = Runs().add("amsgrad", [{"layer_sparsity_gamma": v} for v in LAYERS],
                      {"layer_sparsity_gamma": [0, 0, 0, 0, 1, 25, 23]})
    r = run_check(runs, "layer_pattern", run="amsgrad", metric="layer_sparsity_gamma",
                  layers=[6, 7], than=[1, 2, 3, 4], margin=5)
    late, early = [45.0, 45.0, 46.0], [0.0, 0.25, 0.25]
    # Layers of the same runs pair up seed by seed: a paired t-test, not Welch.
    p = float(sps.ttest_rel(late, early, alternative="greater").pvalue)
    assert r.status == REPRODUCED
    assert r.description == ("amsgrad layer_sparsity_gamma[C6,C7] > amsgrad layer_sparsity_gamma[C1,C2,C3,C4] "
                             "by more than 5.0")
    # One number of decimals for the whole line; the difference is that of the operands as shown.
    assert r.arithmetic == f"45.333 - 0.167 = 45.166; need > 5.0; paired t-test over seeds one-sided p = {p:.3g} (alpha 0.05)"
    late_obs, early_obs = r.observed.values()
    assert late_obs["values"] == late and late_obs["paper"] == 24.0
    assert early_obs["values"] == early and early_obs["paper"] == 0.0
    r = run_check(runs, "layer_pattern", run="amsgrad", metric="layer_sparsity_gamma",
                  layers=[1, 2], than=[6, 7], margin=5)
    assert r.status == NOT_REPRODUCED


# --- distribution --------------------------------------------------------------------------


def beta_runs() -> Runs:
    return Runs().add("adam", [{"beta": b, "beta_c6": b[5]} for b in BETAS])


def test_distribution_fraction_below_on_per_feature_lists():
    sel = {"run": "adam", "metric": "beta", "layer": 6, "stat": "fraction_below", "threshold": 0}
    r = run_check(beta_runs(), "distribution", a=sel, min=40)
    assert r.status == REPRODUCED
    assert r.description == "adam beta[C6] fraction_below >= 40.0"
    assert r.arithmetic == "mean 50.0 (per seed 50.0, 25.0, 75.0); need >= 40.0"
    r = run_check(beta_runs(), "distribution", a=sel, min=40, max=45)
    assert r.status == NOT_REPRODUCED and r.reason == "50.0 not >= 40.0 and <= 45.0"
    # fraction_at_most counts the zero.
    at_most = {**sel, "stat": "fraction_at_most"}
    r = run_check(beta_runs(), "distribution", a=at_most, min=55)
    assert r.status == REPRODUCED and r.observed["adam beta[C6] fraction_at_most"]["values"] == [50.0, 50.0, 75.0]


def test_distribution_requires_numeric_bounds():
    sel = {"run": "adam", "metric": "beta", "layer": 6, "stat": "mean"}
    _, problems = parse_check_params("distribution", {"kind": "distribution", "a": sel}, beta_runs().groups)
    assert problems == [("", "give min and/or max")]
    _, problems = parse_check_params("distribution", {"kind": "distribution", "a": sel, "min": "ten"}, beta_runs().groups)
    assert problems == [("min", "expected a number, got 'ten'")]


# --- errors --------------------------------------------------------------------------------


def test_selection_errors_are_check_errors():
    runs = two([1, 2, 3], [1, 2, 3])
    # A metric the runs do not record is a validation error (the catalogue) ...
    _, problems = parse_check_params("greater", {"metric": "no_such_metric", "a": "adam_l2", "b": "adam_wd"}, runs.groups)
    assert [f for f, _ in problems] == ["metric"] and "unknown metric of a training run 'no_such_metric'" in problems[0][1]
    # ... and a record that lacks a catalogued metric is an error result, not a crash.
    r = run_check(runs, "greater", metric="test_error", a="adam_l2", b="adam_wd")
    assert r.status == ERROR and r.reason == "metric 'test_error' missing from run adam_l2 (seed #1 of 3)"
    assert r.arithmetic == "adam_l2 test_error: run adam_l2 (seed #1 of 3) has no 'test_error'; not compared"
    r = run_check(runs, "value", a="adam_l2", metric="sparsity_gamma", tolerance=1, expected=2)
    assert r.status == REPRODUCED
    r = run_check(beta_runs(), "distribution", a={"run": "adam", "metric": "beta", "layer": 9, "stat": "mean"}, min=0)
    assert r.status == ERROR and "cannot take adam beta[C9] mean" in r.reason
    # A per-feature metric without layer and stat is not a number: rejected when validating.
    _, problems = parse_check_params("value", {"a": {"run": "adam", "metric": "beta"}, "tolerance": 1, "expected": 0},
                                     beta_runs().groups)
    assert problems == [("a.metric", "beta is a per-feature list per layer; select layer: N and a stat "
                                     "(fraction_below, fraction_above, fraction_at_most, mean)")]


def test_misspelled_check_parameters_are_errors_with_did_you_mean():
    runs = two([1, 2, 3], [1, 2, 3])
    for kind, raw, field, hint in [
        ("greater", {**GT, "margn": 15}, "margn", "did you mean 'margin'?"),
        ("greater", {**GT, "alpah": 0.1}, "alpah", "did you mean 'alpha'?"),
        ("equal", {**GT, "tolerance": 1, "tolerence": 2}, "tolerence", "did you mean 'tolerance'?"),
        ("value", {"metric": "sparsity_gamma", "a": "adam_l2", "tolerance": 1, "expectd": 3}, "expectd",
         "did you mean 'expected'?"),
    ]:
        typed, problems = parse_check_params(kind, raw, runs.groups)
        assert typed is None and len(problems) == 1, problems
        assert problems[0][0] == field and hint in problems[0][1]
    _, problems = parse_check_params("greater", {**GT, "margin": -1}, runs.groups)
    assert problems == [("margin", "expected a number >= 0, got -1")]
    _, problems = parse_check_params("greater", {**GT, "alpha": 1.5}, runs.groups)
    assert problems == [("alpha", "expected a number between 0 and 1, got 1.5")]
    _, problems = parse_check_params("equal", GT, runs.groups)
    assert problems == [("tolerance", "required by check kind 'equal'")]


def test_selection_parsing():
    s = parse_selection("lam_sweep@1e-3", "sparsity_gamma")
    assert (s.run, s.at, s.metric, s.label) == ("lam_sweep", 0.001, "sparsity_gamma", "lam_sweep@0.001 sparsity_gamma")
    assert parse_selection("sweep@0", "m").at == 0
    s = parse_selection({"run": "lam_sweep@1e-3", "metric": "test_error"}, "sparsity_gamma")
    assert (s.run, s.at, s.metric) == ("lam_sweep", 0.001, "test_error")
    assert parse_selection({"run": "x", "metric": "m", "threshold": "1e-3"}, None).threshold == 0.001
    groups = sweep([[1], [2], [3]]).groups
    assert "select a point" in validate_selection(parse_selection("lam_sweep", "sparsity_gamma"), groups)[0][1]
    assert validate_selection(parse_selection("lam_sweep@1e-4", "sparsity_gamma"), groups) == []
    assert "has no point optim.lam=0.5" in validate_selection(parse_selection("lam_sweep@0.5", "sparsity_gamma"), groups)[0][1]
    groups = two([1], [1]).groups
    assert "has no axis" in validate_selection(parse_selection("adam_l2@1", "sparsity_gamma"), groups)[0][1]
    for bad in ({"run": "x", "stat": "mode"}, {"run": "x", "layers": 6}, {"run": "x", "layer": 0},
                {"run": "x", "threshold": [1]}, {"run": "x", "label": ["a"]}, {"metric": "m"},
                {"run": "x", "colour": 1, 2: 3}, {"run": "x", "transform": "log10"}, {"run": None}, {"run": 5},
                ["x"], {"run": "x", "stat": ["mean"]}):
        with pytest.raises(SchemaError):
            parse_selection(bad, "m")


def test_diverged_and_missing_runs_give_error_while_other_checks_decide(tmp_path):
    spec, store, groups = diverge_claim(tmp_path)
    fabricate(store, groups["adam_l2"], [70, 71, 72])
    fabricate(store, groups["adam_wd"], [40, 41, 42], diverged_seed=1)
    # sgd_l2 is not stored yet: the claim is not run (not an error), and says how much is missing.
    verdict = evaluate_claim(spec, "smoke", store)
    assert (verdict.status, verdict.checks) == (NOT_RUN, [])
    assert verdict.reason.startswith("not run: 3 of 9 runs missing")
    fabricate(store, groups["sgd_l2"], [20, 21, 22])
    verdict = evaluate_claim(spec, "smoke", store)
    assert [c.status for c in verdict.checks] == [ERROR, REPRODUCED, REPRODUCED]
    assert [c.line for c in verdict.checks] == [15, 16, 17]
    diverged, value, _ = verdict.checks
    assert "diverged" in diverged.reason and diverged.reason == "run diverged: adam_wd at step 1234"
    assert value.arithmetic == "|71.0 - 70.0| = 1.0; need <= 5.0"
    assert verdict.status == ERROR
    assert verdict.reason == diverged.reason
    assert verdict.to_dict()["checks"][1]["status"] == REPRODUCED

    # Once every run is there and finite, the claim reproduces.
    fabricate(store, groups["adam_wd"], [40, 41, 42])
    verdict = evaluate_claim(spec, "smoke", store)
    assert verdict.status == REPRODUCED and [c.status for c in verdict.checks] == [REPRODUCED] * 3
    # The tier that is not run.
    verdict = evaluate_claim(spec, "full", store)
    assert (verdict.status, verdict.reason, verdict.checks) == (NOT_RUN, "needs the GPU tier", [])


def result(status, reason=""):
    return CheckResult("greater", status, "d", "a", reason)


@pytest.mark.parametrize("statuses, worst", [
    ([], REPRODUCED),
    ([REPRODUCED, REPRODUCED], REPRODUCED),
    ([REPRODUCED, INCONCLUSIVE], INCONCLUSIVE),
    ([INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED], NOT_REPRODUCED),
    ([NOT_REPRODUCED, ERROR, INCONCLUSIVE], ERROR),
    ([ERROR, REPRODUCED], ERROR),
])
def test_verdict_is_the_worst_check(statuses, worst):
    checks = [result(s, f"r-{s}") for s in statuses]
    v = Verdict.from_checks("c", "smoke", checks)
    assert (v.claim_id, v.tier, v.status) == ("c", "smoke", worst)
    assert v.reason == ("" if not statuses else f"r-{worst}")
    assert v.checks == checks


def test_verdict_reason_joins_distinct_reasons_of_the_worst_status():
    v = Verdict.from_checks("c", "smoke", [result(NOT_REPRODUCED, "x"), result(INCONCLUSIVE, "y"),
                                           result(NOT_REPRODUCED, "z"), result(NOT_REPRODUCED, "x")])
    assert v.status == NOT_REPRODUCED and v.reason == "x; z"


def test_equal_on_two_metrics_of_the_same_runs_is_paired():
    # Error after pruning equals error before on every seed: the paired CI is [0, 0] however much
    # the error varies between seeds (unpaired, the seed spread would make it inconclusive).
    runs = Runs().add("adam_l2", [{"test_error": e, "pruned_test_error": e} for e in (1.0, 2.0, 1.5)], {})
    r = run_check(runs, "equal", a={"run": "adam_l2", "metric": "pruned_test_error"},
                  b={"run": "adam_l2", "metric": "test_error"}, tolerance=0.5)
    assert r.status == REPRODUCED
    assert "95% CI of per-seed (paired) difference [0, 0]" in r.arithmetic


def test_the_seed_note_counts_the_checks_that_decided_the_verdict():
    """A claim that fails a check decided on three seeds is not a two-seed verdict because a
    check it passed compared a side of two seeds; a reproduced claim counts every check."""
    from claimbench.check.verdict import NOT_REPRODUCED, REPRODUCED, CheckResult, Verdict

    three = CheckResult("at_least", NOT_REPRODUCED, "a", "", observed={"adam": {"n": 3}})
    two = CheckResult("greater", REPRODUCED, "b", "", observed={"adam": {"n": 3}, "sgd": {"n": 2}})
    failed = Verdict.from_checks("c", "smoke", [three, two])
    assert failed.status == NOT_REPRODUCED and failed.fewest_seeds == 3 and failed.seeds_note() == ""
    passed = Verdict.from_checks("c", "smoke", [replace(three, status=REPRODUCED), two])
    assert passed.fewest_seeds == 2 and "decided on 2 seeds" in passed.seeds_note()


def _seeded(runs: Runs, seeds: dict[str, tuple[int, ...]]) -> Runs:
    """``runs`` with each named group's point trained on ``seeds[name]`` (configs that say so)."""
    from claimbench.runconfig import run_config_from_dict
    from claimbench.spec.run_groups import RunGroup, RunPoint

    for name, group_seeds in seeds.items():
        g = runs.groups[name]
        points = tuple(RunPoint(p.group, p.axis_value, tuple(run_config_from_dict({"train": {"seed": s}}) for s in group_seeds),
                                p.paper) for p in g.points)
        runs.groups[name] = RunGroup(g.name, g.axis, points, g.line)
    return runs


def test_two_runs_trained_on_the_same_seeds_are_compared_seed_by_seed():
    # Each seed shifts both runs alike (shared data order and initial weights); the per-seed
    # difference is -1 on every seed. Welch sees the seed spread and cannot tell; paired can.
    relu, leaky = [50.0, 53.0, 47.0], [49.0, 52.2, 45.8]
    paired = run_check(_seeded(two(leaky, relu), {"adam_l2": (0, 1, 2), "adam_wd": (0, 1, 2)}), "less", margin=0, **GT)
    p = float(sps.ttest_rel(relu, leaky, alternative="greater").pvalue)
    assert paired.status == REPRODUCED and f"paired t-test over seeds one-sided p = {p:.3g}" in paired.arithmetic
    # Other seeds, or the same seeds in another order: nothing pairs them, so Welch, which cannot resolve it.
    for other in ((3, 4, 5), (2, 1, 0)):
        welch = run_check(_seeded(two(leaky, relu), {"adam_l2": (0, 1, 2), "adam_wd": other}), "less", margin=0, **GT)
        assert welch.status == INCONCLUSIVE and "Welch one-sided p" in welch.arithmetic
    # Runs whose seeds are unknown (no configs) are not paired either.
    assert "Welch" in run_check(two(leaky, relu), "less", margin=0, **GT).arithmetic


def test_monotonic_endpoints_on_the_same_seeds_are_paired():
    runs = _seeded(sweep([[10.0, 14.0, 6.0], [11.0, 15.0, 7.0], [11.5, 15.5, 7.5]]), {"lam_sweep": (0, 1, 2)})
    r = run_check(runs, "monotonic", run="lam_sweep", metric="sparsity_gamma", direction="increasing", min_change=1)
    assert r.status == REPRODUCED and "endpoints paired t-test over seeds p = 0" in r.arithmetic
    welch = run_check(sweep([[10.0, 14.0, 6.0], [11.0, 15.0, 7.0], [11.5, 15.5, 7.5]]), "monotonic", run="lam_sweep",
                      metric="sparsity_gamma", direction="increasing", min_change=1)
    assert welch.status == INCONCLUSIVE and "endpoints Welch p" in welch.arithmetic


def test_a_robustness_row_is_reported_and_never_decides_the_verdict():
    runs = two([80, 82, 84], [40, 41, 43])
    deciding, _ = parse_check_params("greater", {"kind": "greater", "margin": 10, **GT}, runs.groups)
    robust, problems = parse_check_params("greater", {"kind": "greater", "margin": 60, "robustness": "another horizon", **GT},
                                          runs.groups)
    assert problems == []
    results = check_claim_tier([CheckSpec("greater", deciding, 7, "c[0]"), CheckSpec("greater", robust, 8, "c[1]")], runs.obs())
    assert [r.status for r in results] == [REPRODUCED, NOT_REPRODUCED]
    assert results[1].robustness == "another horizon" and results[0].robustness == ""
    verdict = Verdict.from_checks("c", "smoke", results)
    assert verdict.status == REPRODUCED and verdict.reason == ""
    # Only a robustness row with fewer seeds would not make the verdict a few-seed one either.
    few = replace(results[1], observed={"x": {"n": 1}})
    assert Verdict.from_checks("c", "smoke", [results[0], few]).seeds_note() == ""


def test_a_tier_of_robustness_rows_alone_is_refused(tmp_path):
    from claimbench.spec.claims import load_claim
    from claimbench.spec.source import SpecError
    from tests.helpers import DIVERGE_CLAIM

    text = DIVERGE_CLAIM
    lines = [line for line in text.splitlines() if "- {kind:" in line]
    for line in lines:
        text = text.replace(line, line.rstrip()[:-1] + ", robustness: another seed}")
    path = tmp_path / "claim.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="every check is a robustness row"):
        load_claim(path)
