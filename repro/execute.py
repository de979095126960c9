"""Train the missing runs of a Plan, in parallel where the machine allows.

In:  Plan, RunStore, number of parallel jobs, device.
Out: every planned run in the cache (or its failure recorded in the returned summary).

Each job trains through ``cache.ensure_run``, which holds the per-key file lock, so a run that
another process (a second ``repro verify``, a pytest-xdist worker) is already training is waited
for and reused, not trained twice. Jobs run in spawned processes; on CPU each gets
cores // jobs threads so that jobs do not fight over cores.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from repro.cache import RunStore, ensure_run
from repro.config import RunConfig
from repro.plan import Plan, PlannedRun, format_duration

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> message


def _train_one(config: RunConfig, key: str, cache_root: str, data_root: str | None, device: str, threads: int) -> tuple[str, bool]:
    import torch

    from repro.train.run import run_and_measure

    if threads:
        torch.set_num_threads(threads)
    store = RunStore(Path(cache_root))
    record, trained = ensure_run(config, store, lambda c: run_and_measure(c, device, Path(data_root) if data_root else None), key)
    return key, trained


def train_plan(plan: Plan, store: RunStore, jobs: int = 1, device: str = "auto",
               data_root: Path | None = None, progress: bool = True) -> TrainSummary:
    from tqdm import tqdm

    summary = TrainSummary()
    todo: list[PlannedRun] = [r for r in plan.runs if not store.contains(r.key)]
    summary.reused = [r.key for r in plan.runs if r not in todo]
    if not todo:
        return summary
    cores = os.cpu_count() or 1
    on_gpu = plan.device == "cuda"
    jobs = max(1, min(jobs, len(todo)))
    threads = 0 if on_gpu else max(1, cores // jobs)
    bar = tqdm(total=len(todo), desc=f"training {len(todo)} runs ({format_duration(plan.estimate_seconds())} est.)",
               unit="run", disable=not progress, file=sys.stderr)
    args = (str(store.root), str(data_root) if data_root else None, device, threads)
    if jobs == 1:
        for run in todo:
            bar.set_postfix_str(run.config.summary())
            _collect(summary, run, lambda: _train_one(run.config, run.key, *args))
            bar.update(1)
        bar.close()
        return summary
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(_train_one, r.config, r.key, *args): r for r in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    run = pending.pop(fut)
                    _collect(summary, run, fut.result)
                    bar.set_postfix_str(run.config.summary())
                    bar.update(1)
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()
    return summary


def _collect(summary: TrainSummary, run: PlannedRun, call) -> None:
    from repro.cache import CacheError
    from repro.data.base import DatasetError

    try:
        key, trained = call()
        (summary.trained if trained else summary.reused).append(key)
    except (DatasetError, CacheError, RuntimeError, OSError) as e:
        # One run's failure (missing data, out of memory) must not lose the others.
        summary.failed[run.key] = f"{run.config.summary()}: {e}"
        log.error("run %s failed: %s", run.key[:12], e)
