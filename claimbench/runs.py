"""Produce what the cache stores: the orchestration above the pipeline's stages.

In:  run configurations (one, or a group that ``config.group_key`` says can train together),
     device, dataset root; or the simulations claims name.
Out: one ``RunRecord`` per config (``run_and_measure_group``): config, metrics (every quantity
     the paper reports, see claimbench.measure, and for a run of a registered trainer the metrics it
     reported), histories, the trained weights and provenance (torch version, device, wall time,
     group size, and what training actually executed: float32 precision flags, cuDNN version and
     autotuning, torch threads, the run's optimizer kernel, CUDA graphs per phase; or which
     trainer, of which distribution and version, trained it); ``remeasure`` (metrics of stored
     weights under the current measurement code, which callers hand to the cache); simulation
     records stored in the cache (``ensure_simulations``).

The stages below only do their one thing: ``train`` trains, ``measure`` measures, ``cache``
stores (it is handed ``remeasure`` when stored metrics must be brought up to date). Checks and
reports only read what is stored, so reading a report never trains, measures or simulates.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from claimbench.cache import RunRecord, RunStore, training_code_fingerprint, training_identity
from claimbench.cache.simulations import SimulationStore
from claimbench.cache.provenance import plugin_provenance
from claimbench.config import RunConfig, plugins_used
from claimbench.data import load_dataset
from claimbench.measure import measure_model
from claimbench.spec.claims import ClaimSpec
from claimbench.spec.simulation import DecayConfig
from claimbench.train.loop import resolve_device, train_models
from claimbench.train.models import build_model
from claimbench.train.trainer import TrainerError

log = logging.getLogger(__name__)


# -- runs: train, measure, record -------------------------------------------------------------
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
    default 300). ``cuda_graphs`` / ``kernels``: as ``train_models`` takes them (None: its
    defaults); a group whose kind gave a fast feature up passes it here."""
    dev = resolve_device(device)
    started = time.time()
    data = load_dataset(configs[0].data, data_root).to(dev)
    every = float(os.environ.get("CLAIMBENCH_CHECKPOINT_EVERY_S", "300"))
    # A registered trainer is someone else's code holding the tensors: it gets a copy, so whatever it
    # writes into them (a normalisation in place, a bug, a cheat) cannot change what claimbench measures.
    handed = _private_copy(data) if configs[0].train.trainer is not None else data
    outcomes = train_models(configs, handed, dev, on_step=on_step, checkpoint=checkpoint, checkpoint_every_s=every,
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
        clash = sorted(set(outcome.trainer_metrics) & set(metrics))
        if clash:
            raise TrainerError(f"trainer {config.train.trainer}: reports {', '.join(clash)}, which claimbench measures "
                               f"itself; rename the trainer's metrics")
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
    import math

    return all(isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]) for k in ("train_loss", "test_loss")
               if k in metrics)


def _private_copy(data):  # noqa: ANN001, ANN202  (an ImageData, or a duck-typed one)
    import dataclasses

    fields = {name: getattr(data, name).clone() for name in ("train_x", "train_y", "test_x", "test_y")
              if isinstance(getattr(data, name, None), torch.Tensor)}
    return dataclasses.replace(data, **fields) if dataclasses.is_dataclass(data) else data


# -- re-measuring stored weights (handed to the cache, which calls it when the measurement code
# changed, and to imports, which prove an archive's numbers with it) --------------------------
def remeasure(record: RunRecord, device: str = "auto", data_root: Path | None = None) -> dict:
    """Metrics of ``record``'s stored weights under the current measurement code, keeping what
    training alone decides (steps, divergence). No training."""
    dev = resolve_device(device)
    data = load_dataset(record.config.data, data_root).to(dev)
    c = record.config
    model = build_model(c.model, data.in_channels, data.image_size, data.num_classes, c.data.dataset)
    model.load_state_dict(record.state_dict)
    metrics = measure_model(model.to(dev).eval(), data)
    metrics["diverged_at"] = record.metrics.get("diverged_at")
    metrics["steps"] = record.metrics.get("steps")
    # A trainer's own metrics are facts of its training, like the steps: kept as it reported them.
    for name in record.trainer_metric_names:
        if name in record.metrics and name not in metrics:
            metrics[name] = record.metrics[name]
    return metrics


# -- simulations -------------------------------------------------------------------------------


def simulations_of(specs: Iterable[ClaimSpec], tier: str) -> list[DecayConfig]:
    """The distinct simulations the claims' tier needs."""
    found: dict[DecayConfig, None] = {}
    for spec in specs:
        t = spec.tier(tier)
        if t.not_run:
            continue
        for group in t.groups.values():
            if group.simulate is not None:
                found[group.simulate] = None
    return list(found)


def ensure_simulations(specs: Iterable[ClaimSpec], tier: str, store: RunStore) -> int:
    """Compute and store the simulations the claims need and the cache lacks; how many ran."""
    sims = SimulationStore(store.root)
    missing = [cfg for cfg in simulations_of(specs, tier) if sims.get(cfg) is None]
    if not missing:
        return 0
    from claimbench.simulate.low_gradient import simulation_record

    for cfg in missing:
        record = simulation_record(cfg)
        sims.put(cfg, record)
        log.info("simulated %s+%s (%d lambdas, %d seeds) in %.1f s", cfg.optimizer, cfg.regularizer,
                 len(cfg.lams), len(cfg.seeds), record["seconds"])
    return len(missing)
