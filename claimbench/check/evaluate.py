"""A claim at a tier + the run store -> its Verdict, from cached results alone (no training).

In:  ClaimSpec, tier name, RunStore.
Out: Verdict (status, reason, one CheckResult per check). A claim whose runs are not all in the
cache is *not run* ("not run: 3 of 12 runs missing"), not an error, unless a missing run failed
when it was last trained (``claimbench.cache.failures``): then it is an error whose reason says which
run failed and why (a plug-in's exception, missing data); simulation groups are read
from the simulations the cache stores (``claimbench.cache.simulations``; ``claimbench.runs`` computes
them), so checking never trains, measures or simulates, and never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from claimbench.check.kinds import Observations, check_claim_tier
from claimbench.check.verdict import ERROR, NOT_RUN, Verdict
from claimbench.spec.claims import ClaimSpec
from claimbench.spec.run_groups import RunGroup
from claimbench.spec.simulation import DecayConfig

if TYPE_CHECKING:
    from claimbench.cache import RunStore


def simulation_metrics(sim: DecayConfig, store: "RunStore") -> dict[float, list[dict]] | None:
    """Per lambda, per seed metrics of a stored simulation; None when it is not computed yet
    (``claimbench train``, or pytest on the claims, computes it)."""
    from claimbench.cache.simulations import SimulationStore
    from claimbench.simulate.result import metrics_of

    record = SimulationStore(store.root).get(sim)
    return None if record is None else metrics_of(record)


def missing_work(spec: ClaimSpec, tier: str, store: "RunStore") -> str | None:
    """Why the tier cannot be checked from the cache yet ("3 of 12 runs missing"), or None."""
    from claimbench.cache import run_key

    t = spec.tier(tier)
    keys = {run_key(c) for c in t.configs()}
    runs = sum(1 for k in keys if store.get(k) is None)
    sims = {g.simulate for g in t.groups.values() if g.simulate is not None}
    absent = sum(1 for sim in sims if simulation_metrics(sim, store) is None)
    parts = ([f"{runs} of {len(keys)} run{'s' if len(keys) != 1 else ''} missing"] if runs else []) + \
        ([f"{absent} of {len(sims)} simulation{'s' if len(sims) != 1 else ''} not computed"] if absent else [])
    return "; ".join(parts) if parts else None


def failed_runs(spec: ClaimSpec, tier: str, store: "RunStore") -> str | None:
    """Why the tier cannot be checked when some of its missing runs failed ("run 1a2b3c4d5e6f
    (tinynet ...) failed: trainer nantrainer (...): metric score is nan"), or None."""
    from claimbench.cache import run_key
    from claimbench.cache.failures import failure_of_run

    keys = sorted({run_key(c) for c in spec.tier(tier).configs()})
    failed = [f for k in keys if not store.contains(k) and (f := failure_of_run(store, k)) is not None]
    if not failed:
        return None
    first = failed[0]
    more = f" ({len(failed) - 1} more of its {len(keys)} runs failed too)" if len(failed) > 1 else ""
    return f"run {first.key[:12]} ({first.run}) failed: {first.reason}{more}"


def tier_observations(spec: ClaimSpec, tier: str, store: "RunStore", unverified: set[str] | None = None,
                      with_paper: bool = True) -> Observations:
    """The tier's observations, read from the store as the checks ask; the keys of runs read
    whose numbers were not measured here are added to ``unverified``. ``with_paper``: whether the
    claims are a paper's (``claimbench.report.paper_numbers.paper_to_reproduce``)."""
    from claimbench.cache import run_key

    t = spec.tier(tier)
    cache: dict[str, Any] = {}
    sims = {g.simulate: simulation_metrics(g.simulate, store) for g in t.groups.values() if g.simulate is not None}

    def metrics_for(group: RunGroup, axis_value: Any) -> list[dict | None]:
        if group.simulate is not None:
            return sims[group.simulate][axis_value]
        point = next(p for p in group.points if p.axis_value == axis_value)
        out = []
        for config in point.configs:
            key = run_key(config)
            if key not in cache:
                record = store.get(key)
                cache[key] = record.metrics if record is not None else None
                if record is not None and not record.verified and unverified is not None:
                    unverified.add(key)
            out.append(cache[key])
        return out

    return Observations(t.groups, metrics_for, with_paper=with_paper)


def evaluate_claim(spec: ClaimSpec, tier: str, store: "RunStore", with_paper: bool = True) -> Verdict:
    """The claim's verdict at ``tier``. ``with_paper``: whether the claims are a paper's, as the
    caller decided it for its words (``claimbench.report.paper_numbers.paper_to_reproduce``, a
    layer above this one), so that a check's reason where they are not names no paper."""
    t = spec.tier(tier)
    if t.not_run:
        return Verdict(spec.id, tier, NOT_RUN, t.not_run)
    missing = missing_work(spec, tier, store)
    failed = failed_runs(spec, tier, store) if missing else None
    if failed:
        return Verdict(spec.id, tier, ERROR, failed)
    if missing:
        return Verdict(spec.id, tier, NOT_RUN, f"not run: {missing} (claimbench train computes them)")
    unverified: set[str] = set()
    results = check_claim_tier(t.checks, tier_observations(spec, tier, store, unverified, with_paper))
    verdict = Verdict.from_checks(spec.id, tier, results)
    verdict.unverified = len(unverified)
    return verdict
