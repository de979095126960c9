"""A model, a dataset and a trainer of one's own, through the packaging ecosystem's entry points.

examples/plugin-example/ (a stackable MLP with BatchNorm, scikit-learn's digits as one-channel
images, its own training loop ``smoothsgd``, a claims folder with three claims) is copied to a
temporary folder and installed there with pip (``--target``, found through PYTHONPATH, as an
installed distribution: its entry points are what claimbench reads). ``claimbench verify`` then runs on
its claims as subprocesses: verdicts, the MLP's runs trained stacked, the trainer's run recorded
with its metrics and provenance, a second run served from the cache, an edit of the model's code
that retrains exactly the MLP's runs (the built-in BasicNet on the plug-in dataset stays cached),
and an edit of its README that retrains nothing. In-process tests cover validation (typed fields,
file:line errors), name clashes, what a trainer may return, the keys of trainer runs, and
stacked plug-in runs against runs trained alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

EXAMPLE = REPO / "examples" / "plugin-example"
BIN = Path(sys.executable).parent
RUNS = 8  # 6 MLP runs (L2 and none, 3 seeds) + 1 BasicNet on the plug-in dataset + 1 run of the trainer
NAMED = ("claimbench_plugin_example.models:mlp,claimbench_plugin_example.datasets:skdigits,"
         "claimbench_plugin_example.trainers:smoothsgd")


def install(src: Path, site: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--upgrade", "--target", str(site), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for leftover in ("build", "claimbench_plugin_example.egg-info"):
        shutil.rmtree(src / leftover, ignore_errors=True)


def command(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(root / "site")
    env["CLAIMBENCH_CACHE"] = str(root / "cache")
    return subprocess.run(args, cwd=root / "src", env=env, capture_output=True, text=True, timeout=900)


def verify(root: Path) -> subprocess.CompletedProcess:
    # One job: its groups stack (the default -j follows the machine's cores and memory).
    return command(root, str(BIN / "claimbench"), "verify", "--tier", "smoke", "--claims-dir", "claims",
                   "--out", str(root / "report"), "--device", "cpu", "-j", "1")


def train_only(root: Path) -> subprocess.CompletedProcess:
    """What a verify trains, without its pytest run and report (what the retraining steps check)."""
    return command(root, str(BIN / "claimbench"), "train", "--tier", "smoke", "--claims-dir", "claims", "--device", "cpu")


def trained_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if line.lstrip().startswith("trained ")]
    assert lines, result.stdout + result.stderr
    return lines[-1].strip()


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install(root / "src", root / "site")
    return root


@pytest.mark.slow
def test_verify_trains_caches_and_retrains_exactly_what_changed(example):
    first = verify(example)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "3 of 3 claim files valid" in first.stdout
    assert trained_line(first).startswith(f"trained {RUNS}, cached 0, failed 0"), out
    assert "1 does not hold, 2 holds" in first.stdout, out
    index = (example / "report" / "index.md").read_text()
    assert "[basicnet-learns-skdigits]" in index and "[mlp-l2-sparsity]" in index
    assert "[smoothsgd-trains-the-mlp]" in index
    # The entries' files as stored (read as JSON: this process cannot import the plug-ins their
    # configs name, and the store would take such an entry for a damaged one).
    entries = [{name: json.loads((d / f"{name}.json").read_text()) for name in ("config", "metrics", "provenance")}
               for d in (example / "cache").glob("*/*") if (d / "manifest.json").is_file()]
    assert len(entries) == RUNS
    # The stackable MLP's 6 runs trained fused (groups of at most 4 on a CPU with one job).
    mlp_groups = sorted(e["provenance"]["group_size"] for e in entries
                        if e["config"]["model"]["arch"] == "mlp" and "trainer" not in e["config"]["train"])
    assert mlp_groups == [2, 2, 4, 4, 4, 4], mlp_groups
    # The trainer's run: its own numbers beside claimbench's measured ones, and which trainer of which
    # distribution trained it.
    (trained_by,) = [e for e in entries if e["config"]["train"].get("trainer") == "smoothsgd"]
    assert trained_by["provenance"]["trainer"]["distribution"] == "claimbench-plugin-example"
    assert trained_by["provenance"]["trainer"]["version"] == "0.1.0"
    assert trained_by["metrics"]["train_accuracy"] >= 99 and trained_by["metrics"]["sparsity_gamma"] is not None

    # Again, reinstalled with another README (no code): served from the cache, nothing retrains.
    readme = example / "src" / "README.md"
    readme.write_text(readme.read_text() + "\nAn added paragraph.\n")
    install(example / "src", example / "site")
    after_readme = train_only(example)
    assert after_readme.returncode == 0, after_readme.stdout + after_readme.stderr
    assert trained_line(after_readme).startswith(f"trained 0, cached {RUNS}, failed 0"), after_readme.stdout

    # The model's code changes: the 6 MLP runs and the trainer's (of the MLP) retrain, the BasicNet
    # on the plug-in data does not.
    mlp = example / "src" / "claimbench_plugin_example" / "mlp.py"
    text = mlp.read_text()
    assert "GroupedLinear(width, h, runs, bias=False)" in text
    mlp.write_text(text.replace("GroupedLinear(width, h, runs, bias=False)", "GroupedLinear(width, h, runs, bias=True)"))
    install(example / "src", example / "site")
    after_model = train_only(example)
    assert after_model.returncode == 0, after_model.stdout + after_model.stderr
    assert trained_line(after_model).startswith(f"trained {RUNS - 1}, cached 1, failed 0"), after_model.stdout


def test_plugin_fields_are_validated_with_file_and_line(example, tmp_path):
    claims = example / "src" / "claims"
    bad = tmp_path / "bad"
    shutil.copytree(claims, bad)
    base = bad / "_bases" / "mlp.yaml"
    base.write_text(base.read_text().replace("params: {hidden: [128, 128]}", "params: {hiden: [128]}"))
    # A metric that neither claimbench measures nor the run's trainer reports; and one the trainer
    # reports, named for a run of claimbench's loop.
    trainer_claim = bad / "smoothsgd_trains.yaml"
    text = trainer_claim.read_text()
    assert "metric: train_accuracy}" in text
    trainer_claim.write_text(text.replace("metric: train_accuracy}", "metric: train_acc}"))
    learns = bad / "basicnet_learns.yaml"
    text = learns.read_text()
    assert "metric: test_error}" in text
    learns.write_text(text.replace("metric: test_error}", "metric: final_loss}"))
    (bad / "typo.yaml").write_text(textwrap.dedent("""\
        id: typo
        title: t
        claim: "c"
        source: {paper: example2025, where: Section 2}
        tiers:
          smoke:
            why: w
            base: {include: _bases/basicnet.yaml}
            seeds: [0]
            runs:
              r: {set: {data.dataset: skdigit}}
              w: {set: {model.arch: mlp}}
              s: {set: {train.trainer: smoothsgd, train.params.lr: fast, train.params.momentun: 0.9}}
            checks:
              - {kind: distribution, a: {run: r, metric: test_error}, min: 0, max: 50}
              - {kind: distribution, a: {run: s, metric: train_accuracy}, min: 0, max: 100}
        """))
    result = command(example, str(BIN / "claimbench"), "validate", "--claims-dir", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert "model.params.hiden: unknown key 'hiden' (did you mean 'hidden'?)" in err, err
    # The BasicNet base's width means nothing to the MLP (run w): refused where it is written.
    assert "typo.yaml:8: tiers.smoke.base.model.width: applies to the built-in architectures; the plug-in mlp takes its fields in model.params" in err, err
    assert "unknown dataset 'skdigit' (did you mean 'skdigits'?)" in err and "skdigits" in err, err
    assert "mlp_l2_sparsity.yaml" in err and "Traceback" not in err
    # The trainer's fields are typed by the trainer: a misspelt key and a wrong type, at their line.
    assert "typo.yaml:13: tiers.smoke.runs.s.set.train.params.momentun: unknown key 'momentun' (did you mean " \
           "'momentum'?)" in err, err
    assert "typo.yaml:13: tiers.smoke.runs.s.set.train.params.lr: expected a number, got 'fast'" in err, err
    # Run s is broken, so its trainer's metrics cannot be judged: no second error on top.
    assert "typo.yaml:16" not in err, err
    assert ("smoothsgd_trains.yaml:16: tiers.smoke.checks[0].a.metric: unknown metric of a training run "
            "'train_acc' (did you mean 'train_accuracy'?)") in err, err
    assert "basicnet_learns.yaml:13: tiers.smoke.checks[0].a.metric: unknown metric of a training run 'final_loss'" in err


# --- in process: the registry on its own (no training) -------------------------------------------


def fake_distribution(site: Path, name: str, group: str, entries: dict[str, str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


@pytest.fixture
def registry(monkeypatch, tmp_path):
    from claimbench import plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._resolve_with.cache_clear()
    yield tmp_path
    plugins._resolve_with.cache_clear()


def test_a_plugin_named_like_a_builtin_is_an_error_naming_both(registry):
    from claimbench.config import ConfigError
    from claimbench.runconfig import run_config_from_dict

    fake_distribution(registry, "clash", "claimbench.models", {"vgg11": "clash_mod:net", "tiny": "clash_mod:tiny"})
    # A built-in config never looks at plug-ins: it stays valid whatever is installed.
    assert run_config_from_dict({"model": {"arch": "vgg11"}, "data": {"dataset": "cifar10"}}).model.arch == "vgg11"
    with pytest.raises(ConfigError) as e:
        run_config_from_dict({"model": {"arch": "tiny"}})
    assert e.value.path == "model.arch"
    assert "plug-in architecture 'vgg11' (clash_mod:net, distribution clash 1.0" in str(e.value)
    assert "built-in architecture 'vgg11'" in str(e.value)


def test_a_badly_declared_plugin_says_what_is_wrong(registry):
    from claimbench.config import ConfigError
    from claimbench.runconfig import run_config_from_dict

    (registry / "bad_mod.py").write_text(textwrap.dedent("""\
        from dataclasses import dataclass
        from claimbench.plugins import ModelPlugin

        @dataclass
        class Loose:
            hidden: int

        net = ModelPlugin(name="net", build=lambda *a, **k: None, fields=Loose, stackable="yes")
        """))
    fake_distribution(registry, "bad", "claimbench.models", {"net": "bad_mod:net"})
    with pytest.raises(ConfigError) as e:
        run_config_from_dict({"model": {"arch": "net"}})
    message = str(e.value)
    assert "fields Loose must be a frozen dataclass" in message
    assert "stackable must be True or False, got 'yes'" in message


def test_builtin_canonical_json_has_no_plugin_fields():
    from claimbench.cache.keys import run_key
    from claimbench.config import RunConfig

    from tests.helpers import GOLDEN_KEY

    assert "params" not in RunConfig().canonical_json()
    assert run_key(RunConfig(), "0" * 16) == GOLDEN_KEY


@pytest.mark.slow
def test_named_as_module_attribute_in_the_folders_claimbench_yaml(tmp_path):
    """The same plug-ins, not installed (no entry points): the claims folder names them in
    claimbench.yaml as "module:attribute" and the package is importable from PYTHONPATH. The folder
    validates, its BasicNet claim trains and verifies, and a bad name is a file:line error."""
    root = tmp_path
    shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    claims = root / "src" / "claims"
    (claims / "claimbench.yaml").write_text("plugins:\n" + "".join(f"  - {name}\n" for name in NAMED.split(",")))
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS", "CLAIMBENCH_PLUGINS")}
    env.update(PYTHONPATH=str(root / "src"), CLAIMBENCH_CACHE=str(root / "cache"), CLAIMBENCH_ALLOW_PLUGINS="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "claimbench"), *args], cwd=root / "src", env=env, capture_output=True, text=True,
                              timeout=900)

    validated = run("validate", "--claims-dir", "claims")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "3 of 3 claim files valid" in validated.stdout
    verified = run("verify", "--tier", "smoke", "--claims-dir", "claims", "-k", "basicnet", "--out",
                   str(root / "report"), "--device", "cpu")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "1 passed" in verified.stdout
    # Without claimbench.yaml the names are unknown again; a name that is not module:attribute is refused.
    (claims / "claimbench.yaml").write_text("plugins:\n  - claimbench_plugin_example.models\n")
    bad = run("validate", "--claims-dir", "claims")
    assert bad.returncode == 2 and "claimbench.yaml:2: plugins[0]: expected \"module:attribute\"" in bad.stderr
    (claims / "claimbench.yaml").unlink()
    unknown = run("validate", "--claims-dir", "claims")
    assert unknown.returncode == 2 and "unknown architecture 'mlp'" in unknown.stderr


# --- in process: the example importable by name (not installed) -----------------------------------


def _forget_example() -> None:
    from claimbench import plugins
    from claimbench.cache import keys

    for name in [m for m in sys.modules if m == "claimbench_plugin_example" or m.startswith("claimbench_plugin_example.")]:
        del sys.modules[name]
    plugins._resolve_with.cache_clear()
    keys._plugin_part.cache_clear()


@pytest.fixture
def named_example(monkeypatch, tmp_path):
    """A copy of the example importable from sys.path and named in $CLAIMBENCH_PLUGINS (as a claims
    folder's claimbench.yaml names it); its modules and claimbench's lookups of it are forgotten around the
    test, so that each test reads its own copy."""
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", NAMED)
    _forget_example()
    yield src
    _forget_example()


def trainer_config(**params):
    from claimbench.runconfig import run_config_from_dict

    return run_config_from_dict({"model": {"arch": "mlp", "params": {"hidden": [16, 8]}},
                                 "data": {"dataset": "skdigits", "flip": False},
                                 "train": {"unit": "steps", "phases": [6, 2], "batch_size": 8, "trainer": "smoothsgd",
                                           "params": params}})


def test_trainer_params_are_typed_by_the_trainer(named_example):
    from claimbench.runconfig import parse_run_config

    config = trainer_config(lr=0.1)
    assert config.train.trainer == "smoothsgd" and type(config.train.params).__name__ == "SmoothSGDFields"
    assert (config.train.params.lr, config.train.params.momentum) == (0.1, 0.9)
    assert '"trainer":"smoothsgd"' in config.canonical_json() and '"lr":0.1' in config.canonical_json()
    raw = {"train": {"trainer": "smoothsgd", "params": {"momentun": 0.5, "lr": "fast", "label_smoothing": True}}}
    _, errors = parse_run_config(raw)
    found = {e.path: e.message for e in errors}
    assert found["train.params.momentun"].startswith("unknown key 'momentun' (did you mean 'momentum'?)")
    assert found["train.params.lr"] == "expected a number, got 'fast'"
    assert found["train.params.label_smoothing"] == "expected a number, got True"
    _, errors = parse_run_config({"train": {"params": {"lr": 0.1}}})
    assert [(e.path, e.message) for e in errors] == [
        ("train.params", "applies to a registered trainer only; name one in train.trainer")]


def test_an_unknown_trainer_is_an_error_listing_the_known_ones(named_example):
    from claimbench.runconfig import parse_run_config

    _, errors = parse_run_config({"train": {"trainer": "smothsgd"}})
    assert [(e.path, e.message) for e in errors] == [
        ("train.trainer", "unknown trainer 'smothsgd' (did you mean 'smoothsgd'?); known: smoothsgd")]


@pytest.mark.slow
def test_a_trainer_run_is_keyed_by_the_trainers_code_not_its_readme(named_example):
    from claimbench.cache import keys
    from claimbench.cache.keys import run_key
    from claimbench.runconfig import run_config_from_dict

    trained = trainer_config()
    alone = run_config_from_dict({"model": {"arch": "mlp"}, "data": {"dataset": "skdigits", "flip": False}})
    before = run_key(trained), run_key(alone)
    assert before[0] != run_key(trainer_config(lr=0.01))  # its fields are part of the key

    readme = named_example / "README.md"
    readme.write_text(readme.read_text() + "\nAnother paragraph.\n")
    keys._plugin_part.cache_clear()
    assert (run_key(trained), run_key(alone)) == before

    # What the loop does changes: that trainer's runs get new keys; runs of claimbench's loop keep theirs.
    loop = named_example / "claimbench_plugin_example" / "smoothsgd.py"
    text = loop.read_text()
    assert "LOG_EVERY = 10" in text
    loop.write_text(text.replace("LOG_EVERY = 10", "LOG_EVERY = 20"))
    keys._plugin_part.cache_clear()
    assert run_key(trained) != before[0]
    assert run_key(alone) == before[1]


def test_the_example_trainer_is_seeded_by_claimbench(named_example):
    import torch

    from claimbench.train.trainer import train_with_trainer
    from tests.helpers import tiny_data

    data = tiny_data(side=8)
    data = type(data)(data.name, data.train_x[:, :1], data.train_y, data.test_x[:, :1], data.test_y, data.num_classes)
    a = train_with_trainer(trainer_config(), data, torch.device("cpu"))
    b = train_with_trainer(trainer_config(), data, torch.device("cpu"))
    assert set(a.trainer_metrics) == {"train_accuracy", "final_loss"} and a.steps == 8
    assert a.trainer["name"] == "smoothsgd" and a.trainer["metrics"] == ["train_accuracy", "final_loss"]
    assert a.history["trainer"]["loss_steps"] == [] and a.history["snapshot_steps"] == [0, 8]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


FAKE_TRAINERS = """\
from claimbench.plugins import TrainerPlugin, TrainerResult

# What the trainers below return, set by the test; and the checkpoint each was handed.
RETURN = {}
CHECKPOINTS = []


def train(run):
    CHECKPOINTS.append(run.checkpoint)
    state = run.model.state_dict()
    return TrainerResult(state_dict=RETURN.get("state", state), metrics=RETURN.get("metrics", {"score": 1.0}),
                         history=RETURN.get("history"))


fake = TrainerPlugin(name="fake", train=train, metrics=("score",))
resuming = TrainerPlugin(name="resuming", train=train, metrics=("score",), resumable=True)
measured = TrainerPlugin(name="measured", train=train, metrics=("test_error",))
"""


@pytest.fixture
def fake_trainers(monkeypatch, tmp_path):
    from claimbench import plugins

    (tmp_path / "fake_trainers.py").write_text(FAKE_TRAINERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "fake_trainers:fake,fake_trainers:resuming,fake_trainers:measured")
    sys.modules.pop("fake_trainers", None)
    plugins._resolve_with.cache_clear()
    import fake_trainers

    yield fake_trainers
    sys.modules.pop("fake_trainers", None)
    plugins._resolve_with.cache_clear()


def fake_config(trainer: str = "fake"):
    from claimbench.runconfig import run_config_from_dict

    return run_config_from_dict({"model": {"width": 0.0625, "pool_after": [1, 3]},
                                 "train": {"unit": "steps", "phases": [4], "batch_size": 8, "trainer": trainer}})


def test_what_a_trainer_returns_is_checked_and_non_finite_numbers_are_refused(fake_trainers):
    import torch

    from claimbench.train.trainer import TrainerError, train_with_trainer
    from tests.helpers import tiny_data

    data, cpu = tiny_data(), torch.device("cpu")
    # As declared and finite: recorded.
    assert train_with_trainer(fake_config(), data, cpu).trainer_metrics == {"score": 1.0}
    nan_weights = {k: v.clone() for k, v in train_with_trainer(fake_config(), data, cpu).model.state_dict().items()}
    nan_weights["blocks.0.bn.weight"][0] = float("nan")
    faults = [
        ({"metrics": {"score": float("nan")}}, "metric score is nan: a metric must be finite"),
        ({"metrics": {"score": float("inf")}}, "metric score is inf: a metric must be finite"),
        ({"metrics": {"score": "high"}}, "metric score is str 'high', not a real number"),
        ({"metrics": {}}, "it declares the metrics score but did not report them"),
        ({"metrics": {"score": 1.0, "extra": 2.0}}, "it reported extra, which it does not declare"),
        ({"history": {"loss": [float("nan")]}}, "history cannot be stored as JSON with finite numbers"),
        ({"state": {"conv.weight": torch.zeros(1)}}, "the weights it returned do not fit the network"),
        ({"state": nan_weights}, "the weights it returned are not finite in blocks.0.bn.weight"),
    ]
    for fault, message in faults:
        fake_trainers.RETURN.clear()
        fake_trainers.RETURN.update(fault)
        with pytest.raises(TrainerError, match="trainer fake \\(fake_trainers:fake") as e:
            train_with_trainer(fake_config(), data, cpu)
        assert message in str(e.value), (fault, str(e.value))


def test_only_a_resumable_trainer_is_handed_the_checkpoint(fake_trainers, tmp_path):
    import torch

    from claimbench.train.trainer import train_with_trainer
    from tests.helpers import tiny_data

    path = tmp_path / "partial.pt"
    train_with_trainer(fake_config("resuming"), tiny_data(), torch.device("cpu"), checkpoint=path)
    train_with_trainer(fake_config("fake"), tiny_data(), torch.device("cpu"), checkpoint=path)
    assert fake_trainers.CHECKPOINTS == [path, None]


def test_a_trainer_may_not_report_a_metric_claimbench_measures(fake_trainers, tmp_path):
    from claimbench.group import run_and_measure
    from claimbench.spec.claims import load_claim
    from claimbench.spec.source import SpecError
    from claimbench.train.trainer import TrainerError

    record = run_and_measure(fake_config("fake"), "cpu")
    assert record.metrics["score"] == 1.0 and record.provenance["trainer"]["name"] == "fake"
    fake_trainers.RETURN["metrics"] = {"test_error": 5.0}
    with pytest.raises(TrainerError, match="the trainer measured names the metrics test_error, which claimbench measures itself"):
        run_and_measure(fake_config("measured"), "cpu")
    # Found before anything trains: the claim's line that names the trainer.
    shutil.copy(EXAMPLE / "claims" / "paper.yaml", tmp_path / "paper.yaml")
    (tmp_path / "clash.yaml").write_text(textwrap.dedent("""\
        id: clash
        title: t
        claim: "c"
        source: {paper: example2025, where: Section 1}
        tiers:
          smoke:
            why: w
            base: {model: {width: 0.0625, pool_after: [1, 3]}, train: {unit: steps, phases: [4], trainer: fake}}
            seeds: [0]
            runs:
              r: {set: {train.trainer: measured}}
            checks:
              - {kind: distribution, a: {run: r, metric: score}, min: 0, max: 2}
        """))
    with pytest.raises(SpecError) as e:
        load_claim(tmp_path / "clash.yaml")
    text = str(e.value)
    # The same judgement, in the same words, before anything trains.
    assert "clash.yaml:11: tiers.smoke.runs.r.set.train.trainer: the trainer measured names the metrics " \
           "test_error, which claimbench measures itself" in text, text
    # The trainer of the run reports score no longer: naming it is an error too.
    assert "clash.yaml:13: tiers.smoke.checks[0].a.metric: unknown metric of a training run 'score'" in text, text


# --- stacked plug-in runs -------------------------------------------------------------------------


def mlp_config(seed: int, **optim):
    from claimbench.runconfig import run_config_from_dict

    return run_config_from_dict({"model": {"arch": "mlp", "params": {"hidden": [16, 8]}},
                                 "data": {"dataset": "skdigits", "flip": False},
                                 "optim": {"name": "adam", **optim},
                                 "train": {"unit": "steps", "phases": [8, 4], "batch_size": 8, "snapshots": 2,
                                           "seed": seed}})


def test_stacked_mlp_runs_end_as_the_runs_trained_alone(named_example):
    import torch

    from claimbench.config import group_key, stackable
    from claimbench.plan.groups import PlannedRun, form_groups
    from claimbench.train.loop import train_models
    from tests.helpers import tiny_data

    group = [mlp_config(0, regularizer="l2", lam=1e-2), mlp_config(1, name="sgd", regularizer="wd", lam=1e-2)]
    assert stackable(group[0]) and group_key(group[0]) == group_key(group[1])
    # The planner groups them; a trainer's run stays alone.
    runs = [PlannedRun(str(i), c) for i, c in enumerate([*group, trainer_config()])]
    assert sorted(len(g) for g in form_groups(runs, 4)) == [1, 2]

    data, cpu = tiny_data(), torch.device("cpu")
    data = type(data)(data.name, data.train_x[:, :1], data.train_y, data.test_x[:, :1], data.test_y, data.num_classes)
    fused = train_models(group, data, cpu)
    assert fused[0].execution is not None and len(fused) == 2
    for config, got in zip(group, fused):
        alone = train_models([config], data, cpu)[0]
        assert got.model.runs == 1  # measurement sees single-run networks
        ref, new = alone.model.state_dict(), got.model.state_dict()
        assert ref.keys() == new.keys()
        for name in ref:
            assert torch.allclose(new[name].float(), ref[name].float(), rtol=1e-4, atol=1e-5), name
        assert got.history["loss"] == pytest.approx(alone.history["loss"], rel=1e-4, abs=1e-6)
    # The two runs differ: the comparison above would catch runs swapped or mixed.
    assert not torch.allclose(fused[0].model.net.layers[1].weight, fused[1].model.net.layers[1].weight)


FLAT = """\
import torch
from torch import nn
from claimbench.plugins import ModelPlugin


def build(in_channels, image_size, num_classes, runs=1, honour_runs=True):
    k = runs if honour_runs else 1
    return nn.Sequential(nn.Conv2d(k * in_channels, k * 4, 1, groups=k), nn.BatchNorm2d(k * 4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Conv2d(k * 4, k * num_classes, 1, groups=k), nn.Flatten())


flat = ModelPlugin(name="flat", build=build, stackable=True)
"""


def test_a_stackable_plugin_whose_stack_is_not_its_runs_is_refused_by_name(monkeypatch, tmp_path):
    from claimbench import plugins
    from claimbench.config import ModelConfig
    from claimbench.train.models import build_model, stack_models

    (tmp_path / "flat_plugin.py").write_text(FLAT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "flat_plugin:flat")
    plugins._resolve_with.cache_clear()
    try:
        models = [build_model(ModelConfig(arch="flat"), 3, 8, 10, "digits") for _ in range(2)]
        assert stack_models(models).runs == 2  # build(runs=2) is two of build(runs=1): accepted
        # A build that ignores runs returns one network where two were asked for.
        for m in models:
            m.make = lambda runs: plugins.model_plugin("flat").plugin.build(3, 8, 10, runs=runs, honour_runs=False)
        with pytest.raises(ValueError) as e:
            stack_models(models)
        message = str(e.value)
        assert message.startswith("plug-in architecture flat (stackable=True): build(..., runs=2) is not 2 networks")
        assert "net.0.weight is [4, 3, 1, 1] for 2 runs, expected [8, 3, 1, 1]" in message, message
    finally:
        sys.modules.pop("flat_plugin", None)
        plugins._resolve_with.cache_clear()


def test_an_entry_whose_plugin_is_not_installed_here_is_left_in_place(fake_trainers, tmp_path, monkeypatch):
    """A run of a plug-in read where the plug-in is not installed (another virtualenv, the
    package uninstalled) is not damage: it is not used, said once, and stays where it is."""
    from claimbench import plugins
    from claimbench.cache import RunStore
    from claimbench.cache.archive import entry_infos, verify_store
    from claimbench.cache.keys import run_key
    from claimbench.group import run_and_measure

    config = fake_config()
    store = RunStore(tmp_path / "cache")
    key = run_key(config)
    store.put(key, run_and_measure(config, device="cpu"))
    assert store.get(key) is not None

    monkeypatch.delenv("CLAIMBENCH_PLUGINS")
    plugins._resolve_with.cache_clear()
    elsewhere = RunStore(tmp_path / "cache")
    assert elsewhere.get(key) is None
    assert store.entry_dir(key).is_dir() and not (tmp_path / "cache" / "corrupt").exists()
    (info,) = entry_infos(elsewhere)
    assert "not readable here" in info.problem and "train.trainer" in info.problem
    assert not verify_store(elsewhere, repair=True).moved and store.entry_dir(key).is_dir()

    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "fake_trainers:fake")
    plugins._resolve_with.cache_clear()
    assert RunStore(tmp_path / "cache").get(key).config == config
