"""A claim at a tier + the run store -> its Verdict, from cached results alone (no training).

In:  ClaimSpec, tier name, RunStore.
Out: Verdict (status, reason, one CheckResult per check). A claim whose runs are not all in the
cache is *not run* ("not run: 3 of 12 runs missing"), not an error; simulation groups (finding 9)
are computed here, they are exact and take well under a second. Nothing here imports torch until
a simulation is actually evaluated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repro.check.kinds import Observations, check_claim_tier
from repro.check.verdict import NOT_RUN, Verdict
from repro.spec.claims import ClaimSpec, RunGroup
from repro.spec.simulation import DecayConfig

if TYPE_CHECKING:
    from repro.cache import RunStore


def simulation_metrics(sim: DecayConfig) -> dict[float, list[dict]]:
    """Per lambda, per seed metrics of a simulation group (one definition:
    ``repro.simulate.simulation_metrics``, cached there)."""
    from repro.simulate import simulation_metrics as compute

    return compute(sim)


def missing_runs(spec: ClaimSpec, tier: str, store: "RunStore") -> tuple[int, int]:
    """(runs not in the cache, runs the tier needs); simulations are never missing."""
    from repro.cache import run_key

    keys = {run_key(c) for c in spec.tier(tier).configs()}
    return sum(1 for k in keys if store.get(k) is None), len(keys)


def tier_observations(spec: ClaimSpec, tier: str, store: "RunStore") -> Observations:
    from repro.cache import run_key

    t = spec.tier(tier)
    cache: dict[str, Any] = {}

    def metrics_for(group: RunGroup, axis_value: Any) -> list[dict | None]:
        if group.simulate is not None:
            return simulation_metrics(group.simulate)[axis_value]
        point = next(p for p in group.points if p.axis_value == axis_value)
        out = []
        for config in point.configs:
            key = run_key(config)
            if key not in cache:
                record = store.get(key)
                cache[key] = record.metrics if record is not None else None
            out.append(cache[key])
        return out

    return Observations(t.groups, metrics_for)


def evaluate_claim(spec: ClaimSpec, tier: str, store: "RunStore") -> Verdict:
    t = spec.tier(tier)
    if t.not_run:
        return Verdict(spec.id, tier, NOT_RUN, t.not_run)
    missing, total = missing_runs(spec, tier, store)
    if missing:
        return Verdict(spec.id, tier, NOT_RUN, f"not run: {missing} of {total} runs missing (train them with repro train)")
    results = check_claim_tier(t.checks, tier_observations(spec, tier, store))
    return Verdict.from_checks(spec.id, tier, results)
