"""A claim at a tier + the run store -> its Verdict, from cached results alone (no training).

In:  ClaimSpec, tier name, RunStore.
Out: Verdict (status, reason, one CheckResult per check). Runs that are not in the cache give
an 'error' verdict naming them; simulation groups (finding 9) are computed here, they are exact
and take well under a second.
"""

from __future__ import annotations

from typing import Any

from repro.cache import RunStore, run_key
from repro.check.kinds import Observations, check_claim_tier
from repro.check.verdict import NOT_RUN, Verdict
from repro.spec.claims import ClaimSpec, RunGroup


def simulation_metrics(decay) -> dict[float, list[dict]]:
    """Per lambda, per seed metrics of a simulation group (``repro.simulate.simulation_metrics``)."""
    from repro.simulate import simulation_metrics as compute

    return compute(decay)


def tier_observations(spec: ClaimSpec, tier: str, store: RunStore) -> Observations:
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


def evaluate_claim(spec: ClaimSpec, tier: str, store: RunStore) -> Verdict:
    t = spec.tier(tier)
    if t.not_run:
        return Verdict(spec.id, tier, NOT_RUN, t.not_run)
    results = check_claim_tier(t.checks, tier_observations(spec, tier, store))
    return Verdict.from_checks(spec.id, tier, results)
