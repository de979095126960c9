"""Produce what the cache stores: the orchestration above the pipeline's stages.

In:  run configurations (a group that trains together) or the simulations claims name.
Out: ``RunRecord``s (trained by ``repro.train``, measured by ``repro.measure``) for the cache to
     store; simulation records stored in the cache (``ensure_simulations``).

The stages below only do their one thing: ``train`` trains, ``measure`` measures, ``cache``
stores (it is handed ``remeasure`` when stored metrics must be brought up to date). Checks and
reports only read what is stored, so reading a report never trains, measures or simulates.
"""

from __future__ import annotations

import logging
from typing import Iterable

from repro.cache import RunStore
from repro.cache.simulations import SimulationStore
from repro.spec.claims import ClaimSpec
from repro.spec.simulation import DecayConfig

log = logging.getLogger(__name__)


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
    from repro.simulate.low_gradient import simulation_record

    for cfg in missing:
        record = simulation_record(cfg)
        sims.put(cfg, record)
        log.info("simulated %s+%s (%d lambdas, %d seeds) in %.1f s", cfg.optimizer, cfg.regularizer,
                 len(cfg.lams), len(cfg.seeds), record["seconds"])
    return len(missing)
