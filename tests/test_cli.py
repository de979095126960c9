"""`repro run` / `repro show` end to end on a tiny digits run, and bad input handling."""

import json

import pytest

from repro.cli import main

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
