"""The Ray executor on a local Ray instance: same records as the local executor; a task that
fails by itself is reported, not retried forever, and does not stop the others."""

from pathlib import Path

import pytest
import ray  # a test dependency (pyproject [test]); CI must exercise this executor

from repro.cache import RunStore, run_key
from repro.config import run_config_from_dict
from repro.execute import train_plan, train_plan_ray
from repro.plan import Plan, PlannedRun, run_cost


def tiny(name="adam", seed=0, dataset="digits", lam=1e-2):
    return run_config_from_dict({
        "model": {"width": 0.0625}, "data": {"dataset": dataset},
        "optim": {"name": name, "regularizer": "l2", "lam": lam},
        "train": {"unit": "steps", "phases": [30, 10], "batch_size": 20, "snapshots": 2, "seed": seed},
    })


def make_plan(configs) -> Plan:
    runs = [PlannedRun(run_key(c), c, ["test"], False, *run_cost(c)) for c in configs]
    return Plan("smoke", runs, "cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_ray_executor_matches_local(tmp_path, local_ray):
    configs = [tiny(seed=0), tiny(seed=1, lam=1e-3), tiny(name="sgd")]
    local, remote = RunStore(tmp_path / "local"), RunStore(tmp_path / "ray")
    # Same grouping and one thread per worker on both sides, so the arithmetic is the same.
    s_local = train_plan(make_plan(configs), local, jobs=2, progress=False, group_size=2)
    s_ray = train_plan_ray(make_plan(configs), remote, progress=False, group_size=2)
    assert not s_local.failed and not s_ray.failed
    assert sorted(s_ray.trained) == sorted(run_key(c) for c in configs)
    for c in configs:
        a, b = local.get(run_key(c)), remote.get(run_key(c))
        assert b is not None
        for key in ("test_error", "sparsity_gamma", "sparsity_act", "train_loss", "test_loss"):
            assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-6), key
    # A second call finds everything cached and submits nothing.
    again = train_plan_ray(make_plan(configs), remote, progress=False)
    assert not again.trained and len(again.reused) == 3


def test_failing_task_is_reported_and_others_finish(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "no-data"))
    good, bad = tiny(seed=3), tiny(dataset="tinyimagenet")
    store = RunStore(tmp_path / "ray")
    summary = train_plan_ray(make_plan([good, bad]), store, progress=False, data_root=Path(tmp_path / "no-data"))
    assert list(summary.failed) == [run_key(bad)]
    assert "tiny-imagenet" in summary.failed[run_key(bad)].lower() or "tinyimagenet" in summary.failed[run_key(bad)].lower()
    assert store.get(run_key(good)) is not None and store.get(run_key(bad)) is None
