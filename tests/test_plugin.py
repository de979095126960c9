"""The pytest plugin end to end on fabricated cached runs: collection, selection, outcomes, reports.

Each test builds a project with pytester (a claims/ folder with its paper description and a base
file; the plugin comes from claimbench's pytest11 entry point, as for any user) and points it at a run
cache filled with fabricated records, with --no-train. One test trains a missing run (seconds).
"""

from __future__ import annotations

from pathlib import Path

import re
import pytest
# Imported here, before any in-process pytester run: the first training of a process imports
# torch._dynamo, and an inner pytest run that did so would drop it from sys.modules when pytester
# restores its module snapshot, while the C++ operator library it registered stays; the next
# import in this process then fails ("Only a single TORCH_LIBRARY can be used to register the
# namespace _inductor_test"), seen when test_cli ran after this file in one process.
import torch._dynamo  # noqa: F401

from claimbench.cache import RunStore, run_key
from claimbench.spec.claims import load_claim
from claimbench.cache import RunRecord

pytest_plugins = ["pytester"]

PAPER = """\
title: A fixture paper
authors: [Ada Lovelace, Alan Turing]
venue: Fixture 2019
documents:
  main: {name: the main paper}
  supp: {name: its supplement}
"""
BASE = """\
# shared base: never trained by these tests
model: {arch: basicnet, width: 0.125}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1e-2}
train: {batch_size: 16, unit: steps, phases: [20, 5], snapshots: 2}
"""


def claim(cid: str, check: str, extra_tier: str = "", runs: str = "") -> str:
    return f"""\
id: {cid}
title: Fixture claim {cid}
claim: "fabricated"
source: {{paper: main, where: Table 1}}
tiers:
  smoke:
    why: fabricated runs, never trained
    base: {{include: _bases/tiny.yaml}}
    seeds: [0, 1, 2]{extra_tier}
    runs:
      adam_l2: {{set: {{optim.regularizer: l2}}, paper: {{sparsity_gamma: 70}}}}
      adam_wd: {{set: {{optim.regularizer: wd}}, paper: {{sparsity_gamma: 40}}}}{runs}
    checks:
      - {check}
"""


# Line 14 of every claim file is its (first) check.
CHECK_LINE = 14
CLAIMS = {
    "good.yaml": claim("claim-good", "{kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}"),
    "bad.yaml": claim("claim-bad", "{kind: greater, metric: sparsity_gamma, a: adam_wd, b: adam_l2, margin: 10}"),
    "gated.yaml": claim("claim-gated", "{kind: greater, metric: sparsity_gamma, a: adam_wd, b: adam_l2, margin: 10}",
                        extra_tier="\n    gate: false\n    gate_reason: seed-sensitive at smoke scale"),
    "missing.yaml": claim("claim-missing", "{kind: greater, metric: sparsity_gamma, a: sgd_l2, b: adam_wd, margin: 10}",
                          runs="\n      sgd_l2: {set: {optim.name: sgd}}"),
    "notrun.yaml": """\
id: claim-notrun
title: A claim without a smoke analog
claim: "fabricated"
source: {paper: supp, where: Table 3}
tiers:
  smoke:
    not_run: "no small analog of ImageNet"
""",
    "broken.yaml": """\
id: claim-broken
title: broken
  claim: "bad indentation"
""",
    "wrong_source.yaml": claim("claim-wrong-source", "{kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, "
                               "margin: 10}").replace("paper: main,", "paper: mian,"),
    "invalid.yaml": claim("claim-invalid", "{kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}")
    .replace("{optim.regularizer: wd}", "{optim.regularizer: wd, optim.name: adma}"),
    # Files starting with '_' are drafts/bases: never collected, even when broken.
    "_draft.yaml": "id: [this is not collected\n",
}
SPARSITY = {"adam_l2": [70.0, 71.0, 72.0], "adam_wd": [40.0, 42.0, 41.0]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One run cache shared by every test: adam_l2 and adam_wd of the fixture claims, 3 seeds."""
    root = tmp_path_factory.mktemp("fabricate")
    (root / "claims" / "_bases").mkdir(parents=True)
    (root / "claims" / "_bases" / "tiny.yaml").write_text(BASE)
    (root / "claims" / "paper.yaml").write_text(PAPER)
    path = root / "claims" / "good.yaml"
    path.write_text(CLAIMS["good.yaml"])
    spec = load_claim(path)
    store = RunStore(root / "cache")
    for name, values in SPARSITY.items():
        for config, value in zip(spec.tier("smoke").groups[name].point().configs, values):
            metrics = {"sparsity_gamma": value, "test_error": 10.0, "diverged_at": None, "steps": 25}
            store.put(run_key(config), RunRecord(config, metrics, history={}, provenance={}, state_dict=None))
    assert len(store.keys()) == 6
    return store.root


def project(pytester: pytest.Pytester, *names: str, folder: str = "claims", paper: bool = True) -> Path:
    pytester.makeini("[pytest]\n")  # the rootdir is the project, whatever paths the options name
    claims = pytester.mkdir(folder)
    (claims / "_bases").mkdir()
    (claims / "_bases" / "tiny.yaml").write_text(BASE)
    if paper:
        (claims / "paper.yaml").write_text(PAPER)
    for name in names:
        (claims / name).write_text(CLAIMS[name])
    return claims


def run(pytester: pytest.Pytester, cache: Path, *args: str, where: str = "claims", train: bool = False):
    return pytester.runpytest(where, "--tier", "smoke", "--claimbench-cache", str(cache), *([] if train else ["--no-train"]),
                              "-p", "no:cacheprovider", *args)


def test_one_item_per_claim_file_named_by_id(pytester, cache):
    project(pytester, "good.yaml", "bad.yaml", "notrun.yaml", "broken.yaml", "_draft.yaml")
    result = run(pytester, cache, "--collect-only", "-q")
    items = sorted(line for line in result.stdout.lines if "::" in line)
    assert items == ["claims/bad.yaml::claim-bad", "claims/broken.yaml::broken", "claims/good.yaml::claim-good",
                     "claims/notrun.yaml::claim-notrun"]
    assert "_draft" not in result.stdout.str() and "tiny" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*4 tests collected*"])
    assert result.ret == 0


def test_reproduced_claim_passes(pytester, cache):
    project(pytester, "good.yaml")
    result = run(pytester, cache, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["claims/good.yaml::claim-good PASSED*"])
    result.stdout.fnmatch_lines(["claimbench: tier=smoke cache=*"])
    # -v shows the numbers that decided it, as the report prints them.
    line = next(line for line in result.stdout.lines if "claim-good PASSED" in line)
    assert re.search(r"PASSED \(.*\d.*\)", line), line


def test_keyword_selects_claims(pytester, cache):
    project(pytester, "good.yaml", "bad.yaml", "notrun.yaml")
    run(pytester, cache, "-k", "good").assert_outcomes(passed=1, deselected=2)
    run(pytester, cache, "-k", "claim and not good and not bad").assert_outcomes(skipped=1, deselected=2)


def test_tier_marker(pytester, cache):
    project(pytester, "good.yaml", "bad.yaml")
    run(pytester, cache, "-m", "smoke").assert_outcomes(passed=1, failed=1)
    run(pytester, cache, "-m", "full").assert_outcomes(deselected=2)
    # At the full tier the same items carry the 'full' marker; these claims have no such tier.
    result = run(pytester, cache, "-m", "full", "--tier", "full", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*not run at the full tier: the claim file defines no 'full' tier*"])


def test_not_reproduced_claim_fails_with_numbers_and_location(pytester, cache):
    project(pytester, "bad.yaml")
    result = run(pytester, cache)
    result.assert_outcomes(failed=1)
    path = pytester.path / "claims" / "bad.yaml"
    result.stdout.fnmatch_lines([
        f"claim claim-bad ({path}:1) at tier smoke: NOT REPRODUCED",
        "  Fixture claim claim-bad",
        "  source: main Table 1",
        f"  [[]not reproduced[]] adam_wd sparsity_gamma > adam_l2 sparsity_gamma by more than 10.0 "
        f"   ({path}:{CHECK_LINE}, tiers.smoke.checks[[]0[]])",
        "      adam_wd sparsity_gamma: 41.0 ± 1.0 (n=3)   paper: 40",
        "      adam_l2 sparsity_gamma: 71.0 ± 1.0 (n=3)   paper: 70",
        "      41.0 - 71.0 = -30.0; need > 10.0; paired t-test over seeds one-sided p = * (alpha 0.05)",
        "      reason: difference -30.0 does not exceed margin 10.0",
    ])
    result.stdout.fnmatch_lines(["FAILED claims/bad.yaml::claim-bad*"])
    assert "Traceback" not in result.stdout.str()


def test_missing_run_with_no_train_is_an_error(pytester, cache):
    project(pytester, "missing.yaml")
    result = run(pytester, cache)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "claim claim-missing (*missing.yaml:1) at tier smoke: NOT RUN",
        "*reason: not run: 3 of 9 runs missing*",
    ])


def test_not_run_tier_is_skipped_with_its_reason(pytester, cache):
    project(pytester, "notrun.yaml")
    result = run(pytester, cache, "-rs")
    result.assert_outcomes(skipped=1)
    # The skip names the claim file (not the plugin's source line).
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] claims/notrun.yaml: not run at the smoke tier: "
                                 "no small analog of ImageNet"])
    assert "pytest_plugin.py" not in result.stdout.str()


def test_ungated_claim_that_fails_is_xfailed_with_its_reason(pytester, cache):
    project(pytester, "gated.yaml")
    result = run(pytester, cache, "-rx")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["XFAIL claims/gated.yaml::claim-gated - not reproduced "
                                 "(kept out of the CI gate: seed-sensitive at smoke scale)"])
    assert result.ret == 0


def test_with_gated_only_an_ungated_claim_is_skipped_with_its_reason_and_a_gated_one_checked(pytester, cache):
    project(pytester, "gated.yaml", "good.yaml")
    result = run(pytester, cache, "-rs", "--gated-only")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] claims/gated.yaml: kept out of the CI gate at the smoke tier, "
                                 "not trained with --gated-only (make smoke checks it): seed-sensitive at smoke scale"])


def test_train_gated_only_selects_the_claims_the_tier_gates_derived_from_the_files():
    from argparse import Namespace

    from claimbench.claims_cli import narrow
    from claimbench.spec.claims import claim_files, load_claims
    from tests.helpers import REPO

    specs = load_claims(claim_files(REPO / "claims"))
    for tier in ("smoke", "full"):
        kept = {s.id for s in narrow(Namespace(k=None, tier=tier, gated_only=True), specs)}
        for s in specs:
            assert (s.id in kept) == (s.tier(tier).gate and not s.tier(tier).not_run), (tier, s.id)
    smoke = {s.id for s in narrow(Namespace(k=None, tier="smoke", gated_only=True), specs)}
    assert smoke and smoke < {s.id for s in specs if not s.tier("smoke").not_run}


def test_broken_claim_files_fail_naming_file_and_line(pytester, cache):
    project(pytester, "broken.yaml", "invalid.yaml", "good.yaml", "wrong_source.yaml")
    result = run(pytester, cache)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "invalid claim file:",
        "  claims/broken.yaml:3: YAML syntax error: mapping values are not allowed*",
    ])
    result.stdout.fnmatch_lines([
        "invalid claim file:",
        "  claims/invalid.yaml:12: tiers.smoke.runs.adam_wd.set.optim.name: unknown optimizer 'adma'*known: *sgd",
    ])
    result.stdout.fnmatch_lines([
        "invalid claim file:",
        "  claims/wrong_source.yaml:4: source.paper: unknown document (see claims/paper.yaml) 'mian' "
        "(did you mean 'main'?); known: main, supp",
    ])
    result.stdout.fnmatch_lines(["FAILED claims/broken.yaml::broken*", "FAILED claims/invalid.yaml::invalid*"])
    assert "Traceback" not in result.stdout.str()


# --- where claims are found, and how the plugin is loaded ---------------------------------------


def test_any_folder_with_a_paper_description_is_a_claims_folder(pytester, cache):
    project(pytester, "good.yaml", "bad.yaml", folder="my_claims")
    result = run(pytester, cache, "--collect-only", "-q", where="my_claims")
    assert sorted(line for line in result.stdout.lines if "::" in line) == [
        "my_claims/bad.yaml::claim-bad", "my_claims/good.yaml::claim-good"]
    assert "paper.yaml" not in result.stdout.str()


def test_yaml_without_a_paper_description_is_not_a_claim_unless_named(pytester, cache):
    # Installed, the plugin sees every project's YAML files: only a claims folder's are claims.
    folder = project(pytester, "good.yaml", folder="config", paper=False)
    result = run(pytester, cache, "--collect-only", "-q", where="config")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    # Named on the command line, a file is taken as a claim (what `claimbench verify` passes to pytest).
    result = run(pytester, cache, "-q", where=str(folder / "good.yaml"))
    result.assert_outcomes(passed=1)


def test_projects_without_claims_are_left_alone(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    pytester.path.joinpath("settings.yaml").write_text("not: a claim\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "claimbench:" not in result.stdout.str()


def test_plugin_is_not_imported_with_torch(pytester):
    # Loaded by every pytest run once claimbench is installed: it must not cost a torch import.
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_torch="import sys\n\ndef test_no_torch():\n    assert 'claimbench.pytest_plugin' in sys.modules\n"
                                   "    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)


def test_a_conftest_that_also_loads_the_plugin_loads_it_once(pytester, cache):
    project(pytester, "good.yaml")
    pytester.makeconftest('pytest_plugins = ["claimbench.pytest_plugin"]\n')
    result = run(pytester, cache, "-v")
    result.assert_outcomes(passed=1)  # registered twice, pluggy would refuse, and items would double
    assert result.stdout.str().count("claimbench: tier=smoke") == 1


TRAINED = """\
id: claim-trained
title: A run the cache lacks
claim: "trained by the plugin"
source: {paper: main, where: Table 1}
tiers:
  smoke:
    why: one tiny run (10 steps of a width-0.125 BasicNet on digits), trained by the test
    base: {include: _bases/tiny.yaml}
    seeds: [0]
    runs:
      tiny: {set: {train.phases: [8, 2]}}
    checks:
      - {kind: distribution, a: {run: tiny, metric: test_error}, min: 0, max: 100}
"""


def test_missing_run_is_trained_then_read_from_the_cache(pytester, tmp_path):
    claims = project(pytester)
    (claims / "trained.yaml").write_text(TRAINED)
    store = RunStore(tmp_path / "cache")
    assert store.keys() == []
    result = run(pytester, store.root, "-v", "--claimbench-device", "cpu", train=True)
    result.assert_outcomes(passed=1)
    (key,) = store.keys()
    record = store.get(key)
    assert record.metrics["steps"] == 10 and 0 <= record.metrics["test_error"] <= 100
    # Now cached: passes without training, and nothing new is written.
    run(pytester, store.root, "-v").assert_outcomes(passed=1)
    assert store.keys() == [key]
