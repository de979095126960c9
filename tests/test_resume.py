"""A run killed with SIGKILL resumes from its checkpoint (the step it resumed at, the steps trained
after it) and ends bit-identical (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from claimbench.cache import RunStore

CONFIG = """\
model: {width: 0.0625}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {unit: steps, phases: [500, 100], batch_size: 20, snapshots: 3}
"""


def claimbench_run(cfg: Path, cache: Path, every_s: str, **popen):
    env = {**os.environ, "CLAIMBENCH_CHECKPOINT_EVERY_S": every_s, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "claimbench.cli", "run", str(cfg), "--cache-dir", str(cache), "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finished(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG)
    reference = finished(claimbench_run(cfg, tmp_path / "ref", "1e9"))

    cache = tmp_path / "killed"
    proc = claimbench_run(cfg, cache, "0")
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline and proc.poll() is None:
        found = list((cache / "partial").glob("*.pt")) if (cache / "partial").is_dir() else []
        if found and torch.load(found[0], map_location="cpu", weights_only=True)["step"] >= 150:
            partial = found[0]
            break
        time.sleep(0.05)
    assert partial is not None, "no checkpoint appeared before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not RunStore(cache).keys()  # nothing half-written in the cache
    step_at_kill = torch.load(partial, map_location="cpu", weights_only=True)["step"]
    assert 150 <= step_at_kill < 600

    resumed = finished(claimbench_run(cfg, cache, "0"))
    assert resumed["key"] == reference["key"] and resumed["cached"] is False
    assert not partial.exists()  # removed once the record is stored
    ref_rec = RunStore(tmp_path / "ref").get(reference["key"], with_weights=True)
    got_rec = RunStore(cache).get(resumed["key"], with_weights=True)
    for name, value in ref_rec.state_dict.items():
        assert torch.equal(value, got_rec.state_dict[name]), name
    assert got_rec.history == ref_rec.history
    assert "test_error" in ref_rec.metrics and got_rec.metrics == ref_rec.metrics
    assert got_rec.provenance["precision"] == "fp32"
    # It resumed (a silent restart from step 0 ends the same on a deterministic CPU): the second
    # process started at the checkpoint's step and trained only the steps after it.
    phases = got_rec.provenance["cuda_graph_phases"]
    assert any(p["first_step"] == step_at_kill for p in phases), phases
    assert sum(p["steps"] for p in phases if p["first_step"] >= step_at_kill) == 600 - step_at_kill, phases
    assert [p["first_step"] for p in ref_rec.provenance["cuda_graph_phases"]] == [0, 500]
