"""The content-addressed run cache: keys that follow the code's behaviour, reads that verify key,
config and checksums, damage moved aside (checked) and retrained, permissions for shared caches,
metrics recomputed when the measurement code changes, one training per key across processes."""

import dataclasses
import json
import re
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from claimbench.cache import CACHE_FORMAT, CacheError, RunRecord, RunStore, ensure_run, run_key, training_code_fingerprint
from claimbench.cache.keys import (
    PACKAGE_DIR,
    metrics_fingerprint,
    metrics_fingerprint_of,
    metrics_modules,
    training_fingerprint_of,
    training_modules,
)
from claimbench.cache.entry import JSON_FILES, EntryDamaged, EntryNeedsPlugin, entry_files, record_from_files
from claimbench.config import PLUGIN_FIELDS, ConfigError, ModelConfig, RunConfig, plugins_used
from claimbench.runconfig import PluginUnavailable, run_config_from_dict
from tests.helpers import GOLDEN_KEY, REPO



def record(config: RunConfig, value: float = 1.0) -> RunRecord:
    return RunRecord(config, {"sparsity_gamma": value, "diverged_at": None}, {"loss": [1.0, 0.5]},
                     {"device": "cpu"}, {"w": torch.arange(4.0)})


def rewrite_manifest(entry: Path, **changes) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest.update(changes)
    (entry / "manifest.json").write_text(json.dumps(manifest))


def test_golden_key_of_the_default_config():
    # Changing this means every cached result of every user is invalidated: do it on purpose.
    assert run_key(RunConfig(), "0" * 16) == GOLDEN_KEY


def test_key_covers_config_and_code():
    base = RunConfig()
    other = run_config_from_dict({"optim": {"lam": 1e-3}})
    assert run_key(base, "a" * 16) != run_key(other, "a" * 16)
    assert run_key(base, "a" * 16) != run_key(base, "b" * 16)
    assert len(training_code_fingerprint()) == 16


@pytest.fixture
def source_copy(tmp_path):
    """A copy of the package source to edit."""
    dest = tmp_path / "claimbench"
    shutil.copytree(PACKAGE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _fps(root: Path) -> tuple[str, str]:
    return training_fingerprint_of(root), metrics_fingerprint_of(root)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow
def test_golden_fingerprints_follow_behaviour_not_text(source_copy):
    """The training key survives comments, docstrings and formatting in the training code, and
    any edit of the measurement code; a behaviour edit changes it. Same for the metrics."""
    train0, metrics0 = _fps(source_copy)
    assert (train0, metrics0) == _fps(PACKAGE_DIR) and train0 != metrics0
    loop, sparsity = source_copy / "train" / "loop.py", source_copy / "measure" / "sparsity.py"

    # Text-only edits of the training code: comment, docstring, blank lines, line breaks.
    loop.write_text(loop.read_text() + "\n# a comment fixed in loop.py\n")
    _edit(loop, '"""The one training loop', '"""The ONE training loop (docstring edited)')
    _edit(loop, "LOSS_POINTS = 200", "\n\nLOSS_POINTS = (\n    200  # points\n)\n")
    assert _fps(source_copy) == (train0, metrics0)
    # A behaviour edit of the training code changes the training key only.
    _edit(loop, "200  # points", "201")
    train1, metrics1 = _fps(source_copy)
    assert train1 != train0 and metrics1 == metrics0

    # Text-only edits of the measurement code change neither fingerprint.
    sparsity.write_text(sparsity.read_text() + "\n# a comment in sparsity.py\n")
    _edit(sparsity, '"""Feature sparsity', '"""Feature (filter) sparsity')
    assert _fps(source_copy) == (train1, metrics0)
    # A behaviour edit of the measurement code changes the metrics fingerprint, not the key.
    _edit(sparsity, "GAMMA_THRESHOLD = 1e-3", "GAMMA_THRESHOLD = 2e-3")
    train2, metrics2 = _fps(source_copy)
    assert train2 == train1 and metrics2 != metrics0


# The modules whose behaviour retrains, as the import graph of the training entry
# (claimbench.train) and the loaders gives them today. A change here is a decision: every user's
# cached runs follow this set. claimbench.train.train_runs hands a run that names a registered
# trainer to claimbench.train.trainer and every other group to the loop, so both are training
# code for every run.
GOLDEN_TRAINING_MODULES = (
    "claimbench", "claimbench.config", "claimbench.data", "claimbench.data.base", "claimbench.data.catalog", "claimbench.data.cifar",
    "claimbench.data.embedded", "claimbench.data.folder", "claimbench.names", "claimbench.netshape", "claimbench.plugins", "claimbench.train",
    "claimbench.train.checkpoint", "claimbench.train.device", "claimbench.train.graphs", "claimbench.train.loop",
    "claimbench.train.models", "claimbench.train.optim", "claimbench.train.outcome", "claimbench.train.state",
    "claimbench.train.trainer",
)


def _all_modules(root: Path) -> list[tuple[str, Path]]:
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        parts = [root.name, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), f))
    return out


@pytest.mark.slow
def test_every_module_edited_in_turn_moves_exactly_the_keys_it_should(source_copy):
    """The training key follows the import closure of the loop and the loaders, nothing else:
    a behaviour edit of netshape retrains everything; of the CLI, reports, checks or plans,
    nothing; of the measurement code, only the metrics."""
    assert training_modules(source_copy) == GOLDEN_TRAINING_MODULES
    train0, metrics0 = _fps(source_copy)
    moved_training, moved_metrics = set(), set()
    for module, path in _all_modules(source_copy):
        original = path.read_text()
        path.write_text(original + "\n_FINGERPRINT_PROBE = 1\n")
        train1, metrics1 = _fps(source_copy)
        path.write_text(original)
        if train1 != train0:
            moved_training.add(module)
        if metrics1 != metrics0:
            moved_metrics.add(module)
    assert moved_training == set(GOLDEN_TRAINING_MODULES)
    assert moved_metrics == set(metrics_modules(source_copy))
    for must in ("claimbench.netshape", "claimbench.config", "claimbench.train.loop", "claimbench.data.cifar"):
        assert must in moved_training
    for never in ("claimbench.cli", "claimbench.plan", "claimbench.report.markdown", "claimbench.check.kinds",
                  "claimbench.cache.store", "claimbench.spec.claims", "claimbench.train.profile"):
        assert never not in moved_training and never not in moved_metrics
    assert "claimbench.measure.sparsity" in moved_metrics


def test_a_new_module_imported_by_the_loop_enters_the_key(source_copy):
    """Nobody has to remember a list: a module the loop starts to import (even inside a function)
    is covered from then on; an unused new module is not."""
    train0 = training_fingerprint_of(source_copy)
    (source_copy / "train" / "schedule_extra.py").write_text("FACTOR = 0.1\n")
    assert training_fingerprint_of(source_copy) == train0
    loop = source_copy / "train" / "loop.py"
    loop.write_text(loop.read_text() + "\n\ndef _probe():\n    from claimbench.train import schedule_extra\n    return schedule_extra\n")
    train1 = training_fingerprint_of(source_copy)
    assert "claimbench.train.schedule_extra" in training_modules(source_copy) and train1 != train0
    (source_copy / "train" / "schedule_extra.py").write_text("FACTOR = 0.2\n")
    assert training_fingerprint_of(source_copy) != train1


def test_rewording_a_message_retrains_nothing_but_raising_differently_does(source_copy):
    train0 = training_fingerprint_of(source_copy)
    plugins = source_copy / "plugins.py"  # in every run's training code (GOLDEN_TRAINING_MODULES)
    text = plugins.read_text()
    raised = re.search(r'raise PluginError\(f?"([^"{}]{12,})', text)
    assert raised, "plugins.py raises PluginError with a message"
    plugins.write_text(text[:raised.start(1)] + "reworded: " + text[raised.start(1):])
    assert training_fingerprint_of(source_copy) == train0
    plugins.write_text(text[:raised.start()] + "raise TypeError(" + text[raised.start() + len("raise PluginError("):])
    assert training_fingerprint_of(source_copy) != train0


def _entry_of(store: RunStore, config: RunConfig, plugins: str = "") -> tuple[str, dict[str, bytes], dict]:
    """A stored entry of ``config`` (not validated: a config a reader may meet in a cache), its
    JSON files and its manifest."""
    key = run_key(config, plugins=plugins)
    store.put_files(key, entry_files(record(config), key, identities={"plugins": plugins or None}))
    entry = store.entry_dir(key)
    files = {name: (entry / name).read_bytes() for name in JSON_FILES}
    return key, files, json.loads((entry / "manifest.json").read_bytes())


def test_a_config_error_on_model_arch_that_is_not_about_plugins_is_damage(tmp_path):
    """VGG-16 pools five times: digits' 8x8 images are too small, an error on model.arch. That is
    a config no run could have had, not a plug-in missing here: the entry is damaged."""
    config = RunConfig(model=ModelConfig(arch="vgg16"))
    with pytest.raises(ConfigError) as raised:
        run_config_from_dict(config.to_dict())
    assert raised.value.path == "model.arch" and "pooling stages need images" in raised.value.message
    assert not isinstance(raised.value, PluginUnavailable)
    key, files, manifest = _entry_of(RunStore(tmp_path), config)
    with pytest.raises(EntryDamaged, match="unreadable config.json: model.arch: 5 2x2 pooling stages"):
        record_from_files(files, manifest, key)


@pytest.mark.parametrize("field", PLUGIN_FIELDS, ids=lambda f: f.path)
def test_every_plugin_field_of_the_config_is_one_the_cache_keeps_when_its_plugin_is_missing(tmp_path, field, caplog):
    """config.PLUGIN_FIELDS is the one list of the fields that name plug-ins: each one, naming a
    plug-in not installed here, is a plug-in the run's key covers, a PluginUnavailable when parsed,
    and an entry the store leaves in place as not readable here (not damaged)."""
    section, name = field.path.split(".")
    config = RunConfig()
    config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section),
                                                                         **{name: "not_installed_here"})})
    assert plugins_used(config) == ((field.kind, "not_installed_here"),)
    with pytest.raises(PluginUnavailable) as raised:
        run_config_from_dict(config.to_dict())
    assert raised.value.path == field.path
    store = RunStore(tmp_path)
    key, files, manifest = _entry_of(store, config, plugins=f"{field.kind} not_installed_here")
    with pytest.raises(EntryNeedsPlugin, match=f"its config.json's {re.escape(field.path)}: unknown"):
        record_from_files(files, manifest, key)
    assert store.get(key) is None and store.entry_dir(key).is_dir()
    assert "cannot be read here" in caplog.text and "damaged" not in caplog.text


def test_roundtrip_with_weights(tmp_path):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    store.put(key, record(cfg, 42.0))
    got = store.get(key, with_weights=True)
    assert got.config == cfg and got.metrics["sparsity_gamma"] == 42.0
    assert torch.equal(got.state_dict["w"], torch.arange(4.0))
    assert got.metrics_fingerprint == metrics_fingerprint() and not got.metrics_recomputed
    assert store.keys() == [key]


@pytest.mark.parametrize("damage", ["truncate_metrics", "flip_weights", "truncate_weights", "drop_manifest",
                                    "bad_json"])
def test_damaged_entry_is_moved_aside_and_retrained(tmp_path, damage, caplog):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    weights_needed = damage == "flip_weights"  # a flipped byte is seen when the weights are used
    if damage == "truncate_metrics":
        p = entry / "metrics.json"
        p.write_bytes(p.read_bytes()[:5])
    elif damage == "flip_weights":
        p = entry / "model.pt"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    elif damage == "truncate_weights":
        os.truncate(entry / "model.pt", 100)
    elif damage == "drop_manifest":
        (entry / "manifest.json").unlink()
    else:
        (entry / "manifest.json").write_text("{not json")
    if damage == "truncate_weights":
        assert store.get(key) is None  # without loading the weights: `run`, `show`, `report`
    got = store.get(key, with_weights=weights_needed)
    assert got is None
    if damage != "drop_manifest":
        assert "damaged" in caplog.text and key[:12] in caplog.text
    # A read reports the damage and leaves the entry where it is.
    assert entry.is_dir() and not (tmp_path / "corrupt").exists()
    calls = []
    rec, trained = ensure_run(cfg, store, lambda c, ckpt: calls.append(c) or record(c, 7.0), key)
    assert trained and calls == [cfg] and rec.metrics["sparsity_gamma"] == 7.0
    assert store.get(key).metrics["sparsity_gamma"] == 7.0
    if damage != "drop_manifest":
        # Storing the run trained again keeps the damaged entry for its owner, aside.
        moved = list((tmp_path / "corrupt").iterdir())
        assert len(moved) == 1 and f"moved to {moved[0]}" in caplog.text


def test_swapped_entries_are_never_served_for_each_other(tmp_path, caplog):
    """Entry directories holding another run's files: retrained, never the other's numbers."""
    store = RunStore(tmp_path)
    l2 = RunConfig()
    wd = run_config_from_dict({"optim": {"regularizer": "wd"}})
    k_l2, k_wd = run_key(l2), run_key(wd)
    e_l2, e_wd = store.put(k_l2, record(l2, 11.0)), store.put(k_wd, record(wd, 22.0))
    # Swap the two directories' contents.
    tmp = tmp_path / "swap"
    e_l2.rename(tmp)
    e_wd.rename(e_l2)
    tmp.rename(e_wd)
    assert store.get(k_wd) is None and "manifest is for key" in caplog.text
    rec, trained = ensure_run(wd, store, lambda c, ckpt: record(c, 33.0), k_wd)
    assert trained and rec.metrics["sparsity_gamma"] == 33.0
    # A manifest rewritten to claim the key does not help: the config does not hash to it.
    rewrite_manifest(e_l2, key=k_l2)
    assert store.get(k_l2) is None and "config.json does not belong to this key" in caplog.text


def test_entry_for_another_config_is_not_served(tmp_path, caplog):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    store.put(key, record(cfg))
    other = run_config_from_dict({"optim": {"lam": 1e-3}})
    assert store.get(key, config=other) is None and "not the requested config" in caplog.text


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Exploit.marker),))


def test_weights_with_pickled_code_are_refused(tmp_path, caplog):
    store = RunStore(tmp_path / "cache")
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    _Exploit.marker = tmp_path / "pwned"
    buffer = __import__("io").BytesIO()
    torch.save({"w": _Exploit()}, buffer)
    data = buffer.getvalue()
    torch.load(__import__("io").BytesIO(data), weights_only=False)  # what a pickle load would do
    assert _Exploit.marker.exists()
    _Exploit.marker.unlink()
    (entry / "model.pt").write_bytes(data)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["model.pt"] = __import__("hashlib").sha256(data).hexdigest()
    manifest["sizes"]["model.pt"] = len(data)
    (entry / "manifest.json").write_text(json.dumps(manifest))
    assert store.get(key, with_weights=True) is None
    assert not _Exploit.marker.exists() and "not a plain tensor state dict" in caplog.text


def test_unknown_format_version_is_not_misread(tmp_path):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    rewrite_manifest(entry, format=CACHE_FORMAT + 1)
    assert store.get(key) is None


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = RunStore(blocker / "cache")
    with pytest.raises(CacheError, match="read-only|not writable"):
        store.put(run_key(RunConfig()), record(RunConfig()))


def test_a_failed_move_aside_is_an_error_not_a_claim(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    (entry / "metrics.json").write_text("{}")

    def refuse(src, dst):
        raise OSError(16, "Device or resource busy")

    assert store.get(key) is None and entry.is_dir()  # a read moves nothing
    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(CacheError, match="could not move cache entry .* Device or resource busy"):
        store.put(key, record(cfg, 2.0))  # storing a new run moves the damaged one aside first
    assert entry.is_dir()


@pytest.mark.parametrize("mask,dir_mode,file_mode", [(0o002, 0o775, 0o664), (0o022, 0o755, 0o644)])
def test_permissions_follow_the_umask(tmp_path, mask, dir_mode, file_mode, monkeypatch):
    import claimbench.cache.permissions as permissions

    old = os.umask(mask)
    monkeypatch.setattr(permissions, "_UMASK", None)
    try:
        store = RunStore(tmp_path / "cache")
        key = run_key(RunConfig())
        entry = store.put(key, record(RunConfig()))
    finally:
        os.umask(old)
    assert entry.stat().st_mode & 0o777 == dir_mode  # not mkdtemp's 0700
    for f in entry.iterdir():
        assert f.stat().st_mode & 0o777 == file_mode, f
    assert (store.root / "locks" / f"{key}.lock").stat().st_mode & 0o777 == file_mode


def test_metrics_from_other_measurement_code_are_recomputed_from_weights(tmp_path, caplog):
    calls = []

    def remeasure(rec, device, data_root):
        calls.append(rec.state_dict["w"].sum().item())
        return {"sparsity_gamma": 99.0, "diverged_at": None}

    store = RunStore(tmp_path, remeasure=remeasure)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg, 5.0))
    rewrite_manifest(entry, metrics_fingerprint="0" * 16)
    got = store.get(key)
    assert got.metrics_recomputed and got.metrics["sparsity_gamma"] == 99.0 and calls == [6.0]
    assert "measurement code changed" in caplog.text and "no retraining" in caplog.text
    again = store.get(key, with_weights=True)  # stored: not recomputed twice
    assert calls == [6.0] and not again.metrics_recomputed and again.metrics["sparsity_gamma"] == 99.0
    assert torch.equal(again.state_dict["w"], torch.arange(4.0)) and again.history == {"loss": [1.0, 0.5]}


def test_stale_metrics_without_weights_are_served_with_a_warning(tmp_path, caplog):
    store = RunStore(tmp_path, remeasure=lambda *a: pytest.fail("no weights to measure"))
    cfg = RunConfig()
    key = run_key(cfg)
    rec = record(cfg, 5.0)
    rec.state_dict = None
    entry = store.put(key, rec)
    rewrite_manifest(entry, metrics_fingerprint="0" * 16)
    got = store.get(key)
    assert got.metrics["sparsity_gamma"] == 5.0 and not got.metrics_recomputed
    assert "holds no weights" in caplog.text


def _slow_train_worker(root: str, marker_dir: str, barrier) -> None:
    store = RunStore(Path(root))
    cfg = RunConfig()

    def train(c, checkpoint):
        (Path(marker_dir) / f"trained-{mp.current_process().pid}").write_text("x")
        time.sleep(1.0)
        return record(c, 3.0)

    barrier.wait()
    ensure_run(cfg, store, train)


@pytest.mark.slow
def test_two_processes_train_a_shared_run_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    markers = tmp_path / "markers"
    markers.mkdir()
    procs = [ctx.Process(target=_slow_train_worker, args=(str(tmp_path / "cache"), str(markers), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(markers.iterdir())) == 1
    assert RunStore(tmp_path / "cache").get(run_key(RunConfig())).metrics["sparsity_gamma"] == 3.0


def test_a_reading_store_never_measures_and_marks_stale_metrics(tmp_path, caplog):
    """Reports and plans read through a store without ``remeasure``: metrics from older
    measurement code are served as stored, marked stale, and the page names the command that
    recomputes them. Nothing trains or measures behind the reader's back."""
    from claimbench.report.runs_page import runs_table
    from claimbench.spec.claims import load_claims

    spec = load_claims([REPO / "claims" / "beta_init.yaml"])[0]
    tier = spec.tier("smoke")
    store = RunStore(tmp_path)
    for cfg in tier.configs():
        entry = store.put(run_key(cfg), record(cfg, 5.0))
        rewrite_manifest(entry, metrics_fingerprint="0" * 16)
    got = store.get(run_key(tier.configs()[0]))
    assert got.metrics_stale and not got.metrics_recomputed and got.metrics["sparsity_gamma"] == 5.0
    assert "claimbench cache verify" in caplog.text
    assert "claimbench cache verify\\` recomputes them" in runs_table(tier, store)  # the backticks escaped in the cell
