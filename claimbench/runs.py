"""Produce what the cache stores besides trained runs: metrics of stored weights, and simulations.

In:  a stored ``RunRecord`` (its config and weights), device, dataset root; or claims and a tier.
Out: ``remeasure`` (metrics of stored weights under the current measurement code, which callers
     hand to the cache, which calls it when the measurement code changed, and to imports, which
     prove an archive's numbers with it); simulation records stored in the cache
     (``ensure_simulations``; ``simulations_of`` lists those a tier needs).

Training, measuring and recording a group of runs is ``claimbench.group``. The stages below only
do their one thing: ``train`` trains, ``measure`` measures, ``cache`` stores. Checks and reports
only read what is stored, so reading a report never trains, measures or simulates.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from claimbench.cache import RunRecord, RunStore
from claimbench.cache.simulations import SimulationStore
from claimbench.data import load_dataset
from claimbench.measure import measure_model
from claimbench.spec.claims import ClaimSpec
from claimbench.spec.simulation import DecayConfig
from claimbench.train.device import resolve_device
from claimbench.train.models import build_model

log = logging.getLogger(__name__)


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
