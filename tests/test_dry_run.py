"""Dry runs: the paper-scale path end to end for a few steps, never mixed with real runs.

The paper-scale test trains one run of every kind of full-tier group (architecture x dataset x
optimizer) a few steps, on fabricated datasets in the real on-disk formats, through the
executor, the cache contract, the real loaders, models, optimizers and measurements.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from claimbench.cache import RunStore, run_key
from claimbench.cli import main
from claimbench.config import RunConfig, phase_steps
from claimbench.data.catalog import data_shape
from claimbench.dry_run import dry_run, dry_run_plan, dry_run_store, measured_step_times
from claimbench.execute import LocalExecutor, train_plan
from claimbench.group import dry_run_config
from claimbench.machine.detect import machine_name
from claimbench.plan import Plan, plan_runs
from claimbench.plan.estimate import run_cost
from claimbench.plan.groups import PlannedRun, group_id
from claimbench.plan.step_times import StepTime, StepTimes
from claimbench.spec.claims import claim_files, load_claims
from tests.helpers import REPO, make_cifar_archive


def _jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def fabricate_datasets(root: Path) -> None:
    """Every full-tier dataset in its real on-disk format, with few images per split."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("cifar10", "cifar100"):
        make_cifar_archive(root, name, per_file=8)  # 40 train, 8 test images
    tiny = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(20)]
    (tiny / "val" / "images").mkdir(parents=True)
    (tiny / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, wnid in enumerate(wnids):
        for j in range(2):
            _jpeg(tiny / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", (64, 64), 100 * i + j)
        if i < 8:
            _jpeg(tiny / "val" / "images" / f"val_{i}.JPEG", (64, 64), 5000 + i)
            lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (tiny / "val" / "val_annotations.txt").write_text("".join(lines))
    for i in range(4):
        wnid = f"n{i:08d}"
        for j, size in enumerate([(300, 260), (260, 320)]):
            _jpeg(root / "imagenet" / "train" / wnid / f"{wnid}_{j}.JPEG", size, 7000 + 10 * i + j)
        _jpeg(root / "imagenet" / "val" / wnid / f"{wnid}_v.JPEG", (280, 280), 9000 + i)


def one_run_per_kind(store: RunStore) -> list[RunConfig]:
    """A run of every architecture on every dataset of the full tier, and of every optimizer (on
    the cheapest network that has it)."""
    specs = load_claims(claim_files(REPO / "claims"))
    plan = plan_runs(specs, "full", store, "cpu")
    kinds: dict[tuple, RunConfig] = {}
    for r in sorted(plan.runs, key=lambda r: run_cost(r.config)[1] / max(1, run_cost(r.config)[0])):
        c = r.config
        kinds.setdefault((c.model.arch, c.data.dataset), c)
        kinds.setdefault(("optimizer", c.optim.name), c)
    return list({c: None for c in kinds.values()})


def cpu_sized(config: RunConfig) -> RunConfig:
    """The test's only change to a paper config: smaller batches (ImageNet's 256 images of
    224x224 cost ~2 min per step on a 2-core CPU; VGG-19's 512 ~5 s). On 2 idle cores the whole
    test then takes about half a minute."""
    cap = 2 if config.data.dataset == "imagenet" else 16
    return replace(config, train=replace(config.train, batch_size=min(config.train.batch_size, cap)))


@pytest.mark.slow
def test_every_kind_of_full_tier_group_dry_runs(tmp_path):
    data_root = tmp_path / "data"
    fabricate_datasets(data_root)
    real = RunStore(tmp_path / "cache")
    configs = [cpu_sized(c) for c in one_run_per_kind(real)]
    kinds = {(c.model.arch, c.data.dataset) for c in configs}
    assert {d for _, d in kinds} == {"cifar10", "cifar100", "tinyimagenet", "imagenet"}
    assert {a for a, _ in kinds} >= {"basicnet", "vgg16", "vgg19"}
    assert len({c.optim.name for c in configs}) >= 7

    plan = Plan("full", [PlannedRun(run_key(c), c, ["test"], False, *run_cost(c)) for c in configs], "cpu")
    steps = 2
    dstore = dry_run_store(real, steps)
    summary = train_plan(plan, dstore, data_root=data_root, progress=False, group_size=1, dry_run_steps=steps)
    assert summary.failed == {}
    assert sorted(summary.trained) == sorted(r.key for r in plan.runs)
    for run in plan.runs:
        record = dstore.get(run.key)
        assert record is not None, run.config.summary()
        phases = len(phase_steps(run.config.train, data_shape(run.config.data)[0]))
        assert record.metrics["steps"] == max(steps, phases) and record.metrics["diverged_at"] is None
        assert 0 <= record.metrics["test_error"] <= 100 and "sparsity_gamma" in record.metrics
        # Stored with the real config (its key's), and what was trained instead in provenance.
        assert record.config == run.config
        assert record.provenance["dry_run_config"]["train"]["unit"] == "steps"
        # Raw stamps after each step; the steady-state time is derived where it is used.
        ends = record.provenance["dry_run"]["step_ends"]
        assert [n for n, _ in ends] == list(range(1, record.metrics["steps"] + 1))
        assert all(b > a for (_, a), (_, b) in zip(ends, ends[1:]))
    # Never in the real cache; every kind of group has a measured step time.
    assert real.keys() == [] and not any(real.contains(r.key) for r in plan.runs)
    times = measured_step_times(plan, dstore)
    assert set(times) == {group_id(r.config) for r in plan.runs}


def test_dry_run_config_keeps_every_phase():
    cifar = replace(RunConfig(), data=replace(RunConfig().data, dataset="cifar10"))
    assert dry_run_config(cifar, 5).train.phases == (4, 1)
    assert dry_run_config(cifar, 1).train.phases == (1, 1)  # at least a step per phase
    three = replace(cifar, train=replace(cifar.train, phases=(250, 75, 75)))
    short = dry_run_config(three, 10)
    assert short.train.unit == "steps" and sum(short.train.phases) == 10 and len(short.train.phases) == 3
    assert short.model == cifar.model and short.optim == cifar.optim and short.data == cifar.data


def test_plan_uses_a_measured_step_time_and_says_so(tmp_path):
    store = RunStore(tmp_path / "cache")
    configs = [replace(RunConfig(), train=replace(RunConfig().train, seed=s, unit="steps", phases=(1000,)))
               for s in range(3)]
    plan = Plan("full", [PlannedRun(run_key(c), c, [], False, *run_cost(c)) for c in configs], "cpu")
    assert plan.estimate_source() == "modelled"
    machine = machine_name("cpu")
    StepTimes(store.root).save(machine, {group_id(configs[0]): StepTime(0.9, 3, 4, "now")})
    plan.step_times = StepTimes(store.root).load(machine)
    assert plan.estimate_source() == "measured"
    [estimate] = plan.group_estimates()
    assert (estimate.size, estimate.steps) == (3, 1000) and estimate.seconds == pytest.approx(900.0)
    assert StepTimes(store.root).load("cpu some other machine") == {}


@pytest.mark.slow
def test_verify_dry_run_cli_leaves_the_real_cache_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    argv = ["--cache-dir", str(cache), "--claims-dir", str(REPO / "claims"), "-k", "activation-agrees-with-gamma"]
    status = main(["verify", "--tier", "smoke", "--dry-run", "--steps", "2", *argv])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "estimate for the real tier on" in out and "hours" in out
    index = (tmp_path / "reports" / "smoke-dry-run" / "index.md").read_text()
    assert index.startswith("> **DRY RUN")
    main(["plan", "--tier", "smoke", "--json", *argv])
    planned = json.loads(capsys.readouterr().out)
    assert planned["cached_runs"] == 0 and planned["estimate"] == "measured"
    assert RunStore(cache).keys() == []


class Capture(LocalExecutor):
    """An executor that keeps the jobs it is given and trains none of them."""

    def __init__(self):
        super().__init__(1)
        self.given: list = []

    def run(self, jobs):
        self.given += jobs
        return iter(())


def test_a_dry_run_honours_the_gpu_check_record_of_the_real_cache(tmp_path, monkeypatch, caplog):
    """The dry run trains into a sub-folder of the cache, but what the check switched off on this
    machine is in the real cache's record: the dry run gives it up as training would."""
    import claimbench.report
    import claimbench.gpu_check as gc

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pytest, "main", lambda *a, **k: 0)
    monkeypatch.setattr(claimbench.report, "render_reports", lambda *a, **k: [])
    specs = [s for s in load_claims(claim_files(REPO / "claims")) if s.id == "adam-l2-vs-wd"]
    store = RunStore(tmp_path / "cache")
    plan = dry_run_plan(specs, "smoke", store, "cpu")
    results = [SimpleNamespace(kind=c.kind, switched_off={"kernels": "fused adam drifted"}, flaky="",
                               group_size=None)
               for c in gc.kinds_of([r.config for r in plan.runs])]
    gc.write_record(store.root, gc.MachineKey.here("cpu"), results)
    executor = Capture()
    dry_run(specs, [], "smoke", store, 2, executor, device="cpu", progress=False)
    assert executor.given and all("kernels" in j.switched_off for j in executor.given)
    assert "gpu-check switched off kernels" in caplog.text and str(store.root / gc.RECORD_FILE) in caplog.text
