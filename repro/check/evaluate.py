"""A claim at a tier + the run store -> its Verdict, from cached results alone (no training).

In:  ClaimSpec, tier name, RunStore.
Out: Verdict (status, reason, one CheckResult per check). Runs that are not in the cache give
an 'error' verdict naming them; simulation groups (finding 9) are computed here, they are exact
and take well under a second.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from repro.cache import RunStore, run_key
from repro.check.kinds import Observations, check_claim_tier
from repro.check.verdict import NOT_RUN, Verdict
from repro.spec.claims import ClaimSpec, RunGroup


@functools.lru_cache(maxsize=64)
def simulation_metrics(decay) -> dict[float, list[dict]]:
    """Per lambda, per seed: |theta| at the end and its log10, and the first recorded step at
    which |theta| fell below 1e-2 and 1e-3 of its start (None if never)."""
    from repro.simulate.low_gradient import simulate_abs_theta

    steps, values = simulate_abs_theta(decay)  # (n_rec, n_lams, n_seeds)
    out: dict[float, list[dict]] = {}
    for i, lam in enumerate(decay.lams):
        per_seed = []
        for j in range(len(decay.seeds)):
            curve = values[:, i, j]
            final = float(curve[-1])
            per_seed.append({
                "final_abs": final,
                "log10_final_abs": float(torch.log10(torch.tensor(max(final, 1e-300)))),
                "steps_to_1e-2": _first_below(steps, curve, 1e-2),
                "steps_to_1e-3": _first_below(steps, curve, 1e-3),
                "diverged_at": None,
            })
        out[lam] = per_seed
    return out


def _first_below(steps: list[int], curve: torch.Tensor, level: float) -> float:
    below = (curve <= level).nonzero()
    # Never reaching the level counts as the full length (a censored value, stated in reports).
    return float(steps[int(below[0])]) if len(below) else float(steps[-1])


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
