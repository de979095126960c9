"""The behaviour suite catches what it exists for: each change of training's behaviour below,
made from outside the code, fails it (a guard is judged by the faults it catches)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.golden.cases import CASES, differences, run_case
from tests.golden.test_golden import golden_data  # noqa: F401  (the session's fabricated data)
from tests.golden.update import EXPECTED

ROOT = Path(__file__).resolve().parents[2]


def _caught(cases: list[str], data_root: Path, tmp_path: Path) -> list[str]:
    expected = json.loads(EXPECTED.read_text())["cases"]
    return [n for n in cases if differences(expected[n], run_case(n, data_root, tmp_path), CASES[n].rtol,
                                            CASES[n].atol)]


def test_a_changed_schedule_constant_is_caught(monkeypatch, golden_data, tmp_path):  # noqa: F811
    from claimbench.train import optim

    monkeypatch.setattr(optim.StepSchedule, "factor", lambda self, step: 0.2 ** self.phase(step))
    assert _caught(["sgd-l2", "adam-l2"], golden_data, tmp_path) == ["sgd-l2", "adam-l2"]


def test_weight_decay_applied_twice_is_caught(monkeypatch, golden_data, tmp_path):  # noqa: F811
    from claimbench.train import optim

    once = optim.Regularizer.after_step

    def twice(self, lr_factor):  # noqa: ANN001, ANN202
        once(self, lr_factor)
        once(self, lr_factor)

    monkeypatch.setattr(optim.Regularizer, "after_step", twice)
    assert _caught(["adam-wd", "adam-l2"], golden_data, tmp_path) == ["adam-wd"]


def test_a_flip_applied_to_the_wrong_images_is_caught(monkeypatch, golden_data, tmp_path):  # noqa: F811
    from claimbench.data.base import ImageData

    right = ImageData.train_batch

    def shifted(self, index, flip):  # noqa: ANN001, ANN202
        return right(self, index, None if flip is None else flip.roll(1, dims=-1))

    monkeypatch.setattr(ImageData, "train_batch", shifted)
    assert _caught(["adam-l2", "adam-l2-epochs-noflip"], golden_data, tmp_path) == ["adam-l2"]


def test_a_changed_optimizer_epsilon_is_caught(monkeypatch, golden_data, tmp_path):  # noqa: F811
    from claimbench.train import optim

    classes = dict(optim.OPTIMIZER_CLASSES)
    cls, kwargs = classes["adam"]
    classes["adam"] = (cls, {**kwargs, "eps": 1e-7})
    monkeypatch.setattr(optim, "OPTIMIZER_CLASSES", classes)
    assert _caught(["adam-l2", "sgd-l2"], golden_data, tmp_path) == ["adam-l2"]


def test_behaviour_changed_from_outside_the_code_fails_the_suite(tmp_path):
    """BatchNorm's eps altered by a sitecustomize on PYTHONPATH (no file of claimbench touched): the
    suite, run as make golden runs it, fails."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import torch.nn.functional as F
        _batch_norm = F.batch_norm
        def batch_norm(*args, **kwargs):
            kwargs["eps"] = 2e-5
            if len(args) > 7:
                args = args[:7]
            return _batch_norm(*args, **kwargs)
        F.batch_norm = batch_norm
    """))
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             str(ROOT / "tests" / "golden" / "test_golden.py"), "-k", "adam-l2 and not resumed"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training computes other numbers" in result.stdout
    assert torch.nn.functional.batch_norm.__module__ == "torch.nn.functional"  # this process untouched
