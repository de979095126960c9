"""The group size per kind: chosen from measured memory and a sweep of K (a GPU's numbers faked on
the CPU), kept under the record's mark, used by training on a GPU; and a group that runs out of
device memory while training is split, its runs still trained."""

from __future__ import annotations

import json
import logging

import pytest

import claimbench.gpu_check as gc
import claimbench.gpu_check.record as record_module
from claimbench.cache import RunStore, run_key
from claimbench.execute import train_plan
from claimbench.gpu_check.group_size import GroupSize, Measured, choose_group_size, group_size_of
from claimbench.plan import Plan
from claimbench.plan.estimate import run_cost, run_memory_bytes
from claimbench.plan.groups import PlannedRun
from claimbench.runconfig import run_config_from_dict

GiB = 2**30


def config(seed: int = 0, dataset: str = "cifar10", batch: int = 40, optimizer: str = "adam", width: float = 1.0):
    return run_config_from_dict({"model": {"width": width}, "data": {"dataset": dataset},
                                 "optim": {"name": optimizer, "lam": 1e-4},
                                 "train": {"unit": "steps", "phases": [4, 6], "batch_size": batch, "seed": seed,
                                           "snapshots": 1}})


class OutOfMemoryError(RuntimeError):
    """How torch.cuda says it (``run_failures.out_of_memory`` matches it by name)."""


class FakeGPU:
    """A GPU's numbers for a sweep: run-steps per second and peak memory per K (1 GiB shared, 2 GiB
    a run); out of memory from ``oom_from`` runs on. Remembers which K trained."""

    def __init__(self, rates: dict[int, float], oom_from: int | None = None):
        self.rates, self.oom_from, self.tried = rates, oom_from, []

    def __call__(self, k: int) -> Measured:
        self.tried.append(k)
        if self.oom_from is not None and k >= self.oom_from:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return Measured(k, (1 + 2 * k) * GiB, k / self.rates[k])


RATES = {1: 100.0, 4: 380.0, 8: 700.0, 16: 1830.0, 32: 1870.0}


def test_the_sweep_picks_the_best_rate_preferring_a_smaller_k_within_three_percent_and_says_why():
    gpu = FakeGPU(RATES)
    said: list[str] = []
    size = choose_group_size(gpu, 100 * GiB, say=said.append)
    assert gpu.tried == [1, 4, 8, 16, 32] and said == []
    assert size.k == 16
    assert size.why.startswith("K=16: 1,830 run-steps/s; K=32 within 3% (1,870), needs 2.0x the memory")
    assert "sweep K=1 100, K=4 380, K=8 700, K=16 1,830, K=32 1,870" in size.why
    # Clearly faster is chosen even though it needs more memory.
    assert choose_group_size(FakeGPU({**RATES, 32: 2000.0}), 100 * GiB, say=said.append).k == 32
    # Not past the runs the tier has of the kind: 12 runs sweep 1, 4, 8 and 12.
    few = FakeGPU({**RATES, 12: 1000.0})
    assert choose_group_size(few, 100 * GiB, most=12).k == 12 and few.tried == [1, 4, 8, 12]


def test_the_memory_cap_excludes_the_ks_that_do_not_fit():
    gpu = FakeGPU(RATES)
    size = choose_group_size(gpu, 40 * GiB)  # 85%: 34 GiB; K=32 would take 65
    assert gpu.tried == [1, 4, 8, 16] and size.k == 16 and size.cap == 16
    assert "K=32 not tried: 65.0 GiB predicted > 85% of 40.0 GiB" in size.why
    assert "memory cap 16 runs (85% of 40.0 GiB)" in size.why
    # The real dataset on the device counts too: 4 GiB of it leaves K=16 (37 GiB) out.
    gpu = FakeGPU(RATES)
    size = choose_group_size(gpu, 40 * GiB, resident_bytes=4 * GiB)
    assert gpu.tried == [1, 4, 8] and size.k == 8 and size.cap == 14
    assert "K=16 not tried" in size.why and "4.0 GiB of it the dataset" in size.why


def test_out_of_memory_at_16_retries_at_8_in_one_line():
    gpu = FakeGPU(RATES, oom_from=16)
    said: list[str] = []
    size = choose_group_size(gpu, 1000 * GiB, say=said.append, label="cifar10 vgg16 adam")
    assert gpu.tried == [1, 4, 8, 16, 8]
    assert said == ["  out of GPU memory at K=16 (cifar10 vgg16 adam): retrying at K=8, half the group"]
    assert size.k == 8 and size.cap == 15 and "K=16 ran out of memory, K=8 did not" in size.why

    def broken(k: int) -> Measured:
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        choose_group_size(broken, 100 * GiB)


def test_on_a_cpu_there_is_no_sweep_and_the_record_says_which_k_and_why():
    (case,) = gc.kinds_of([config(i, width=0.0625) for i in range(2)])
    size = group_size_of(case, "cpu", quick=True, off=frozenset(), backend=None, say=print)
    assert size.k == 4 and size.why.startswith("CPU: no sweep") and size.measured == ()


def _result(kind, size: GroupSize, representative) -> gc.KindResult:
    """A check's finding for ``kind`` with ``size`` (the rest as a passing check writes it)."""
    features = tuple(gc.FeatureResult(f, "passed") for f in gc.FEATURES)
    return gc.KindResult(kind, 16, 1, 40, "", features, 0.1, "", "", None, None, 0.0, "", 1.0,
                         group_size=size, run_bytes=run_memory_bytes(representative))


def _write(cache, device: str, k: int, *configs) -> None:
    kinds = [gc.kind_of([c]) for c in configs]
    gc.write_record(cache, gc.MachineKey.here(device),
                    [_result(kind, GroupSize(k, f"K={k}: 900 run-steps/s", 20), c) for kind, c in zip(kinds, configs)])


def test_the_record_keeps_the_chosen_k_under_its_mark(tmp_path, caplog):
    _write(tmp_path, "cpu", 8, config())
    chosen = gc.ChosenGroupSizes.load(tmp_path, "cpu")
    k, why = chosen.for_config(config(seed=5, optimizer="sgd"))
    assert k == 8 and "K=8: 900 run-steps/s" in why and "cifar10 basicnet adam" in why
    assert chosen.for_config(config(dataset="cifar100")) is None
    # A run needing more memory than the one measured (batch 80: its activations twice) gets K
    # scaled down by the ratio; one needing less keeps the K measured.
    k80, why80 = chosen.for_config(config(batch=80))
    assert k80 == int(8 * run_memory_bytes(config()) / run_memory_bytes(config(batch=80))) and 4 <= k80 < 8
    assert "scaled by the modelled memory per run" in why80 and chosen.for_config(config(batch=20))[0] == 8
    # K edited in the file: the machine's findings are no longer this user's, so nothing is used.
    path = tmp_path / gc.RECORD_FILE
    record = json.loads(path.read_text())
    (entry,) = record.values()
    (kind,) = entry["kinds"].values()
    kind["group_size"]["k"] = 32
    path.write_text(json.dumps(record))
    assert gc.ChosenGroupSizes.load(tmp_path, "cpu").for_config(config()) is None
    assert "not written by this user's claimbench" in caplog.text
    # A group size that is no group size makes the record no record, even when marked.
    kind["group_size"]["k"] = 0
    entry[record_module.MARK] = record_module.record_mark(record_module._unmarked(entry))
    path.write_text(json.dumps(record))
    assert gc.read_record(tmp_path) == {} and "group_size.k: expected a whole number" in caplog.text


class Recorder:
    """An executor that trains nothing: it keeps the groups it was handed."""

    name = "recorder"

    def __init__(self):
        self.sizes: list[int] = []

    def group_size(self, device: str) -> int:
        return 16

    def thread_count(self, device: str, groups: int) -> int:
        return 0

    def run(self, jobs):
        for i, job in enumerate(jobs):
            self.sizes.append(len(job.keys))
            yield i, (lambda job=job: [(key, True) for key in job.keys])


def test_training_on_a_gpu_groups_a_kind_by_the_k_its_record_chose(tmp_path):
    configs = [config(i, optimizer=("adam", "sgd")[i % 2]) for i in range(20)]
    plan = Plan("full", [PlannedRun(run_key(c), c, [], False, *run_cost(c)) for c in configs], "cuda")

    def sizes(cache, device="cuda", **kw) -> list[int]:
        executor = Recorder()
        summary = train_plan(plan, RunStore(cache), device=device, progress=False, executor=executor, **kw)
        assert not summary.failed
        return sorted(executor.sizes, reverse=True)

    assert sizes(tmp_path / "none") == [16, 4]  # no check here: the default
    _write(tmp_path / "checked", "cuda", 8, configs[0])
    assert sizes(tmp_path / "checked") == [8, 8, 4]
    assert sizes(tmp_path / "checked", group_size=5) == [5, 5, 5, 5]  # --group-size wins
    _write(tmp_path / "elsewhere", "cpu", 8, configs[0])  # another machine's finding
    assert sizes(tmp_path / "elsewhere") == [16, 4]


def test_a_group_that_runs_out_of_device_memory_while_training_is_split_and_its_runs_train(
        tmp_path, monkeypatch, caplog):
    import claimbench.group as group

    configs = [run_config_from_dict({"model": {"width": 0.0625}, "data": {"dataset": "digits"},
                                     "train": {"unit": "steps", "phases": [2, 2], "batch_size": 8, "seed": i,
                                               "snapshots": 1}}) for i in range(4)]
    plan = Plan("smoke", [PlannedRun(run_key(c), c, [], False, *run_cost(c)) for c in configs], "cpu")
    real = group.run_and_measure_group
    tried: list[int] = []

    def fits_two(configs, *a, **kw):
        tried.append(len(configs))
        if len(configs) > 2:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(configs, *a, **kw)

    monkeypatch.setattr(group, "run_and_measure_group", fits_two)
    with caplog.at_level(logging.WARNING, logger="claimbench.group"):
        summary = train_plan(plan, RunStore(tmp_path), device="cpu", group_size=4, progress=False, threads=1)
    assert tried == [4, 2, 2] and not summary.failed
    assert sorted(summary.trained) == sorted(r.key for r in plan.runs)
    (line,) = [r.getMessage() for r in caplog.records if "out of GPU memory" in r.getMessage()]
    assert "retrying as groups of 2 and 2" in line
