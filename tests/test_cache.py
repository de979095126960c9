"""The content-addressed run cache: key stability, atomic entries, damage detection, one
training per key across processes."""

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from repro.cache import CACHE_FORMAT, RunStore, code_fingerprint, ensure_run, run_key
from repro.config import RunConfig, run_config_from_dict
from repro.train.run import RunRecord

GOLDEN_KEY = "43728879a96754b6db037f8490895575cdfe938c58a777e0490728dd62d1e144"  # train.precision added


def record(config: RunConfig, value: float = 1.0) -> RunRecord:
    return RunRecord(config, {"sparsity_gamma": value, "diverged_at": None}, {"loss": [1.0, 0.5]},
                     {"device": "cpu"}, {"w": torch.arange(4.0)})


def test_golden_key_of_the_default_config():
    # Changing this means every cached result of every user is invalidated: do it on purpose.
    assert run_key(RunConfig(), fingerprint="0" * 16) == GOLDEN_KEY


def test_key_covers_config_and_code():
    base = RunConfig()
    other = run_config_from_dict({"optim": {"lam": 1e-3}})
    assert run_key(base, "a" * 16) != run_key(other, "a" * 16)
    assert run_key(base, "a" * 16) != run_key(base, "b" * 16)
    assert len(code_fingerprint()) == 16


def test_roundtrip_with_weights(tmp_path):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    store.put(key, record(cfg, 42.0))
    got = store.get(key, with_weights=True)
    assert got.config == cfg and got.metrics["sparsity_gamma"] == 42.0
    assert torch.equal(got.state_dict["w"], torch.arange(4.0))
    assert store.keys() == [key]


@pytest.mark.parametrize("damage", ["truncate_metrics", "flip_weights", "drop_manifest", "bad_json"])
def test_damaged_entry_is_moved_aside_and_retrained(tmp_path, damage, caplog):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    if damage == "truncate_metrics":
        p = entry / "metrics.json"
        p.write_bytes(p.read_bytes()[:5])
    elif damage == "flip_weights":
        p = entry / "model.pt"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    elif damage == "drop_manifest":
        (entry / "manifest.json").unlink()
    else:
        (entry / "manifest.json").write_text("{not json")
    got = store.get(key, with_weights=True)
    assert got is None
    if damage != "drop_manifest":
        assert "damaged" in caplog.text and key[:12] in caplog.text
        assert any((tmp_path / "corrupt").iterdir())
    calls = []
    rec, trained = ensure_run(cfg, store, lambda c, ckpt: calls.append(c) or record(c, 7.0), key)
    assert trained and calls == [cfg] and rec.metrics["sparsity_gamma"] == 7.0
    assert store.get(key).metrics["sparsity_gamma"] == 7.0


def test_unknown_format_version_is_not_misread(tmp_path):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    key = run_key(cfg)
    entry = store.put(key, record(cfg))
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["format"] = CACHE_FORMAT + 1
    (entry / "manifest.json").write_text(json.dumps(manifest))
    assert store.get(key) is None


def test_unwritable_root_is_a_clear_error(tmp_path):
    from repro.cache import CacheError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = RunStore(blocker / "cache")
    with pytest.raises(CacheError, match="not writable"):
        store.put(run_key(RunConfig()), record(RunConfig()))


def _slow_train_worker(root: str, marker_dir: str, barrier) -> None:
    store = RunStore(Path(root))
    cfg = RunConfig()

    def train(c, checkpoint):
        (Path(marker_dir) / f"trained-{mp.current_process().pid}").write_text("x")
        time.sleep(1.0)
        return record(c, 3.0)

    barrier.wait()
    ensure_run(cfg, store, train)


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
