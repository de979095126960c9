"""`claimbench run` / `claimbench show` end to end on a tiny digits run, and bad input handling."""

import json

import pytest

from claimbench.cli import main
from claimbench.report.output import MARKER, MARKER_TEXT
from tests.helpers import REPO

TINY = """\
model: {width: 0.0625}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {unit: steps, phases: [20, 10], batch_size: 20, snapshots: 2}
"""


@pytest.fixture
def tiny_yaml(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


@pytest.mark.slow
def test_run_trains_then_returns_from_cache(tiny_yaml, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert main(["run", str(tiny_yaml), "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "trained now" in out
    for label in ("test error %", "sparsity by |gamma| (<1e-3) %", "sparsity by activation (<=1e-12) %",
                  "test error after zeroing |gamma|<1e-3 %", "conv parameters pruned %", "per conv layer"):
        assert label in out
    assert main(["run", str(tiny_yaml), "--cache-dir", cache, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cached"] is True
    m = again["metrics"]
    for key in ("train_loss", "test_loss", "test_error", "sparsity_gamma", "sparsity_gamma_1e-2", "sparsity_act",
                "sparsity_act_1e-4", "layer_sparsity_gamma", "universality", "pruned_test_error",
                "conv_params_pruned_pct", "slim_params", "slim_flops", "slim_matches_zeroed"):
        assert key in m
    assert m["slim_matches_zeroed"] is True
    assert main(["show", again["key"][:10], "--cache-dir", cache]) == 0
    assert "provenance" in capsys.readouterr().out


@pytest.mark.slow
def test_set_overrides_change_the_key(tiny_yaml, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    main(["run", str(tiny_yaml), "--cache-dir", cache, "--json"])
    a = json.loads(capsys.readouterr().out)
    main(["run", str(tiny_yaml), "--cache-dir", cache, "--json", "--set", "optim.regularizer=wd"])
    b = json.loads(capsys.readouterr().out)
    assert a["key"] != b["key"] and b["config"]["optim"]["regularizer"] == "wd"


@pytest.mark.parametrize("text,sets,needle", [
    (TINY.replace("name: adam", "name: adma"), [], "tiny.yaml:3: optim.name: unknown optimizer 'adma' (did you mean 'adamax'?); known: adadelta, adagrad, adam,"),
    (TINY.replace("lam: 1.0e-2", "lam: -1.0e-2"), [], "tiny.yaml:3: optim.lam: must satisfy 0 <= lam < 1"),
    (TINY.replace("width: 0.0625", "widht: 0.0625"), [], "tiny.yaml:1: model.widht: unknown key 'widht' (did you mean 'width'?)"),
    (TINY, ["optim.name=foo"], "--set: optim.name: unknown optimizer 'foo'"),
    (TINY, ["optim.lam"], "expected key=value"),
    (TINY + "model: [\n", [], "YAML syntax error"),
])
def test_bad_input_exits_2_with_file_line_and_field(tmp_path, capsys, text, sets, needle):
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    args = ["run", str(p), "--cache-dir", str(tmp_path / "cache")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_missing_dataset_is_a_clear_error(tiny_yaml, tmp_path, capsys):
    code = main(["run", str(tiny_yaml), "--cache-dir", str(tmp_path / "c"), "--data-root", str(tmp_path / "nodata"),
                 "--set", "data.dataset=tinyimagenet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("??/*"))


# --- claims: the paper as an oracle, selections, reports -----------------------------------


ORACLE_CLAIM = """\
id: oracle-bad
title: t
claim: c
source: {paper: p.txt, where: Table 1}
tiers:
  full:
    base: {model: {width: 0.125}, data: {dataset: digits}, train: {unit: steps, phases: [10]}}
    seeds: [0, 1, 2]
    runs:
      a: {set: {optim.lam: 1.0e-3}, paper: {sparsity_gamma: 70, test_error: 13.1, pruned_test_error: 13.5}}
      b: {paper: {sparsity_gamma: 60, test_error: 10.5}}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: a, b: b, margin: 5}
      - {kind: greater, metric: sparsity_gamma, a: a, b: b, margin: 15}
      - {kind: equal, metric: test_error, a: a, b: b, tolerance: 100}
      - {kind: less, metric: sparsity_gamma, a: b, b: a, margin: 12, paper_fails: "the paper's own gap is 10"}
      - {kind: at_most, a: {run: a, metric: pruned_test_error}, b: {run: a, metric: test_error}, margin: 0.5}
"""


def test_against_paper_passes_on_the_shipped_claims(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["validate", "--against-paper"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "0 check(s) the paper itself would not pass" in out and "error:" not in err


def test_against_paper_names_the_failing_checks_line(tmp_path, capsys):
    path = tmp_path / "claims" / "oracle_bad.yaml"
    path.parent.mkdir()
    path.write_text(ORACLE_CLAIM)
    assert main(["validate", str(path)]) == 0  # the schema is fine ...
    capsys.readouterr()
    assert main(["validate", "--against-paper", str(path)]) == 2  # ... the paper's numbers are not
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err
    assert "oracle_bad.yaml:14: tiers.full.checks[1]: the paper's own numbers give 'not reproduced'" in errors[0]
    assert "oracle_bad.yaml:15: tiers.full.checks[2]: cannot fail: tolerance 100 covers every value" in errors[1]
    assert "oracle_bad.yaml:16: tiers.full.checks[3]: the paper's own numbers fail it (not reproduced), as stated" in out
    assert "Traceback" not in out + err


def test_against_paper_flags_a_check_that_passes_with_sides_swapped(tmp_path, capsys):
    text = ORACLE_CLAIM.split("    checks:\n")[0] + "    checks:\n      - {kind: layer_pattern, run: a, metric: " \
        "layer_sparsity_gamma, layers: [1], than: [2], margin: 0}\n"
    text = text.replace("pruned_test_error: 13.5}", "pruned_test_error: 13.5, layer_sparsity_gamma: [5, 5, 5]}")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["validate", "--against-paper", str(path)]) == 2
    assert "not reproduced" in capsys.readouterr().err  # equal layers: fails both ways, so it can fail
    path.write_text(text.replace("margin: 0}", "margin: 0, paper_fails: x}").replace("[5, 5, 5]", "[9, 5, 5]"))
    assert main(["validate", "--against-paper", str(path)]) == 2
    assert "paper_fails is stated but the paper's numbers pass" in capsys.readouterr().err


def _k_selection_by_pytest(expr: str) -> set[str]:
    import pytest as pt

    class Collect:
        ids: set[str] = set()

        def pytest_collection_finish(self, session):
            self.ids = {item.name for item in session.items}

    plugin = Collect()
    pt.main([str(REPO / "claims"), "--collect-only", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
             "--tier", "smoke", "-k", expr], plugins=[plugin])
    return plugin.ids


@pytest.mark.parametrize("expr", ["amsgrad", "adam and not l2", "not (vgg or imagenet)", "wd.yaml or (SMOKE and relu)"])
def test_cli_and_pytest_select_the_same_claims_for_k(monkeypatch, expr):
    from claimbench.claims_cli import select_claims
    from claimbench.cli import build_parser

    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(["plan", "--tier", "smoke", "-k", expr])
    assert {s.id for s in select_claims(args)} == _k_selection_by_pytest(expr)


def test_k_that_matches_nothing_writes_nothing_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "index.md").write_text("the previous report\n")
    (out / MARKER).write_text(MARKER_TEXT + 'files: ["index.md"]\n')  # a report claimbench wrote earlier
    for command in (["report", "--out", str(out)], ["plan"], ["train"], ["verify", "--out", str(out)]):
        assert main([*command, "--tier", "smoke", "-k", "nonexistnt", "--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert "no claim matches 'nonexistnt'" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "index.md"]
    assert (out / "index.md").read_text() == "the previous report\n"
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.json"))
    assert main(["plan", "-k", "adam and (", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "bad expression" in capsys.readouterr().err


def test_a_failed_render_leaves_the_previous_report(tmp_path, monkeypatch, capsys):
    import claimbench.report.markdown as md

    monkeypatch.chdir(REPO)
    out = tmp_path / "reports"
    assert main(["report", "--tier", "smoke", "-k", "beta", "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "index.md" in before and "not run: 7 of 7 runs missing" in before["index.md"].decode()

    def broken(*args, **kwargs):
        raise RuntimeError("render bug")

    monkeypatch.setattr(md, "runs_page", broken)
    with pytest.raises(RuntimeError):
        main(["report", "--tier", "smoke", "-k", "beta", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
