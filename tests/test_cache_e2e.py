"""The cache end to end on real (tiny) trained runs through `claimbench run`: served from the cache,
metrics recomputed from stored weights when the measurement code changed (equal to the
originals, no training), an export/import round trip served with identical metrics, a
truncated model.pt detected and retrained. (Swapped entries: tests/test_cache.py.)"""

import json
import os
from pathlib import Path

import pytest

from claimbench.cache import RunStore, run_key
from claimbench.cli import main
from claimbench.spec.runfile import load_run_config

CONFIG = """\
model: {arch: basicnet, width: 0.125}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {batch_size: 40, unit: steps, phases: [30, 10], snapshots: 2}
"""


def run(capsys, cache: Path, path: Path, *extra: str) -> dict:
    assert main(["run", str(path), "--json", "--cache-dir", str(cache), "--device", "cpu", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_served_recomputed_shipped_and_retrained(tmp_path, capsys, caplog):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    cache = tmp_path / "cache"
    first = run(capsys, cache, path)
    assert first["cached"] is False
    again = run(capsys, cache, path)
    assert again["cached"] is True and again["metrics"] == first["metrics"] and not again["metrics_recomputed"]

    # Measurement code changed (as recorded by the entry): metrics recomputed, not retrained.
    store = RunStore(cache)
    entry = store.entry_dir(first["key"])
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["metrics_fingerprint"] = "0" * 16
    (entry / "manifest.json").write_text(json.dumps(manifest))
    recomputed = run(capsys, cache, path)
    assert recomputed["cached"] is True and recomputed["metrics_recomputed"] is True
    assert recomputed["metrics"] == first["metrics"]
    assert "measurement code changed" in caplog.text

    # Export, import into an empty cache: served from there with identical metrics.
    archive = tmp_path / "runs.tar.gz"
    assert main(["cache", "export", str(archive), "--cache-dir", str(cache)]) == 0
    assert main(["cache", "import", str(archive), "--cache-dir", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    shipped = run(capsys, tmp_path / "other", path)
    assert shipped["cached"] is True and shipped["metrics"] == first["metrics"]

    # A truncated model.pt: `show` refuses it, `run` retrains (bit-identical on CPU).
    os.truncate(entry / "model.pt", 1000)
    assert main(["show", first["key"][:12], "--cache-dir", str(cache)]) == 1
    assert "damaged" in capsys.readouterr().err and "model.pt has 1000 bytes" in caplog.text
    retrained = run(capsys, cache, path)
    assert retrained["cached"] is False and retrained["metrics"] == first["metrics"]
    assert retrained["key"] == run_key(load_run_config(path, []))
