"""Claim files -> ClaimSpec, and every way a claim file can be wrong (file, line, field, all at once)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimbench import cli
from claimbench.config import RunConfig
from claimbench.spec.claims import ClaimSpec, claim_files, load_claim, load_claims
from claimbench.spec.source import SpecError, load_source
from tests.helpers import REPO

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOOD = FIXTURES / "good_claims" / "sweep_claim.yaml"
BAD = FIXTURES / "bad_claims"
DUPLICATES = BAD / "duplicate_ids"

OPTIMIZERS = "adadelta, adagrad, adam, adamax, amsgrad, rmsprop, sgd"
DATASETS = "cifar10, cifar100, digits, imagenet, shapes_clean, shapes_cluttered, tinyimagenet"
CHECK_KINDS = "at_most, distribution, equal, greater, layer_pattern, less, monotonic, value"


def problems_of(path: Path) -> list:
    with pytest.raises(SpecError) as info:
        load_claim(path)
    return info.value.problems


def same_file(problem, path: Path) -> bool:
    return Path(problem.file).resolve() == path.resolve()


# --- a valid claim -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> ClaimSpec:
    return load_claim(GOOD)


def test_valid_claim_top_level(good):
    assert good.id == "fixture-sweep"
    assert good.finding == 2
    assert good.line == 1
    assert good.claim == "Sparsity grows with the L2 coefficient."
    assert good.source == {"paper": "002_3e40d46e1092a6d6.txt", "where": "Table 1"}
    assert good.notes == "used by tests/test_spec.py only"
    assert set(good.tiers) == {"smoke", "full"}
    assert good.tier("full").not_run == "needs CIFAR-10 at paper scale"
    assert good.tier("full").groups == {} and good.tier("full").checks == ()


def test_valid_claim_groups_and_seeds(good):
    smoke = good.tier("smoke")
    assert smoke.why == "a tiny analog, never trained by the tests"
    assert smoke.gate is True and smoke.gate_reason is None
    assert list(smoke.groups) == ["adam_l2", "adam_wd", "lam_sweep"]
    l2 = smoke.groups["adam_l2"]
    assert l2.axis is None and l2.line == 13 and len(l2.points) == 1
    point = l2.point()
    assert point.axis_value is None
    assert [c.train.seed for c in point.configs] == [0, 1, 2]
    assert all(isinstance(c, RunConfig) for c in point.configs)
    # Seeds differ only in the seed: three distinct run configs.
    assert len({c.canonical_json() for c in point.configs}) == 3
    assert point.paper == {"sparsity_gamma": 70, "layer_sparsity_gamma": [0, 0, 0, 0, 1, 25, 23]}
    # 3 + 3 + 3 points x 2 seeds
    assert len(smoke.configs()) == 12


def test_base_include_is_resolved_relative_to_the_claim_file(good, tmp_path, monkeypatch):
    # Loading from an unrelated working directory gives the same configs.
    monkeypatch.chdir(tmp_path)
    again = load_claim(GOOD)
    assert again.tier("smoke").configs() == good.tier("smoke").configs()
    cfg = good.tier("smoke").groups["adam_l2"].point().configs[0]
    # From _bases/tiny.yaml ...
    assert cfg.model.width == 0.125
    assert cfg.data.dataset == "digits"
    assert cfg.train.batch_size == 16 and cfg.train.unit == "steps" and cfg.train.phases == (20, 5)
    assert cfg.optim.lam == 0.01  # "1e-2" in YAML is a string: read as a number
    # ... overridden by the claim's own base (optim.name) and the run's set (regularizer).
    assert cfg.optim.name == "adam"
    assert cfg.optim.regularizer == "l2"
    wd = good.tier("smoke").groups["adam_wd"].point().configs[0]
    assert wd.optim.regularizer == "wd" and wd.optim.lam == 1e-4
    assert isinstance(wd.optim.lam, float)


def test_axis_points_numbers_and_paper_alignment(good):
    sweep = good.tier("smoke").groups["lam_sweep"]
    assert sweep.axis == "optim.lam"
    values = [p.axis_value for p in sweep.points]
    assert values == [0, 1e-4, 1e-3]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    assert [p.paper for p in sweep.points] == [
        {"sparsity_gamma": 0, "test_error": 10.1},
        {"sparsity_gamma": 70, "test_error": 10.5},
        {"sparsity_gamma": 83, "test_error": 13.1},
    ]
    # The group's own seeds override the tier's.
    for p, lam in zip(sweep.points, (0.0, 1e-4, 1e-3)):
        assert [c.train.seed for c in p.configs] == [0, 1]
        assert [c.optim.lam for c in p.configs] == [lam, lam]
        assert all(c.optim.name == "adam" for c in p.configs)
    assert sweep.point(1e-3).paper["sparsity_gamma"] == 83
    with pytest.raises(KeyError):
        sweep.point(0.5)


def test_valid_claim_checks(good):
    checks = good.tier("smoke").checks
    assert [c.kind for c in checks] == ["greater", "monotonic", "value", "layer_pattern"]
    assert [c.line for c in checks] == [20, 21, 22, 23]
    assert [c.field_path for c in checks] == [f"tiers.smoke.checks[{i}]" for i in range(4)]
    first = checks[0].params
    assert (first.metric, first.a.run, first.b.run, first.margin, first.alpha) == ("sparsity_gamma", "adam_l2", "adam_wd", 10, 0.05)
    assert checks[3].params.layers == (6, 7) and checks[3].params.than == (1, 2, 3, 4)


def test_source_lines_and_safe_loading():
    src = load_source(GOOD)
    assert src.line("tiers.smoke.runs.lam_sweep.axis.optim.lam") == 16
    assert src.line("tiers.smoke.runs.lam_sweep.paper.sparsity_gamma") == 17
    assert src.line("tiers.smoke.checks[3].layers") == 26
    assert src.line("tiers.smoke.checks[3].layers[1]") == 26
    # A field that is absent resolves to its nearest ancestor.
    assert src.line("tiers.smoke.checks[2].a.stat") == 22
    assert src.line("tiers.smoke.gate_reason") == 8
    assert src.line("no.such.field") == 1


# --- malformed claim files -----------------------------------------------------------------

# file -> [(line, field, words the message must contain)]; exactly these problems, in order.
EXPECTED = {
    "yaml_syntax.yaml": [(3, "", ["YAML syntax error", "mapping values are not allowed"])],
    "wrong_types.yaml": [
        (2, "title", ["required, a non-empty string"]),
        (9, "tiers.smoke.seeds", ["expected a non-empty list of integers"]),
        (10, "tiers.smoke.gate", ["expected true or false"]),
    ],
    "unknown_key.yaml": [(5, "autor", ["unknown key 'autor'", "known: assume, claim, finding, id, no_scope, notes, out_of_scope, paper_noise, scope, source, tiers, title"])],
    # One problem: the check naming adam_l2 is not also reported as naming an unknown run.
    "unknown_optimizer.yaml": [(12, "tiers.smoke.runs.adam_l2.set.optim.name",
                                ["unknown optimizer 'adma'", f"known: {OPTIMIZERS}"])],
    # In the base shared by two runs: reported once, at the base's line.
    "unknown_dataset.yaml": [(10, "tiers.smoke.base.data.dataset", ["unknown dataset 'cifar11'", f"known: {DATASETS}"])],
    "unknown_check_kind.yaml": [(14, "tiers.smoke.checks[1].kind", ["unknown check kind 'bigger'", f"known: {CHECK_KINDS}"])],
    "empty_axis.yaml": [(14, "tiers.smoke.runs.lam_sweep.axis.optim.lam", ["expected a non-empty list of values"])],
    "negative_tolerance.yaml": [(18, "tiers.smoke.checks[1].tolerance", ["expected a number >= 0, got -1"])],
    "missing_run.yaml": [(15, "tiers.smoke.checks[0].a", ["unknown run 'adam_l3'", "known: adam_l2, adam_wd"])],
    "paper_length.yaml": [(13, "tiers.smoke.runs.lam_sweep.paper.sparsity_gamma",
                           ["expected a list of 3 values, one per optim.lam value"])],
    "missing_why.yaml": [(8, "tiers.smoke.why", ["a smoke tier must say how and why its analog is scaled"])],
    "gate_without_reason.yaml": [(6, "tiers.smoke.gate_reason", ["a claim kept out of the CI gate must state why"])],
    "selection_not_on_axis.yaml": [(14, "tiers.smoke.checks[1].a",
                                    ["run 'lam_sweep' has no point optim.lam=0.01", "its values: [0.0001, 0.001]"])],
    "python_tag.yaml": [(3, "", ["could not determine a constructor", "python/object/apply:os.system"])],
}


def test_every_bad_fixture_has_expectations():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_claim_file(name):
    path = BAD / name
    problems = problems_of(path)
    got = [(p.line, p.field) for p in problems]
    assert got == [(line, field) for line, field, _ in EXPECTED[name]], [str(p) for p in problems]
    for problem, (line, field, words) in zip(problems, EXPECTED[name]):
        assert same_file(problem, path), problem.file
        for w in words:
            assert w in problem.message, (w, problem.message)
        # The printed form names file:line and the field.
        text = str(problem)
        assert f"{name}:{line}: " in text
        if field:
            assert f": {field}: " in text


def test_all_problems_of_a_file_at_once():
    problems = problems_of(BAD / "wrong_types.yaml")
    assert len(problems) == 3
    assert len(str(SpecError(problems)).splitlines()) == 3


def test_yaml_tags_are_rejected_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems = problems_of(BAD / "python_tag.yaml")
    assert len(problems) == 1
    assert not (tmp_path / "PWNED_BY_YAML").exists()
    assert not list(tmp_path.iterdir())


def test_duplicate_ids_across_two_files():
    first, second = DUPLICATES / "first.yaml", DUPLICATES / "second.yaml"
    # Each is valid on its own.
    assert load_claim(first).id == load_claim(second).id == "same-id"
    with pytest.raises(SpecError) as info:
        load_claims([first, second])
    (problem,) = info.value.problems
    assert same_file(problem, second)
    assert (problem.line, problem.field) == (3, "id")
    assert "duplicate claim id 'same-id'" in problem.message and "first.yaml" in problem.message


def test_load_claims_reports_problems_of_every_file():
    with pytest.raises(SpecError) as info:
        load_claims([BAD / "unknown_key.yaml", GOOD, BAD / "wrong_types.yaml"])
    files = [Path(p.file).name for p in info.value.problems]
    assert files == ["unknown_key.yaml", "wrong_types.yaml", "wrong_types.yaml", "wrong_types.yaml"]


def test_unreadable_and_odd_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    (p,) = problems_of(missing)
    assert p.line is None and "cannot read" in p.message
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"id: \xff\xfe\x00\n")
    (p,) = problems_of(binary)
    assert "not UTF-8" in p.message
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    (p,) = problems_of(empty)
    assert "must be a mapping" in p.message
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    (p,) = problems_of(listing)
    assert p.line == 1 and "must be a mapping" in p.message


def test_recursive_yaml_alias_is_an_error_not_a_crash(tmp_path):
    text = GOOD.read_text().replace("    seeds: [0, 1, 2]\n", "    seeds: &s [0, *s]\n", 1)
    path = tmp_path / "recursive.yaml"
    path.write_text(text)
    shutil.copytree(GOOD.parent / "_bases", tmp_path / "_bases")
    (p,) = problems_of(path)
    assert (p.line, p.field) == (11, "tiers.smoke.seeds[1]") and "recursive data" in p.message


def test_missing_include_names_the_include(tmp_path):
    path = tmp_path / "claim.yaml"
    path.write_text(GOOD.read_text())  # no _bases/ next to it
    problems = problems_of(path)
    assert len(problems) == 1
    # Both ends: the claim file and line that include it, and the file that cannot be read.
    (p,) = problems
    assert same_file(p, path) and p.field == "tiers.smoke.base.include" and p.line == 10
    assert "_bases/tiny.yaml: cannot read" in p.message


def test_claim_files_skip_underscore(tmp_path):
    for name in ("b.yaml", "a.yaml", "_draft.yaml", "notes.txt"):
        (tmp_path / name).write_text("x: 1\n")
    (tmp_path / "_bases").mkdir()
    (tmp_path / "_bases" / "base.yaml").write_text("x: 1\n")
    assert [p.name for p in claim_files(tmp_path)] == ["a.yaml", "b.yaml"]


# Odd values that once escaped as TypeError/AttributeError/RecursionError: each is one problem.
TEMPLATE = """\
id: odd
title: t
claim: c
source: {paper: p.txt, where: Table 1}
tiers:
  smoke:
    why: w
    base: {model: {width: 0.125}, train: {unit: steps, phases: [10]}}
    seeds: [0]
    runs:
      a: {set: {optim.regularizer: l2}}
      s: {axis: {optim.lam: [0, 1e-3]}}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: a, b: s@1e-3}
"""
CHECK = "{kind: greater, metric: sparsity_gamma, a: a, b: s@1e-3}"


@pytest.mark.parametrize("replacements, line, field, words", [
    ([("{optim.regularizer: l2}", "{1: l2}")], 11, "tiers.smoke.runs.a.set.1", "expected a dotted field name"),
    ([("{optim.lam: [0, 1e-3]}", "{7: [0, 1e-3]}"), ("b: s@1e-3", "b: a")], 12, "tiers.smoke.runs.s.axis",
     "expected one field with a list of values"),
    ([("a: a,", "a: {run: a, layers: 5},")], 14, "tiers.smoke.checks[0].a.layers", "expected a non-empty list"),
    ([("a: a,", "a: {run: a, layer: 0},")], 14, "tiers.smoke.checks[0].a.layer", "expected a 1-based"),
    ([("a: a,", "a: {run: a, stat: [mean]},")], 14, "tiers.smoke.checks[0].a.stat", "unknown stat ['mean']"),
    ([("a: a,", "a: {run: a, threshold: [1]},")], 14, "tiers.smoke.checks[0].a.threshold", "expected a number"),
    ([("a: a,", "a: {run: null},")], 14, "tiers.smoke.checks[0].a", "a selection is a run name"),
    ([("a: a,", "a: {run: a, 1: x, colour: red},")], 14, "tiers.smoke.checks[0].a.1", "unknown selection key '1'"),
    ([(CHECK, "{kind: monotonic, run: [s], metric: sparsity_gamma, direction: increasing}")], 14,
     "tiers.smoke.checks[0].run", "expected non-empty text, got ['s']"),
    ([(CHECK, "{kind: monotonic, run: s, metric: sparsity_gamma, direction: increasing, stat: mode}")], 14,
     "tiers.smoke.checks[0].stat", "unknown stat 'mode'"),
    ([(CHECK, "{kind: distribution, a: a, metric: sparsity_gamma, min: ten}")], 14, "tiers.smoke.checks[0].min",
     "expected a number, got 'ten'"),
    ([("seeds: [0]", "seeds: &s [0, *s]")], 9, "tiers.smoke.seeds[1]", "recursive data cannot be read"),
])
def test_odd_values_are_problems_not_crashes(tmp_path, replacements, line, field, words):
    text = TEMPLATE
    load_claim(_write(tmp_path / "ok.yaml", text))  # the template itself is valid
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (problem,) = problems_of(_write(tmp_path / "odd.yaml", text))
    assert (problem.line, problem.field) == (line, field)
    assert words in problem.message


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- claimbench validate ------------------------------------------------------------------------


def test_validate_bad_file_exits_2(capsys):
    assert cli.main(["validate", str(BAD / "unknown_optimizer.yaml")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "unknown_optimizer.yaml:12: tiers.smoke.runs.adam_l2.set.optim.name: " in lines[0]
    assert "0 of 1 claim files valid" in out


def test_validate_whole_bad_folder(capsys):
    assert cli.main(["validate", str(BAD)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    n = len(EXPECTED)
    assert f"0 of {n} claim files valid" in out
    assert len(err.splitlines()) == sum(len(v) for v in EXPECTED.values())
    for name, expected in EXPECTED.items():
        for line, _, _ in expected:
            assert f"{name}:{line}: " in err


def test_validate_duplicate_ids_exits_2(capsys):
    assert cli.main(["validate", str(DUPLICATES)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "second.yaml:3: id: duplicate claim id 'same-id'" in err


def test_validate_unknown_claim_name_exits_2(capsys, tmp_path):
    assert cli.main(["validate", "--claims-dir", str(tmp_path), "no-such-claim"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "no such claim file or id" in err


def test_validate_good_fixture_exits_0(capsys):
    assert cli.main(["validate", str(GOOD.parent)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "1 of 1 claim files valid" in out


def test_validate_repository_claims_exit_0(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    paths = claim_files(REPO / "claims")
    assert paths, "no claim files in claims/"
    status = cli.main(["validate"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert status == 0, err
    assert f"{len(paths)} of {len(paths)} claim files valid" in out


# --- fuzzing: load_claim returns a ClaimSpec or raises SpecError, nothing else -------------

# A small valid claim (few fields, so that random mutations often land on the interesting ones).
VALID = {
    "id": "fuzz", "title": "t", "claim": "c", "source": {"paper": "p.txt", "where": "Table 1"},
    "tiers": {
        "smoke": {
            "why": "fuzz",
            "base": {"include": "_bases/tiny.yaml", "optim": {"name": "adam"}},
            "seeds": [0],
            "runs": {
                "a": {"set": {"optim.regularizer": "l2"}, "paper": {"sparsity_gamma": 70}},
                "s": {"axis": {"optim.lam": [0, "1e-3"]}, "paper": {"sparsity_gamma": [0, 80]}},
                "c": {"axis": {"optim.lam": [0, "1e-3"]}, "cell": ["t/lam 0", "t/lam 1e-3"]},
            },
            "checks": [
                {"kind": "greater", "metric": "sparsity_gamma", "a": "a", "b": "s@1e-3", "margin": 5},
                {"kind": "distribution", "a": {"run": "a", "metric": "beta", "layer": 6, "stat": "fraction_below",
                                               "threshold": 0}, "min": 10},
                {"kind": "monotonic", "run": "s", "metric": "sparsity_gamma", "direction": "increasing"},
            ],
        },
        "full": {"not_run": "fuzz"},
    },
}
SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
           | st.sampled_from(["adam", "sgd", "l2", "wd", "1e-3", "a", "s", "s@1e-3", "s@0.5", "s@0",
                              "greater", "monotonic", "sparsity_gamma", "fraction_below", "_bases/tiny.yaml",
                              "../nope.yaml", "", "increasing", "t/lam 0", "t/lam 1e-3", "t/ref", "t/nope", "u/x"]))
KEYS = (st.sampled_from(["include", "set", "axis", "paper", "seeds", "kind", "a", "b", "run", "metric", "layers",
                         "layer", "stat", "threshold", "optim.lam", "optim.name", "data.dataset", "not_run",
                         "gate", "why", "tolerance", "margin", "min", "max", "simulate", "label", "at", "cell"])
        | st.text(max_size=6) | st.integers(-3, 3))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=8)


FUZZ_TABLE = """\
table: "1"
title: cells for the fuzzed claim
source: {paper: p.txt, where: Table 1}
base: {include: ../_bases/tiny.yaml, optim: {name: adam}}
seeds: [0]
metrics: [sparsity_gamma, test_error]
cells: 3
rows:
  - {label: "lam 0", set: {optim.lam: 0}, paper: [0, 10.5]}
  - {label: "lam 1e-3", set: {optim.lam: 1.0e-3}, paper: [80, 11.0]}
  - {label: ref, reference: someone else, paper: [50, 9.0]}
"""


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory() as d:
        shutil.copytree(GOOD.parent / "_bases", Path(d) / "_bases")
        (Path(d) / "tables").mkdir()
        (Path(d) / "tables" / "t.yaml").write_text(FUZZ_TABLE)  # cells the fuzzed claim can name
        yield Path(d)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_claims_load_or_raise_spec_error(fuzz_dir, data):
    spec = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        paths = list(_paths(spec))
        path = data.draw(st.sampled_from(paths), label="path")
        op = data.draw(st.sampled_from(["drop", "replace", "add"]), label="op")
        if not path:
            if op == "replace":
                spec = data.draw(VALUES, label="whole file")
            continue
        parent, key = _get(spec, path[:-1]), path[-1]
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = data.draw(VALUES, label="value")
        else:
            target = _get(spec, path)
            if isinstance(target, dict):
                target[data.draw(KEYS, label="new key")] = data.draw(VALUES, label="new value")
            elif isinstance(target, list):
                target.append(data.draw(VALUES, label="new item"))
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    path = fuzz_dir / "mutant.yaml"
    path.write_text(text)
    try:
        result = load_claim(path)
    except SpecError as e:
        assert e.problems
        for p in e.problems:
            assert p.file and isinstance(p.message, str) and p.message
            assert p.line is None or p.line >= 1
    else:
        assert isinstance(result, ClaimSpec)


def test_duplicated_seeds_are_rejected_in_a_tier_and_in_a_run_group(tmp_path):
    text = """\
id: dup-seeds
title: t
claim: c
source: {paper: 002_3e40d46e1092a6d6.txt, where: Table 1}
tiers:
  smoke:
    why: w
    seeds: [0, 0]
    runs:
      a: {seeds: [1, 1]}
    checks:
      - {kind: value, a: a, expected: 0, tolerance: 1, metric: sparsity_gamma}
"""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_claim(path)
    found = [(p.line, p.field, p.message) for p in e.value.problems]
    assert (8, "tiers.smoke.seeds", "duplicated seeds [0, 0]") in found
    assert (10, "tiers.smoke.runs.a.seeds", "duplicated seeds [1, 1]") in found


# --- strict schema -------------------------------------------------------------------------


@pytest.mark.parametrize("replacements, field, words", [
    ([(CHECK, "{kind: greater, metric: sparsity_gamma, a: a, b: s@1e-3, margn: 15}")],
     "tiers.smoke.checks[0].margn", "unknown 'greater' parameter 'margn' (did you mean 'margin'?)"),
    ([(CHECK, "{kind: greater, metric: sparsity_gama, a: a, b: s@1e-3}")],
     "tiers.smoke.checks[0].metric", "unknown metric of a training run 'sparsity_gama' (did you mean 'sparsity_gamma'?)"),
    ([(CHECK, "{kind: monotonic, run: s, metric: sparsity_gamma, direction: increasing, min_chnge: 5}")],
     "tiers.smoke.checks[0].min_chnge", "(did you mean 'min_change'?)"),
    ([(CHECK, "{kind: monotonic, run: s, metric: sparsity, direction: increasing}")],
     "tiers.smoke.checks[0].metric", "unknown metric of a training run 'sparsity'"),
    ([("a: {set: {optim.regularizer: l2}}", "a: {set: {optim.regularizer: l2}, paper: {sparsity_gama: 3}}")],
     "tiers.smoke.runs.a.paper.sparsity_gama", "unknown metric 'sparsity_gama' (did you mean 'sparsity_gamma'?)"),
    ([("a: {set: {optim.regularizer: l2}}", "a: {set: {optim.regularizer: l2}, paper: {beta: 3}}")],
     "tiers.smoke.runs.a.paper.beta", "per-feature list"),
    ([(CHECK, CHECK + "\n    plots:\n      - {kind: layer, runs: [a]}")],
     "tiers.smoke.plots[0].kind", "unknown plot kind 'layer' (did you mean 'layers'?)"),
    ([(CHECK, CHECK + "\n    plots:\n      - {kind: layers, runs: [a, b]}")],
     "tiers.smoke.plots[0].runs", "unknown run 'b'"),
    ([(CHECK, CHECK + "\n    plots:\n      - {kind: axis, run: a}")],
     "tiers.smoke.plots[0].runs", "has no axis"),
    ([(CHECK, CHECK + "\n    plots:\n      - {kind: layers, runs: [a], colour: red}")],
     "tiers.smoke.plots[0].colour", "unknown key of a layers plot 'colour'"),
    ([(CHECK, "{kind: greater, metric: sparsity_gamma, a: {run: a, layr: 6}, b: s@1e-3}")],
     "tiers.smoke.checks[0].a.layr", "unknown selection key 'layr' (did you mean 'layer'?)"),
    ([(CHECK, "{kind: greater, metric: layer_sparsity_gamma, a: a, b: s@1e-3}")],
     "tiers.smoke.checks[0].metric", "is a per-layer list"),
    ([("id: odd", "id: ../../etc")], "id", "use letters, digits"),
    ([("id: odd", "id: a/b")], "id", "use letters, digits"),
    ([("source: {paper: p.txt, where: Table 1}", "source: {paper: p.txt, where: Table 1, page: 3}")],
     "source.page", "unknown key 'page'"),
    ([("base: {model: {width: 0.125}, train: {unit: steps, phases: [10]}}",
       "base: {model: {width: 0.125, pool_after: [1, 2, 3, 4]}, train: {unit: steps, phases: [10]}}")],
     "tiers.smoke.base.model.pool_after", "4 2x2 pooling stages need images of at least 16x16; digits images are 8x8"),
    ([("base: {model: {width: 0.125}, train: {unit: steps, phases: [10]}}",
       "base: {model: {width: 0.125}, train: {unit: steps, phases: [10], batch_size: 5000}}")],
     "tiers.smoke.base.train.batch_size", "batch 5000 is larger than the 1,400 training images of digits"),
    ([("a: {set: {optim.regularizer: l2}}", "a: {set: {model.arch: vgg16}}")],
     "tiers.smoke.runs.a.set.model.arch", "5 2x2 pooling stages need images of at least 32x32"),
    ([("a: {set: {optim.regularizer: l2}}", "a: {set: {data.train_size: 100}}")],
     "tiers.smoke.runs.a.set.data.train_size", "applies to the synthetic shapes only"),
    ([("a: {set: {optim.regularizer: l2}}", "a: {set: {data.dataset: shapes_clean, data.num_classes: 30}}")],
     "tiers.smoke.runs.a.set.data.num_classes", "at most, got 30"),
    ([("seeds: [0]", "seeds: [0]\n    gate_reason: why")], "tiers.smoke.gate_reason", "only a tier with gate: false"),
    ([("title: t", "title: t\npaper_noise: -1")], "paper_noise", "must be >= 0"),
])
def test_schema_mistakes_are_rejected_with_field_and_hint(tmp_path, replacements, field, words):
    text = TEMPLATE
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    problems = problems_of(_write(tmp_path / "bad.yaml", text))
    assert [p.field for p in problems] == [field], [str(p) for p in problems]
    assert words in problems[0].message
    assert problems[0].line is not None


def test_include_may_not_leave_the_claims_folder(tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    (tmp_path / "outside.yaml").write_text("model: {width: 0.125}\n")
    text = TEMPLATE.replace("base: {model: {width: 0.125}, train: {unit: steps, phases: [10]}}",
                            "base: {include: ../outside.yaml, train: {unit: steps, phases: [10]}}")
    (problem,) = problems_of(_write(claims / "c.yaml", text))
    assert problem.field == "tiers.smoke.base.include" and "outside the claims folder" in problem.message


def test_oversized_and_deeply_nested_files_are_rejected_before_parsing(tmp_path, capsys):
    big = _write(tmp_path / "big.yaml", "id: x\nnotes: '" + "a" * (1 << 20) + "'\n")
    (problem,) = problems_of(big)
    assert "may be at most 1,048,576" in problem.message
    deep = _write(tmp_path / "deep.yaml", "id: " + "[" * 5000 + "]" * 5000 + "\n")
    (problem,) = problems_of(deep)
    # Our limit (pure-Python loader) or libyaml's own: either way a line and the word "nesting".
    assert problem.line == 1 and ("nested deeper than" in problem.message or "nesting depth" in problem.message)
    assert cli.main(["validate", str(deep)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "RecursionError" not in out + err


def test_metric_catalogue_is_what_a_run_records():
    """The catalogue the schema validates against is pinned to what measurement produces."""
    import torch

    from claimbench.config import ModelConfig
    from claimbench.data.base import ImageData
    from claimbench.measure import measure_model
    from claimbench.spec.metrics import RUN_METRICS
    from claimbench.train.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=0.0625), 3, 8, 10, "digits")
    x, y = torch.randn(24, 3, 8, 8), torch.arange(24) % 10
    data = ImageData("digits", x, y, x[:12], y[:12], 10)
    measured = set(measure_model(model, data, batch_size=12)) | {"steps", "diverged_at"}  # + the loop's
    top5 = {"test_error_top5", "pruned_test_error_top5"}  # only with > 100 classes
    assert measured == set(RUN_METRICS) - top5


def test_simulation_catalogue_is_what_the_simulation_records():
    from claimbench.simulate.low_gradient import simulation_metrics
    from claimbench.spec.metrics import SIMULATION_METRICS
    from claimbench.spec.simulation import DecayConfig

    sim = DecayConfig("adam", "l2", (1e-4,), steps=50, seeds=(0,))
    (per_seed,) = simulation_metrics(sim)[1e-4]
    assert set(per_seed) == set(SIMULATION_METRICS)


def test_dataset_facts_match_the_loaders():
    from claimbench.config import DATASET_SHAPES, SHAPES_MAX_CLASSES
    from claimbench.data.embedded import DIGITS_TRAIN, SHAPE_NAMES, SHAPES_DEFAULT_SIZE, SHAPES_DEFAULT_TRAIN

    assert DATASET_SHAPES["digits"][0] == DIGITS_TRAIN and SHAPES_MAX_CLASSES == len(SHAPE_NAMES)
    assert DATASET_SHAPES["shapes_clean"] == DATASET_SHAPES["shapes_cluttered"]
    assert DATASET_SHAPES["shapes_clean"][:2] == (SHAPES_DEFAULT_TRAIN, SHAPES_DEFAULT_SIZE)


def test_vgg19_has_network_slimmings_head():
    from claimbench.config import VGG_POOLS, ModelConfig
    from claimbench.netshape import VGG_LAYOUTS, net_spec

    spec = net_spec(ModelConfig(arch="vgg19"), 3, 32, 10, "cifar10")
    assert spec.head_hidden == () and spec.convs[-1].out_channels == 512  # Linear(512, classes)
    assert sum(c.pool_after for c in spec.convs) == 4 and spec.pooling == "global"
    assert net_spec(ModelConfig(arch="vgg16"), 3, 32, 10, "cifar10").head_hidden == (512,)  # the paper's [512][C]
    for arch, n in VGG_POOLS.items():
        assert VGG_LAYOUTS[arch].count("M") == n


def test_spec_and_check_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, claimbench.spec.claims, claimbench.spec.select, claimbench.check.kinds, claimbench.check.evaluate, "
            "claimbench.check.oracle, claimbench.claims_cli; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
