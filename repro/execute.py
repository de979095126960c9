"""Train the missing runs of a Plan: fused into groups, and in parallel where the machine allows.

In:  Plan, RunStore, number of parallel jobs, device, runs per group.
Out: every planned run in the cache (or its failure recorded in the returned summary).

Runs that can share one stacked network (``loop.group_key``: same architecture, data, batch
size, schedule and precision; optimizers may differ) train together in groups of up to ``group_size``; each group goes
through ``cache.ensure_runs``, which holds the per-key file locks, so a run that another process
(a second ``repro verify``, a pytest-xdist worker) is already training is waited for and reused,
not trained twice. Jobs run in spawned processes; on CPU each gets cores // jobs threads.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from repro.cache import RunStore, ensure_runs
from repro.config import RunConfig
from repro.plan import Plan, PlannedRun, format_duration

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> message


def _train_group(configs: list[RunConfig], keys: list[str], cache_root: str, data_root: str | None,
                 device: str, threads: int) -> list[tuple[str, bool]]:
    import torch

    from repro.train.run import run_and_measure_group

    if threads:
        torch.set_num_threads(threads)
    store = RunStore(Path(cache_root))
    root = Path(data_root) if data_root else None
    results = ensure_runs(configs, store, lambda cs, ckpt: run_and_measure_group(cs, device, root, checkpoint=ckpt), keys)
    return [(k, trained) for k, (_, trained) in zip(keys, results)]


def form_groups(runs: list[PlannedRun], group_size: int) -> list[list[PlannedRun]]:
    """Runs that can train together (``loop.group_key``), in chunks of at most group_size."""
    from repro.train.loop import group_key

    by_key: dict[str, list[PlannedRun]] = {}
    for r in runs:
        by_key.setdefault(group_key(r.config), []).append(r)
    groups = []
    for members in by_key.values():
        for i in range(0, len(members), max(1, group_size)):
            groups.append(members[i : i + group_size])
    # Largest work first, so parallel jobs finish together.
    return sorted(groups, key=lambda g: -sum(r.flops for r in g))


def default_group_size(device: str, jobs: int) -> int:
    """Runs per fused group. On a GPU a batch-40 step is launch-bound: stack many. On CPU a
    single process gains from stacking (1.5x at 2 threads, 1.4x at 1 thread on the 2-core
    development machine, benchmarks/throughput.py), but with one job per core the cores are
    already busy: the smoke tier took 9.4 min with groups of 4 and 8.5 min unfused at -j 2
    (33 vs 30 s per run), so parallel CPU jobs train unfused."""
    if device.startswith("cuda"):
        return 16
    return 4 if jobs == 1 else 1


def train_plan(plan: Plan, store: RunStore, jobs: int = 1, device: str = "auto",
               data_root: Path | None = None, progress: bool = True, group_size: int | None = None,
               threads: int | None = None) -> TrainSummary:
    """``threads``: torch threads per job on CPU (default: cores // jobs). A caller that is itself
    one of several processes (a pytest-xdist worker) passes its share, or the cores are
    oversubscribed."""
    from tqdm import tqdm

    summary, todo = _start(plan, store)
    if not todo:
        return summary
    jobs = max(1, jobs)
    groups = form_groups(todo, group_size or default_group_size(plan.device, jobs))
    cores = os.cpu_count() or 1
    on_gpu = plan.device == "cuda"
    jobs = min(jobs, len(groups))
    threads = 0 if on_gpu else (threads or max(1, cores // jobs))
    bar = tqdm(total=len(todo), desc=f"training {len(todo)} runs in {len(groups)} groups "
               f"({format_duration(plan.estimate_seconds())} est. unfused)",
               unit="run", disable=not progress, file=sys.stderr)
    args = (str(store.root), str(data_root) if data_root else None, device, threads)

    def submit(group):
        return lambda: _train_group([r.config for r in group], [r.key for r in group], *args)

    if jobs == 1:
        for group in groups:
            bar.set_postfix_str(_label(group))
            _collect(summary, group, submit(group))
            bar.update(len(group))
        bar.close()
        return summary
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(_train_group, [r.config for r in g], [r.key for r in g], *args): g for g in groups}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    group = pending.pop(fut)
                    _collect(summary, group, fut.result)
                    bar.set_postfix_str(_label(group))
                    bar.update(len(group))
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()
    return summary


def _label(group: list[PlannedRun]) -> str:
    return group[0].config.summary() + (f" +{len(group) - 1}" if len(group) > 1 else "")


def _collect(summary: TrainSummary, group: list[PlannedRun], call) -> None:
    from repro.cache import CacheError
    from repro.data.base import DatasetError

    try:
        for key, trained in call():
            (summary.trained if trained else summary.reused).append(key)
    except (DatasetError, CacheError, RuntimeError, OSError) as e:
        # One group's failure (missing data, out of memory) must not lose the others.
        _record_failure(summary, group, e)


def _record_failure(summary: TrainSummary, group: list[PlannedRun], error: Exception) -> None:
    for run in group:
        summary.failed[run.key] = f"{run.config.summary()}: {error}"
    log.error("group of %d runs (%s) failed: %s", len(group), _label(group), error)


def _start(plan: Plan, store: RunStore) -> tuple[TrainSummary, list[PlannedRun]]:
    """The summary with the already cached runs counted, and the runs still to train."""
    summary = TrainSummary()
    todo = []
    for r in plan.runs:
        if store.contains(r.key):
            summary.reused.append(r.key)
        else:
            todo.append(r)
    return summary, todo


def _ray_train_group(configs: list[RunConfig], device: str, data_root: str | None):
    """Runs on a Ray worker: train and measure; the records travel back to the driver."""
    from repro.train.run import run_and_measure_group

    return run_and_measure_group(configs, device, Path(data_root) if data_root else None)


def train_plan_ray(plan: Plan, store: RunStore, address: str | None = None, device: str = "auto",
                   data_root: Path | None = None, group_size: int | None = None,
                   progress: bool = True, max_retries: int = 3) -> TrainSummary:
    """Fan the plan's groups out to a Ray cluster (``address``; None starts a local instance).

    Each group is one task asking for a GPU when the plan is for CUDA (else one CPU). Workers
    need the package and, for user-provided datasets, $REPRO_DATA on their own disks; they need no
    shared filesystem: results come back to this driver, which writes the cache. A task whose
    worker dies is retried up to ``max_retries`` times by Ray; a task that fails by itself (an
    exception: missing data, divergence is not one) is not retried and is reported as failed.
    """
    import ray
    from tqdm import tqdm

    summary, todo = _start(plan, store)
    if not todo:
        return summary
    groups = form_groups(todo, group_size or default_group_size(plan.device, 1))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if address is None else None)
    resources = {"num_gpus": 1} if plan.device == "cuda" else {"num_cpus": 1}
    task = ray.remote(max_retries=max_retries, retry_exceptions=False, **resources)(_ray_train_group)
    worker_device = device if device != "auto" else plan.device
    pending = {task.remote([r.config for r in g], worker_device, str(data_root) if data_root else None): g for g in groups}
    bar = tqdm(total=len(todo), desc=f"ray: {len(todo)} runs in {len(groups)} tasks", unit="run",
               disable=not progress, file=sys.stderr)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(done[0])
            try:
                records = ray.get(done[0])
            except ray.exceptions.RayError as e:
                _record_failure(summary, group, e)
            else:
                for run, record in zip(group, records):
                    store.put(run.key, record)
                    summary.trained.append(run.key)
            bar.update(len(group))
    finally:
        bar.close()
    return summary
