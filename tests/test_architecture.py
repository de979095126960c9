"""The architecture as contracts (.importlinter): the pipeline's layers and "torch only below the
line" hold, and a deliberately inverted import breaks them with a message naming it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), str(root / ".importlinter"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    out = lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    contracts = (REPO / ".importlinter").read_text().count("[importlinter:contract:")
    assert f"Contracts: {contracts} kept, 0 broken" in out.stdout


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "claimbench", root / "claimbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", root / ".importlinter")
    return root


def test_an_inverted_import_breaks_the_layers_and_is_named(tmp_path):
    root = _copy(tmp_path)
    keys = root / "claimbench" / "cache" / "keys.py"
    keys.write_text(keys.read_text() + "\n\ndef _inverted():\n    from claimbench.report import markdown\n    return markdown\n")
    out = lint(root)
    assert out.returncode != 0
    assert "BROKEN" in out.stdout and "claimbench.cache.keys -> claimbench.report.markdown" in out.stdout


def test_torch_in_a_reading_stage_breaks_the_torch_line(tmp_path):
    root = _copy(tmp_path)
    verdict = root / "claimbench" / "check" / "verdict.py"
    verdict.write_text(verdict.read_text() + "\n\ndef _inverted():\n    import torch\n    return torch\n")
    out = lint(root)
    assert out.returncode != 0 and "claimbench.check.verdict -> torch" in out.stdout


def test_parsing_in_training_code_breaks_the_training_contract(tmp_path):
    """Training reads the typed config; the parsing and its messages (claimbench.runconfig) stay out."""
    root = _copy(tmp_path)
    optim = root / "claimbench" / "train" / "optim.py"
    optim.write_text(optim.read_text() + "\n\ndef _inverted():\n    from claimbench import runconfig\n    return runconfig\n")
    out = lint(root)
    assert out.returncode != 0 and "claimbench.train.optim -> claimbench.runconfig" in out.stdout


def test_every_module_of_the_package_has_a_layer():
    """A new top-level module outside the contract would be unconstrained: every one is placed."""
    text = (REPO / ".importlinter").read_text()
    layers = text.split("layers =", 1)[1].split("[importlinter:", 1)[0]
    placed = {name.strip() for line in layers.splitlines() for name in line.split("|") if name.strip()}
    package = REPO / "claimbench"
    found = {f"claimbench.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"} | \
        {f"claimbench.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert found - placed == set(), "modules without a layer in .importlinter"
