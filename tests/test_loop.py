"""The training loop on tiny configs: determinism, schedule, histories, divergence."""

import math
from dataclasses import replace

import pytest
import torch

from claimbench.runconfig import run_config_from_dict
from claimbench.train.loop import train_models
from claimbench.train.state import BatchStream
from tests.helpers import tiny_data



def train_model(config, data, device):
    """One run: a group of one."""
    return train_models([config], data, device)[0]


def tiny_config(**optim):
    return run_config_from_dict({
        "model": {"width": 0.0625, "pool_after": [1, 3]},
        "optim": {"name": "adam", "lam": 1e-3, **optim},
        "train": {"unit": "steps", "phases": [6, 4], "batch_size": 8, "snapshots": 2},
    })


def test_cpu_runs_are_bit_identical():
    a = train_model(tiny_config(), tiny_data(), torch.device("cpu"))
    b = train_model(tiny_config(), tiny_data(), torch.device("cpu"))
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.history["loss"] == b.history["loss"]


def test_seed_changes_the_run():
    cfg = tiny_config()
    other = run_config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": 1}})
    a = train_model(cfg, tiny_data(), torch.device("cpu"))
    b = train_model(other, tiny_data(), torch.device("cpu"))
    assert not torch.equal(a.model.blocks[0].conv.weight, b.model.blocks[0].conv.weight)


def test_histories_record_schedule_and_snapshots():
    out = train_model(tiny_config(), tiny_data(), torch.device("cpu"))
    assert out.steps == 10 and out.diverged_at is None
    assert out.history["lr_steps"] == [0, 6]
    assert out.history["lr"] == [1e-3, 1e-3 * 0.1]
    assert out.history["snapshot_steps"][0] == 0 and out.history["snapshot_steps"][-1] == 10
    first = out.history["snapshots"][0]
    assert first["gamma"][0] == [1.0] * 4  # gamma initialised at 1 (width 0.0625 -> 4 channels in C1)
    assert len(first["beta"]) == 7
    assert all(math.isfinite(v) for v in out.history["loss"])


def test_divergence_is_recorded_with_its_step():
    out = train_model(tiny_config(lr=1e30), tiny_data(), torch.device("cpu"))
    assert out.diverged_at is not None and 1 <= out.diverged_at <= 10


def test_batch_stream_covers_each_epoch_without_repeats():
    stream = BatchStream(n=10, batch_size=4, flip=True, seeds=[0, 1], device=torch.device("cpu"))
    first_epoch = torch.cat([stream.next()[0] for _ in range(2)], dim=1)  # (2 runs, 8)
    for run in first_epoch:
        assert len(set(run.tolist())) == 8  # tail of 2 dropped, no index twice
    assert not torch.equal(first_epoch[0], first_epoch[1])  # each run its own order
    index, flip = stream.next()
    assert index.shape == (2, 4) and flip is not None and flip.dtype == torch.bool and flip.shape == (2, 4)


def test_batch_stream_draws_each_run_as_if_alone():
    # A run's order and flips depend only on its own seed, not on its partners.
    alone = BatchStream(n=10, batch_size=4, flip=True, seeds=[1], device=torch.device("cpu"))
    pair = BatchStream(n=10, batch_size=4, flip=True, seeds=[0, 1], device=torch.device("cpu"))
    for _ in range(5):  # crosses two epoch boundaries
        (ia, fa), (ip, fp) = alone.next(), pair.next()
        assert torch.equal(ia[0], ip[1]) and torch.equal(fa[0], fp[1])


def test_precision_is_set_explicitly_and_labelled():
    from claimbench.train.device import set_precision

    tf32 = run_config_from_dict({**tiny_config().to_dict(), "train": {**tiny_config().to_dict()["train"], "precision": "tf32"}})
    assert "tf32" in tf32.summary() and "tf32" not in tiny_config().summary()
    assert set_precision("tf32", torch.device("cpu"))["precision"] == "tf32"
    backends = torch.backends
    if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):
        assert backends.cudnn.conv.fp32_precision == "tf32" and backends.cuda.matmul.fp32_precision == "tf32"
    info = set_precision("fp32", torch.device("cpu"))
    assert info == {"precision": "fp32", "cudnn_benchmark": False, "flush_denormals": False}
    if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):
        assert backends.cudnn.conv.fp32_precision == "ieee" and backends.cuda.matmul.fp32_precision == "ieee"
    else:
        assert not backends.cudnn.allow_tf32 and not backends.cuda.matmul.allow_tf32


def _denormal_survives() -> bool:
    """Whether the CPU's float32 arithmetic keeps a denormal result now."""
    return bool((torch.tensor([1e-37], dtype=torch.float32) / 100).item() != 0)


def test_flushing_denormals_is_a_keyed_labelled_setting_each_group_sets_both_ways():
    from claimbench.cache.keys import run_key

    plain = tiny_config()
    flush = run_config_from_dict({**plain.to_dict(), "train": {**plain.to_dict()["train"], "flush_denormals": True}})
    # Off: not in the canonical JSON, so no existing key moves; on: a different run.
    assert "flush_denormals" not in plain.canonical_json() and run_key(flush) != run_key(plain)
    assert "ftz" in flush.summary() and "ftz" not in plain.summary()
    data = tiny_data()
    out = train_model(flush, data, torch.device("cpu"))
    assert out.execution.fp32_flags["flush_denormals"] is True and not _denormal_survives()
    # The next group in the same process gets its own setting, not the last one's.
    out = train_model(plain, data, torch.device("cpu"))
    assert out.execution.fp32_flags["flush_denormals"] is False and _denormal_survives()


def test_cuda_graphs_are_on_by_default_on_cuda_only(monkeypatch):
    from claimbench.train.graphs import CUDA_GRAPHS_ENV, use_cuda_graphs

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    adam, adagrad = tiny_config(), tiny_config(name="adagrad")
    monkeypatch.delenv(CUDA_GRAPHS_ENV, raising=False)
    assert use_cuda_graphs([adam], cuda, None) and not use_cuda_graphs([adam], cpu, None)
    assert use_cuda_graphs([adam, adagrad], cuda, None)  # Adagrad captures as claimbench.train.optim.CapturableAdagrad
    assert not use_cuda_graphs([adam], cuda, False)
    monkeypatch.setenv(CUDA_GRAPHS_ENV, "0")
    assert not use_cuda_graphs([adam], cuda, None)


def test_a_group_of_trainer_runs_is_refused():
    from claimbench.train import train_runs

    plain = run_config_from_dict({"model": {"width": 0.0625}, "data": {"dataset": "digits"},
                                  "train": {"unit": "steps", "phases": [2]}})
    config = replace(plain, train=replace(plain.train, trainer="anything"))
    with pytest.raises(ValueError, match="a trainer's runs train one at a time, not in a group of 2"):
        train_runs([config, config], data=None, device=torch.device("cpu"))
