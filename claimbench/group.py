"""One group's job, in the process that trains it: train, measure, record.

In:  a group's RunConfigs (one run, or several that ``config.group_key`` lets train together in
     one stacked network), a checkpoint path, the device, the dataset root, and what the executor
     asks of this group: torch threads, a dry run's step count, a progress callback, the fast
     features ``claimbench gpu-check`` switched off for its kind.
Out: ``train_group``: one ``RunRecord`` per config, ready for the cache: config, metrics (every
     quantity the paper reports, see claimbench.measure, and for a run of a registered trainer
     the metrics it reported), histories, the trained weights and provenance (torch version,
     device, wall time, group size, and what training actually executed: float32 precision
     flags, cuDNN version and autotuning, torch threads, the run's optimizer kernel, CUDA graphs
     per phase; or which trainer, of which distribution and version, trained it); for a dry run,
     the real config and the step stamps. ``RunFailed`` (one line) when a plug-in is at fault.
     ``run_and_measure`` / ``run_and_measure_group``: the same without the executor's part
     (``claimbench run``, tests).

Why one module: everything between "this worker got a group" and "here are its records" is one
job: shorten a dry run's schedule, size the group to the device's memory (halving it when it
runs out anyway), train it (``claimbench.train.train_runs``), measure each run, assemble its
record and provenance, stamp the dry run's step times, and judge a failure while its traceback
exists. The executors (``claimbench.execute``) decide where a group runs and hold its locks and
cache writes around this; the cache stores what comes back. This is the orchestration module that
loads torch: ``claimbench.execute`` imports it inside the functions that run in a worker, so the
process that plans and hands out groups loads none.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from claimbench.cache import RunRecord, training_code_fingerprint, training_identity
from claimbench.cache.provenance import plugin_provenance
from claimbench.config import RunConfig, phase_steps, plugins_used
from claimbench.data import load_dataset
from claimbench.data.catalog import data_shape
from claimbench.measure import measure_model
from claimbench.plan.estimate import memory_group_cap, run_memory_bytes
from claimbench.plan.step_times import now
from claimbench.run_failures import RunFailed, out_of_memory, plugin_failure
from claimbench.spec.metrics import metric_clash
from claimbench.train import train_runs
from claimbench.train.device import resolve_device
from claimbench.train.trainer import TrainerError

log = logging.getLogger(__name__)


# -- the executor's unit of work -----------------------------------------------------------------


def train_group(configs: list[RunConfig], checkpoint: Path | None, device: str, data_root: str | None,
                threads: int, dry_run_steps: int | None = None,
                on_progress: Callable[[int, int], None] | None = None, switched_off: tuple[str, ...] = ()) -> list:
    """Train and measure one group in this process; with ``dry_run_steps``, time its steps;
    ``on_progress(step, total)`` as training goes. ``switched_off``: fast features this group's
    kind gave up in ``claimbench gpu-check`` ("graphs": eager steps, "kernels": plain optimizer
    kernels, "resume": no checkpoint), handed to the loop as arguments, never through the
    process environment that other groups' threads share."""
    if threads:
        torch.set_num_threads(threads)
    stamps: list[tuple[int, float]] = []

    def on_step(step: int, total: int) -> None:
        if dry_run_steps:
            stamps.append((step, time.perf_counter()))
        if on_progress is not None:
            on_progress(step, total)

    trained = [dry_run_config(c, dry_run_steps) for c in configs] if dry_run_steps else configs
    try:
        records = _train_fitting(trained, device, Path(data_root) if data_root else None, on_step,
                                 None if "resume" in switched_off else checkpoint, switched_off,
                                 device_free_bytes(device))
    except Exception as e:
        reason = plugin_failure(e, configs)
        if reason is None:
            raise
        # Judged here, where the traceback still exists (a worker process's exception reaches the
        # parent without it), and raised as one line that crosses any process boundary.
        raise RunFailed(reason) from None
    if dry_run_steps:
        # Stored under the real run's key (in the dry-run store only): the record carries the real
        # config, which its key was computed from, and says in provenance what was trained instead.
        records = [replace(r, config=c, provenance={**r.provenance, "dry_run_config": t.to_dict()})
                   for r, c, t in zip(records, configs, trained)]
        # Raw stamps (steps done, seconds): which steps are warm-up is decided where they are
        # used (measured_step_times), from the phases the loop recorded.
        info = {"steps": dry_run_steps, "step_ends": [[n, round(t - stamps[0][1], 6)] for n, t in stamps],
                "measured_at": now()}
        for r in records:
            r.provenance["dry_run"] = info
    return records


def device_free_bytes(device: str) -> int | None:
    """Free memory of the CUDA device this process trains on (None on a CPU: no cap there). Asked
    in the process that trains, which holds a CUDA context anyway; the process that plans never
    opens one."""
    if not str(device).startswith("cuda"):
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def split_by_memory(configs: list[RunConfig], free_bytes: int | None) -> tuple[list[list[RunConfig]], str]:
    """``configs`` in groups that each fit ``free_bytes`` of device memory by
    ``memory_group_cap`` (VGG at 224 px, 16 runs, needs more than an 80 GB GPU has), and the
    line that says so ("" when nothing is split)."""
    cap = memory_group_cap(configs[0], free_bytes) if free_bytes is not None else None
    if cap is None or len(configs) <= cap:
        return [list(configs)], ""
    need = len(configs) * run_memory_bytes(configs[0]) / 2**30
    return ([list(configs[i:i + cap]) for i in range(0, len(configs), cap)],
            f"{len(configs)} runs of {configs[0].summary()} need about {need:.0f} GiB, {free_bytes / 2**30:.0f} GiB "
            f"free on the GPU: trained in groups of at most {cap}")


def _part_checkpoint(checkpoint: Path | None, i: int) -> Path | None:
    # A checkpoint of the whole group does not fit a part of it: each part keeps its own.
    return checkpoint.with_name(f"{checkpoint.stem}-part{i}{checkpoint.suffix}") if checkpoint else None


def _train_parts(parts: list[list[RunConfig]], device: str, data_root: Path | None, on_step,
                 checkpoint: Path | None, switched_off: tuple[str, ...]) -> list:
    records = []
    for i, part in enumerate(parts):
        path = _part_checkpoint(checkpoint, i)
        records += _train_fitting(part, device, data_root, on_step, path, switched_off)
        if path is not None:
            path.unlink(missing_ok=True)
    return records


def _train_fitting(configs: list[RunConfig], device: str, data_root: Path | None, on_step,
                   checkpoint: Path | None, switched_off: tuple[str, ...], free_bytes: int | None = None) -> list:
    """``run_and_measure_group`` in groups that fit the device (``split_by_memory`` of
    ``free_bytes``); a group that runs out of device memory anyway is trained again as two
    halves (each halved again if need be), said in one line: the cap is an estimate."""
    parts, line = split_by_memory(configs, free_bytes)
    if len(parts) > 1:
        log.warning("%s", line)
        return _train_parts(parts, device, data_root, on_step, checkpoint, switched_off)
    try:
        return run_and_measure_group(configs, device, data_root, on_step=on_step, checkpoint=checkpoint,
                                     cuda_graphs=False if "graphs" in switched_off else None,
                                     kernels="plain" if "kernels" in switched_off else None)
    except Exception as e:  # noqa: BLE001  (only an out-of-memory error is handled; the rest re-raised)
        if out_of_memory(e) != "device" or len(configs) < 2:
            raise
        half = (len(configs) + 1) // 2
        log.warning("out of GPU memory with %d runs in one group (%s): retrying as groups of %d and %d",
                    len(configs), configs[0].summary(), half, len(configs) - half)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return _train_parts([configs[:half], configs[half:]], device, data_root, on_step, checkpoint, switched_off)


def dry_run_config(config: RunConfig, steps: int) -> RunConfig:
    """``config`` with its schedule shrunk to ``steps`` steps in all, keeping every LR phase (at
    least one step each) in proportion, so phase changes are exercised too."""
    real = phase_steps(config.train, data_shape(config.data)[0])
    total = sum(real)
    steps = max(steps, len(real))
    phases = [max(1, round(steps * p / total)) for p in real]
    phases[0] = max(1, phases[0] + steps - sum(phases))
    return replace(config, train=replace(config.train, unit="steps", phases=tuple(phases)))


# -- train, measure, record -----------------------------------------------------------------------


def run_and_measure(config: RunConfig, device: str = "auto", data_root: Path | None = None,
                    on_step: Callable[[int, int], None] | None = None, checkpoint: Path | None = None) -> RunRecord:
    return run_and_measure_group([config], device, data_root, on_step, checkpoint)[0]


def run_and_measure_group(
    configs: list[RunConfig],
    device: str = "auto",
    data_root: Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    checkpoint: Path | None = None,
    cuda_graphs: bool | None = None,
    kernels: str | None = None,
) -> list[RunRecord]:
    """``checkpoint``: resume from / save to this file (every $CLAIMBENCH_CHECKPOINT_EVERY_S seconds,
    default 300). ``cuda_graphs`` / ``kernels``: as ``train_runs`` takes them (None: its
    defaults); a group whose kind gave a fast feature up passes it here."""
    dev = resolve_device(device)
    started = time.time()
    data = load_dataset(configs[0].data, data_root).to(dev)
    every = float(os.environ.get("CLAIMBENCH_CHECKPOINT_EVERY_S", "300"))
    # A registered trainer is someone else's code holding the tensors: it gets a copy, so whatever it
    # writes into them (a normalisation in place, a bug, a cheat) cannot change what claimbench measures.
    handed = _private_copy(data) if configs[0].train.trainer is not None else data
    outcomes = train_runs(configs, handed, dev, on_step=on_step, checkpoint=checkpoint, checkpoint_every_s=every,
                            cuda_graphs=cuda_graphs, kernels=kernels)
    del handed
    records = []
    for config, outcome in zip(configs, outcomes):
        metrics = measure_model(outcome.model, data) if outcome.diverged_at is None else {}
        diverged_at = outcome.diverged_at
        if outcome.execution is None and metrics and not _finite_losses(metrics):
            # A trainer's finite weights can still compute NaN (a negative BatchNorm variance,
            # weights near float's end): a run of claimbench's loop would have stopped as diverged.
            log.warning("run %s: the weights trainer %s returned give non-finite losses (train %s, test %s); "
                        "recorded as diverged", config.summary(), config.train.trainer, metrics.get("train_loss"),
                        metrics.get("test_loss"))
            metrics, diverged_at = {}, outcome.steps
        metrics["diverged_at"] = diverged_at
        metrics["steps"] = outcome.steps
        clash = metric_clash(config.train.trainer, outcome.trainer_metrics)
        if clash:
            raise TrainerError(clash)
        metrics.update(outcome.trainer_metrics)
        provenance = {
            # What decides numbers without being part of the key: the torch build, the threads
            # (a plug-in run's test error moved by 4 points between 1 and 2 threads), the device
            # and the text of the training code (the key holds its semantics).
            "torch": torch.__version__,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
            "training_identity": training_identity(),
            "training_code": training_code_fingerprint(),
            "group_size": len(configs),
            "precision": config.train.precision,
            # Read back from the training that ran, never from the settings asked for: claimbench's loop
            # (execution) or a registered trainer.
            **(outcome.execution.provenance(config.optim.name) if outcome.execution is not None
               else {"trainer": outcome.trainer}),
            # Which plug-ins trained it, and what they declared: what a report says, and what lets
            # it read this run where the plug-ins are not installed (claimbench.cache.provenance).
            **({"plugins": plugin_provenance(config)} if plugins_used(config) else {}),
            "train_wall_s": round(outcome.wall_s, 2),
            "total_wall_s": round(time.time() - started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
        }
        state = {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
        records.append(RunRecord(config, metrics, outcome.history, provenance, state))
    return records


def _finite_losses(metrics: dict) -> bool:
    return all(isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]) for k in ("train_loss", "test_loss")
               if k in metrics)


def _private_copy(data):  # noqa: ANN001, ANN202  (an ImageData, or a duck-typed one)
    fields = {name: getattr(data, name).clone() for name in ("train_x", "train_y", "test_x", "test_y")
              if isinstance(getattr(data, name, None), torch.Tensor)}
    return dataclasses.replace(data, **fields) if dataclasses.is_dataclass(data) else data
