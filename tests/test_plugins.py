"""A model and a dataset of one's own, through the packaging ecosystem's entry points.

examples/plugin-example/ (an MLP with BatchNorm, scikit-learn's digits as one-channel images, a
claims folder with two claims) is copied to a temporary folder and installed there with pip
(``--target``, found through PYTHONPATH, as an installed distribution: its entry points are what
repro reads). ``repro verify`` then runs on its claims as subprocesses: verdicts, a second run
served from the cache, an edit of the model's code that retrains exactly the MLP's runs (the
built-in BasicNet on the plug-in dataset stays cached), and an edit of its README that retrains
nothing. In-process tests cover validation (typed fields, file:line errors) and name clashes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin-example"
BIN = Path(sys.executable).parent
RUNS = 7  # 6 MLP runs (L2 and none, 3 seeds) + 1 BasicNet on the plug-in dataset


def install(src: Path, site: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--upgrade", "--target", str(site), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for leftover in ("build", "repro_plugin_example.egg-info"):
        shutil.rmtree(src / leftover, ignore_errors=True)


def command(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REPRO_CACHE", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(root / "site")
    env["REPRO_CACHE"] = str(root / "cache")
    return subprocess.run(args, cwd=root / "src", env=env, capture_output=True, text=True, timeout=900)


def verify(root: Path) -> subprocess.CompletedProcess:
    return command(root, str(BIN / "repro"), "verify", "--tier", "smoke", "--claims-dir", "claims",
                   "--out", str(root / "report"), "--device", "cpu")


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


def test_verify_trains_caches_and_retrains_exactly_what_changed(example):
    first = verify(example)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "2 of 2 claim files valid" in first.stdout
    assert trained_line(first).startswith(f"trained {RUNS}, cached 0, failed 0"), out
    assert "1 not reproduced, 1 reproduced" in first.stdout, out
    index = (example / "report" / "index.md").read_text()
    assert "[basicnet-learns-skdigits]" in index and "[mlp-l2-sparsity]" in index

    # Again, reinstalled with another README (no code): served from the cache, nothing retrains.
    readme = example / "src" / "README.md"
    readme.write_text(readme.read_text() + "\nAn added paragraph.\n")
    install(example / "src", example / "site")
    after_readme = verify(example)
    assert after_readme.returncode == 0, after_readme.stdout + after_readme.stderr
    assert trained_line(after_readme).startswith(f"trained 0, cached {RUNS}, failed 0"), after_readme.stdout

    # The model's code changes: the 6 MLP runs retrain, the BasicNet on the plug-in data does not.
    mlp = example / "src" / "repro_plugin_example" / "mlp.py"
    text = mlp.read_text()
    assert "nn.Linear(width, h, bias=False)" in text
    mlp.write_text(text.replace("nn.Linear(width, h, bias=False)", "nn.Linear(width, h, bias=True)"))
    install(example / "src", example / "site")
    after_model = verify(example)
    assert after_model.returncode == 0, after_model.stdout + after_model.stderr
    assert trained_line(after_model).startswith(f"trained {RUNS - 1}, cached 1, failed 0"), after_model.stdout


def test_plugin_fields_are_validated_with_file_and_line(example, tmp_path):
    claims = example / "src" / "claims"
    bad = tmp_path / "bad"
    shutil.copytree(claims, bad)
    base = bad / "_bases" / "mlp.yaml"
    base.write_text(base.read_text().replace("params: {hidden: [128, 128]}", "params: {hiden: [128]}"))
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
            checks:
              - {kind: distribution, a: {run: r, metric: test_error}, min: 0, max: 50}
        """))
    result = command(example, str(BIN / "repro"), "validate", "--claims-dir", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert "model.params.hiden: unknown key 'hiden' (did you mean 'hidden'?)" in err, err
    # The BasicNet base's width means nothing to the MLP (run w): refused where it is written.
    assert "typo.yaml:8: tiers.smoke.base.model.width: applies to the built-in architectures; the plug-in mlp takes its fields in model.params" in err, err
    assert "unknown dataset 'skdigit' (did you mean 'skdigits'?)" in err and "skdigits" in err, err
    assert "mlp_l2_sparsity.yaml" in err and "Traceback" not in err


# --- in process: the registry on its own (no training) -------------------------------------------


def fake_distribution(site: Path, name: str, group: str, entries: dict[str, str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


@pytest.fixture
def registry(monkeypatch, tmp_path):
    from repro import plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._resolve_with.cache_clear()
    yield tmp_path
    plugins._resolve_with.cache_clear()


def test_a_plugin_named_like_a_builtin_is_an_error_naming_both(registry):
    from repro.config import run_config_from_dict, ConfigError

    fake_distribution(registry, "clash", "repro.models", {"vgg11": "clash_mod:net", "tiny": "clash_mod:tiny"})
    # A built-in config never looks at plug-ins: it stays valid whatever is installed.
    assert run_config_from_dict({"model": {"arch": "vgg11"}, "data": {"dataset": "cifar10"}}).model.arch == "vgg11"
    with pytest.raises(ConfigError) as e:
        run_config_from_dict({"model": {"arch": "tiny"}})
    assert e.value.path == "model.arch"
    assert "plug-in architecture 'vgg11' (clash_mod:net, distribution clash 1.0" in str(e.value)
    assert "built-in architecture 'vgg11'" in str(e.value)


def test_a_badly_declared_plugin_says_what_is_wrong(registry):
    from repro.config import run_config_from_dict, ConfigError

    (registry / "bad_mod.py").write_text(textwrap.dedent("""\
        from dataclasses import dataclass
        from repro.plugins import ModelPlugin

        @dataclass
        class Loose:
            hidden: int

        net = ModelPlugin(name="net", build=lambda *a, **k: None, fields=Loose, stackable=True)
        """))
    fake_distribution(registry, "bad", "repro.models", {"net": "bad_mod:net"})
    with pytest.raises(ConfigError) as e:
        run_config_from_dict({"model": {"arch": "net"}})
    message = str(e.value)
    assert "fields Loose must be a frozen dataclass" in message
    assert "stackable=True: fused groups of plug-in models are not supported" in message


def test_builtin_canonical_json_has_no_plugin_fields():
    from repro.cache.keys import run_key
    from repro.config import RunConfig

    from tests.test_cache import GOLDEN_KEY

    assert "params" not in RunConfig().canonical_json()
    assert run_key(RunConfig(), fingerprint="0" * 16) == GOLDEN_KEY


def test_named_as_module_attribute_in_the_folders_repro_yaml(tmp_path):
    """The same plug-ins, not installed (no entry points): the claims folder names them in
    repro.yaml as "module:attribute" and the package is importable from PYTHONPATH. The folder
    validates, its BasicNet claim trains and verifies, and a bad name is a file:line error."""
    root = tmp_path
    shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    claims = root / "src" / "claims"
    (claims / "repro.yaml").write_text("plugins:\n  - repro_plugin_example.models:mlp\n"
                                       "  - repro_plugin_example.datasets:skdigits\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REPRO_CACHE", "PYTEST_ADDOPTS", "REPRO_PLUGINS")}
    env.update(PYTHONPATH=str(root / "src"), REPRO_CACHE=str(root / "cache"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "repro"), *args], cwd=root / "src", env=env, capture_output=True, text=True,
                              timeout=900)

    validated = run("validate", "--claims-dir", "claims")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "2 of 2 claim files valid" in validated.stdout
    verified = run("verify", "--tier", "smoke", "--claims-dir", "claims", "-k", "basicnet", "--out",
                   str(root / "report"), "--device", "cpu")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "1 passed" in verified.stdout
    # Without repro.yaml the names are unknown again; a name that is not module:attribute is refused.
    (claims / "repro.yaml").write_text("plugins:\n  - repro_plugin_example.models\n")
    bad = run("validate", "--claims-dir", "claims")
    assert bad.returncode == 2 and "repro.yaml:2: plugins[0]: expected \"module:attribute\"" in bad.stderr
    (claims / "repro.yaml").unlink()
    unknown = run("validate", "--claims-dir", "claims")
    assert unknown.returncode == 2 and "unknown architecture 'mlp'" in unknown.stderr
