"""Group size against device memory: the estimate of what a run needs is an upper bound of what
autograd saves (traced on ``meta``), a group that would not fit is split before training with
one line said, and a group that runs out of device memory anyway is trained again in halves."""

from __future__ import annotations

import logging

import pytest

import claimbench.group as group
from claimbench.runconfig import run_config_from_dict
from claimbench.plan.estimate import memory_group_cap, run_memory_bytes

GiB = 2 ** 30


def config(arch: str, dataset: str, batch: int, seed: int = 0):
    return run_config_from_dict({"model": {"arch": arch}, "data": {"dataset": dataset},
                                 "train": {"batch_size": batch, "seed": seed}})


@pytest.mark.parametrize("arch, dataset, batch, runs, traced_gib", [
    # Saved-for-backward bytes traced with saved_tensors_hooks on meta, plus 4x the parameters.
    ("vgg16", "imagenet", 40, 1, 4.9 + 0.6),
    ("vgg19", "imagenet", 40, 1, 5.3 + 0.6),
    ("vgg16", "imagenet", 40, 16, 78 + 9.0),
    ("basicnet", "cifar10", 40, 16, 1.4),
])
def test_the_estimate_bounds_the_traced_memory_from_above_within_twice(arch, dataset, batch, runs, traced_gib):
    estimate = runs * run_memory_bytes(config(arch, dataset, batch)) / GiB
    assert traced_gib <= estimate <= 2 * traced_gib


def test_a_group_that_would_not_fit_is_split_before_training_and_said(tmp_path, monkeypatch, caplog):
    vgg = [config("vgg16", "imagenet", 40, i) for i in range(16)]
    cifar = [config("basicnet", "cifar10", 40, i) for i in range(16)]
    cap = memory_group_cap(vgg[0], 79 * GiB)
    assert 1 <= cap < 16
    parts, line = group.split_by_memory(vgg, 79 * GiB)
    assert [len(p) for p in parts] == [cap] * (16 // cap) + ([16 % cap] if 16 % cap else [])
    assert [c for p in parts for c in p] == vgg
    assert "16 runs of" in line and f"groups of at most {cap}" in line
    assert group.split_by_memory(cifar, 79 * GiB) == ([cifar], "")
    assert group.split_by_memory(vgg, None) == ([vgg], "")  # a CPU: no cap
    # In the process that trains: the parts train one after another, the line said once.
    trained: list[int] = []
    monkeypatch.setattr(group, "run_and_measure_group",
                        lambda configs, *a, **kw: trained.append(len(configs)) or [c.train.seed for c in configs])
    monkeypatch.setattr(group, "device_free_bytes", lambda device: 79 * GiB)
    with caplog.at_level(logging.WARNING, logger="claimbench.group"):
        records = group.train_group(vgg, tmp_path / "g.pt", "cuda", None, 0)
    assert records == list(range(16)) and trained == [len(p) for p in parts]
    assert [r.getMessage() for r in caplog.records] == [line]


class OutOfMemoryError(RuntimeError):
    """How torch.cuda says it (matched by name, as ``out_of_memory`` does)."""


def test_out_of_device_memory_retries_the_group_in_halves(tmp_path, monkeypatch, caplog):
    configs = [config("basicnet", "cifar10", 40, i) for i in range(4)]
    tried: list[int] = []

    def fake(configs, device, data_root, on_step=None, checkpoint=None, **kw):
        tried.append(len(configs))
        if len(configs) > 2:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [c.train.seed for c in configs]

    monkeypatch.setattr(group, "run_and_measure_group", fake)
    with caplog.at_level(logging.WARNING, logger="claimbench.group"):
        records = group.train_group(configs, tmp_path / "g.pt", "cpu", None, 0)
    assert records == [0, 1, 2, 3] and tried == [4, 2, 2]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("out of GPU memory with 4 runs in one group") and "groups of 2 and 2" in line

    def broken(configs, *a, **kw):
        raise ValueError("a bug, not memory")

    monkeypatch.setattr(group, "run_and_measure_group", broken)
    with pytest.raises(ValueError):
        group.train_group(configs, tmp_path / "g.pt", "cpu", None, 0)
