"""One function decides the training device, from torch: a GPU that nvidia-smi sees and torch
cannot use is one clear error naming the fix, never a CPU run planned as a GPU one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from claimbench.machine.training import DeviceError, training_device
from tests.helpers import REPO

needs_cpu_torch = pytest.mark.skipif(torch.cuda.is_available(), reason="shows what a CPU-only torch does")


def _fake_nvidia_smi(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\n")
    smi.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@needs_cpu_torch
def test_no_gpu_anywhere_trains_on_the_cpu(monkeypatch):
    monkeypatch.setattr("claimbench.machine.detect.detected_device", lambda: "cpu")
    assert training_device("auto") == "cpu"
    assert training_device("cpu") == "cpu"


@needs_cpu_torch
def test_a_gpu_torch_cannot_use_is_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setattr("claimbench.machine.detect.detected_device", lambda: "cuda")
    with pytest.raises(DeviceError, match="CPU-only build.*TORCH_SPEC"):
        training_device("auto")
    with pytest.raises(DeviceError, match="--device cuda:1 was asked for"):
        training_device("cuda:1")
    assert training_device("cpu") == "cpu"  # asked for on purpose
    with pytest.raises(DeviceError, match="unknown device"):
        training_device("tpu")


@pytest.mark.slow
@needs_cpu_torch
@pytest.mark.parametrize("argv", [["verify", "--tier", "full"], ["train", "--tier", "smoke", "-k", "amsgrad"],
                                  ["run", "examples/digits-adam-l2.yaml"]])
def test_fake_nvidia_smi_with_cpu_torch_exits_2_with_one_message(tmp_path, argv):
    env = _fake_nvidia_smi(tmp_path / "bin")
    env["CLAIMBENCH_CACHE"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-m", "claimbench.cli", *argv, *(["--out", str(tmp_path / "r")]
                          if argv[0] == "verify" else [])], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "this torch cannot use it" in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("manifest.json"))
