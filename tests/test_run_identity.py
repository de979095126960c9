"""A run's identity follows what it computes: a behaviour-free refactor of claimbench keeps every key;
a plug-in gets one key whichever way it is found, and an edit of a helper it imports from outside
its package retrains exactly its runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "claimbench"


def _python(code: str, pythonpath: list[Path], extra_env: dict | None = None, cwd: Path = REPO) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLAIMBENCH_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra_env or {})
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _smoke_keys(pythonpath: list[Path], cwd: Path) -> dict[str, str]:
    # Run outside the checkout, so the package on the path is the one imported.
    out = _python("import sys; from claimbench.cli import main; sys.exit(main(['plan', '--tier', 'smoke', '--json', "
                  f"'--claims-dir', {str(REPO / 'claims')!r}]))", pythonpath, cwd=cwd)
    return {r["summary"] + " " + ",".join(r["claims"]): r["key"] for r in json.loads(out)["runs"]}


@pytest.mark.slow
def test_a_behaviour_free_refactor_keeps_every_smoke_key(tmp_path):
    """An unused function added to every module of the package and every did-you-mean message
    reworded: the smoke tier's keys do not move (they did, with keys made of the code's text)."""
    before = _smoke_keys([], tmp_path)
    copy = tmp_path / "src" / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    reworded = 0
    for path in copy.rglob("*.py"):
        text = path.read_text()
        text, n = re.subn(r"did you mean", "perhaps you meant", text)
        reworded += n
        path.write_text(text + "\n\ndef _an_unused_helper_added_by_a_refactor(x):\n    return [x, x * 2]\n")
    assert reworded >= 1
    after = _smoke_keys([tmp_path / "src"], tmp_path)
    assert "perhaps you meant" in _python("import claimbench.runconfig as c; print(c.unknown_name_message('x', 'adma', "
                                          "['adam']))", [tmp_path / "src"], cwd=tmp_path)  # the copy is what ran
    assert len(before) >= 20 and after == before


PLUGIN_DECLARE = '''\
"""A model plug-in whose initialisation comes from a lab helper outside its package."""
from claimbench.plugins import ModelPlugin


def build(in_channels, image_size, num_classes):
    import torch.nn as nn

    from labhelper import init_scale  # imported inside the function, from outside the package

    net = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
    init_scale(net)
    return net


labtiny = ModelPlugin(name="labtiny", build=build)
'''
HELPER = '''\
"""The lab's initialisation helper."""


def init_scale(net):
    for p in net.parameters():
        p.data.mul_(1.0)
'''


def _install(site: Path, src: Path) -> None:
    """``labplug`` installed into ``site`` as pip would: the package, a dist-info with METADATA,
    RECORD (with checksums) and the entry point."""
    import base64
    import hashlib

    shutil.copytree(src / "labplug", site / "labplug")
    info = site / "labplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[claimbench.models]\nlabtiny = labplug.declare:labtiny\n")
    (info / "top_level.txt").write_text("labplug\n")
    rows = []
    for f in sorted(site.rglob("*")):
        if f.is_file():
            digest = base64.urlsafe_b64encode(hashlib.sha256(f.read_bytes()).digest()).rstrip(b"=").decode()
            rows.append(f"{f.relative_to(site).as_posix()},sha256={digest},{f.stat().st_size}")
    rows.append("labplug-0.1.dist-info/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


KEYS = textwrap.dedent("""
    import json
    from claimbench.cache import run_key
    from claimbench.runconfig import run_config_from_dict
    plugin = run_config_from_dict({"model": {"arch": "labtiny"}, "data": {"dataset": "digits"}})
    builtin = run_config_from_dict({"data": {"dataset": "digits"}})
    print(json.dumps([run_key(plugin), run_key(builtin)]))
""")


def _keys(pythonpath: list[Path], named: bool) -> list[str]:
    env = {"CLAIMBENCH_PLUGINS": "labplug.declare:labtiny"} if named else {}
    return json.loads(_python(KEYS, pythonpath, env, cwd=pythonpath[0]))


@pytest.fixture
def lab(tmp_path) -> Path:
    (tmp_path / "src" / "labplug").mkdir(parents=True)
    (tmp_path / "src" / "labplug" / "__init__.py").write_text("")
    (tmp_path / "src" / "labplug" / "declare.py").write_text(PLUGIN_DECLARE)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "labhelper.py").write_text(HELPER)
    _install(tmp_path / "site", tmp_path / "src")
    return tmp_path


@pytest.mark.slow
def test_one_plugin_gets_one_key_whichever_way_it_is_found(lab):
    on_path = _keys([lab / "src", lab / "lab"], named=True)
    installed_named = _keys([lab / "site", lab / "lab"], named=True)
    entry_point = _keys([lab / "site", lab / "lab"], named=False)
    assert on_path == installed_named == entry_point
    assert on_path[0] != on_path[1]


@pytest.mark.slow
def test_editing_a_helper_outside_the_package_retrains_exactly_its_runs(lab):
    plugin0, builtin0 = _keys([lab / "site", lab / "lab"], named=False)
    helper = lab / "lab" / "labhelper.py"
    helper.write_text(helper.read_text().replace('"""The lab\'s initialisation helper."""',
                                                 '"""The initialisation helper of the lab (reworded)."""'))
    assert _keys([lab / "site", lab / "lab"], named=False) == [plugin0, builtin0]  # a docstring: no retrain
    helper.write_text(helper.read_text().replace("p.data.mul_(1.0)", "p.data.mul_(0.5)"))
    plugin1, builtin1 = _keys([lab / "site", lab / "lab"], named=False)
    assert plugin1 != plugin0 and builtin1 == builtin0


STORE_ONE = textwrap.dedent("""
    import torch
    from claimbench.cache import RunRecord, RunStore, run_key
    from claimbench.runconfig import run_config_from_dict
    cfg = run_config_from_dict({"model": {"arch": "labtiny"}, "data": {"dataset": "digits"}})
    key = run_key(cfg)
    RunStore(CACHE).put(key, RunRecord(cfg, {"sparsity_gamma": 1.0, "diverged_at": None}, {"loss": [1.0]},
                                       {"device": "cpu"}, {"w": torch.zeros(2)}))
    print(key)
""")


@pytest.mark.slow
def test_installing_a_plugin_used_from_pythonpath_leaves_every_entry_in_place(lab):
    """A run trained with the plug-in on PYTHONPATH is the same run once the plug-in is installed:
    show serves it, and show, cache ls and cache verify move nothing (nothing under corrupt/)."""
    cache = lab / "cache"
    key = _python(STORE_ONE.replace("CACHE", repr(str(cache))), [lab / "src", lab / "lab"],
                  {"CLAIMBENCH_PLUGINS": "labplug.declare:labtiny"}, cwd=lab).strip()
    entry = cache / key[:2] / key
    assert entry.is_dir()
    installed = [lab / "site", lab / "lab"]
    for args in (["show", key[:12]], ["cache", "ls"], ["cache", "verify"]):
        argv = [*args, "--cache-dir", str(cache)]
        out = _python(f"import sys; from claimbench.cli import main; sys.exit(main({argv!r}))", installed, cwd=lab)
        if args[0] == "show":
            assert "labtiny" in out, out
    assert entry.is_dir() and not (cache / "corrupt").exists()


# The audit's layout: a top-level module plug-in beside the experiment, with a sibling module of
# the lab's that it imports; no package, nothing installed, found on PYTHONPATH.
BESIDE = '''\
"""A trainer beside the experiment."""
import helper
from claimbench.plugins import TrainerPlugin, TrainerResult


def train(run):
    for group in run.optimizer.param_groups:
        group["lr"] *= helper.STEPS_SCALE
    return TrainerResult(run.model.state_dict(), {"acc": helper.ACC})


beside = TrainerPlugin(name="beside", train=train, metrics=("acc",))
'''
BESIDE_HELPER = '''\
"""Numbers the trainer uses."""
ACC = 50.0
STEPS_SCALE = 1.0
'''


@pytest.fixture
def beside(tmp_path, monkeypatch):
    from claimbench import plugins
    from claimbench.cache import keys

    (tmp_path / "mytrainer.py").write_text(BESIDE)
    (tmp_path / "helper.py").write_text(BESIDE_HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "mytrainer:beside")

    def forget() -> None:  # what a fresh process would know: the files as they are now
        for name in ("mytrainer", "helper"):
            sys.modules.pop(name, None)
        plugins._resolve_with.cache_clear()
        keys._plugin_part.cache_clear()

    forget()
    yield tmp_path, forget
    forget()


def test_editing_a_module_beside_a_top_level_plugin_changes_its_runs_keys(beside):
    from claimbench.cache import run_key
    from claimbench.cache.keys import plugin_identity
    from claimbench.runconfig import run_config_from_dict

    folder, forget = beside

    def keys() -> tuple[str, str, str]:
        forget()
        plugin = run_config_from_dict({"data": {"dataset": "digits"}, "train": {"trainer": "beside"}})
        builtin = run_config_from_dict({"data": {"dataset": "digits"}})
        return run_key(plugin), run_key(builtin), plugin_identity(plugin)

    plugin0, builtin0, identity = keys()
    assert "code helper " in identity and "code mytrainer " in identity, identity
    helper = folder / "helper.py"
    helper.write_text(helper.read_text().replace('"""Numbers the trainer uses."""', '"""The numbers (reworded)."""'))
    assert keys()[:2] == (plugin0, builtin0)  # a docstring: no retrain
    helper.write_text(helper.read_text().replace("ACC = 50.0", "ACC = 99.0"))
    plugin1, builtin1, _ = keys()
    assert plugin1 != plugin0 and builtin1 == builtin0
