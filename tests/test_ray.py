"""The Ray executor on a local Ray instance: same records as the local executor; a task that
fails by itself is reported, not retried forever, and does not stop the others."""

from pathlib import Path

import pytest
import ray  # a test dependency (pyproject [test]); CI must exercise this executor

from claimbench.cache import RunStore, run_key
from claimbench.runconfig import run_config_from_dict
from claimbench.execute import train_plan, train_plan_ray
from claimbench.plan import Plan
from claimbench.plan.estimate import run_cost
from claimbench.plan.groups import PlannedRun

# Every test here starts (or shares) a local Ray instance, whose workers each import torch and
# train: end to end, whatever each test asserts.
pytestmark = pytest.mark.slow


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
    monkeypatch.setenv("CLAIMBENCH_DATA", str(tmp_path / "no-data"))
    good, bad = tiny(seed=3), tiny(dataset="tinyimagenet")
    store = RunStore(tmp_path / "ray")
    summary = train_plan_ray(make_plan([good, bad]), store, progress=False, data_root=Path(tmp_path / "no-data"))
    assert list(summary.failed) == [run_key(bad)]
    assert "tiny-imagenet" in summary.failed[run_key(bad)].lower() or "tinyimagenet" in summary.failed[run_key(bad)].lower()
    assert store.get(run_key(good)) is not None and store.get(run_key(bad)) is None


def test_a_run_shared_by_local_and_ray_executors_is_trained_once(tmp_path, local_ray):
    """Both executors keep the ensure_runs contract: the per-key lock makes the second one wait
    and reuse the run the first one trained, whichever starts first."""
    from concurrent.futures import ThreadPoolExecutor

    from claimbench.cache import checkpoint_path

    from dataclasses import replace

    def short(seed):
        c = tiny(seed=seed)
        return replace(c, train=replace(c.train, phases=(6, 2)))

    shared, only_ray, only_local = short(5), short(6), short(7)
    store = RunStore(tmp_path / "cache")
    with ThreadPoolExecutor(2) as pool:
        ray_done = pool.submit(train_plan_ray, make_plan([shared, only_ray]), store, progress=False, group_size=1)
        local_done = pool.submit(train_plan, make_plan([shared, only_local]), store, progress=False, group_size=1)
        s_ray, s_local = ray_done.result(), local_done.result()
    key = run_key(shared)
    assert (s_ray.trained + s_local.trained).count(key) == 1
    assert key in s_ray.reused + s_local.reused
    assert run_key(only_ray) in s_ray.trained and run_key(only_local) in s_local.trained
    assert not s_ray.failed and not s_local.failed
    # The group checkpoints went where the local executor puts them, and were removed when stored.
    assert not checkpoint_path(store, [key]).exists() and not list((store.root / "partial").glob("*.pt"))


def test_a_training_bug_fails_loudly_on_both_executors(tmp_path, local_ray):
    from dataclasses import replace

    broken = tiny(seed=8)
    broken = replace(broken, optim=replace(broken.optim, name="no-such-optimizer"))
    store = RunStore(tmp_path / "cache")
    with pytest.raises(ray.exceptions.RayTaskError):
        train_plan_ray(make_plan([broken]), store, progress=False)
    with pytest.raises(Exception) as e:
        train_plan(make_plan([broken]), store, progress=False)
    assert not isinstance(e.value, ray.exceptions.RayError)
    assert store.keys() == []


def test_only_environment_failures_are_recorded():
    import torch

    from claimbench.data.base import DatasetError
    from claimbench.run_failures import environment_failure

    assert environment_failure(DatasetError("no CIFAR here"))
    assert environment_failure(torch.OutOfMemoryError("CUDA out of memory"))
    assert environment_failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert environment_failure(ray.exceptions.WorkerCrashedError())
    assert not environment_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not environment_failure(KeyError("adam"))
