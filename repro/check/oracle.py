"""The paper as an oracle: every full-tier check evaluated on the claim's own paper numbers.

In:  a ClaimSpec (its full tier: run groups with ``paper:`` numbers, and checks).
Out: ``Finding``s, each naming file, line and check field: a check the paper's own numbers fail
     (fatal unless the check states ``paper_fails: <reason>``), a check that cannot fail (fatal),
     a ``paper_fails`` the paper does not need (fatal), and checks that cannot be judged because
     the paper gives no number for what they read (a note).

Noise model (documented in claims/README.md): each run point gets three seeds whose values are
the paper's number plus ``paper_noise`` x z_i, where z is three draws from a standard normal,
seeded by a hash of (claim id, run group, axis value), then centred and scaled to sample std 1:
the seed mean is exactly the paper's number and the seed std exactly ``paper_noise`` (default 1
point). All metrics of one run point share the same z (a seed that is unlucky on test error is
unlucky on the pruned error of the same network too), so checks comparing two metrics of one run
see the paper's difference exactly; checks comparing two runs see independent noise.

A check *cannot fail* when it still passes with its two sides swapped (greater/less/layer_pattern:
a <-> b; monotonic: the other direction), or when its tolerance (equal, value, at_most) or bounds
(distribution) cover every value the metric can take.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from repro.check.kinds import Observations, evaluate_check
from repro.check.verdict import ERROR, REPRODUCED
from repro.spec.checks import same_value, selection_range
from repro.spec.claims import CheckSpec, ClaimSpec, RunGroup
from repro.spec.source import SpecProblem, display_path

PAPER_SEEDS = 3


@dataclass(frozen=True)
class Finding(SpecProblem):
    """A problem of a claim file (file, line, field, message, as ``repro validate`` prints them)
    that the paper's numbers reveal; ``fatal`` ones make the command exit 2, the rest are notes."""

    fatal: bool = True


def seed_offsets(*key: Any) -> np.ndarray:
    """Three deterministic offsets with mean 0 and sample std 1 (see the module docstring)."""
    seed = int(hashlib.sha256(repr(key).encode()).hexdigest()[:16], 16)
    z = np.random.default_rng(seed).standard_normal(PAPER_SEEDS)
    z -= z.mean()
    return z / z.std(ddof=1)


def paper_observations(spec: ClaimSpec, tier: str = "full") -> Observations:
    """Observations whose per-seed metrics are the paper's numbers under the noise model."""
    t = spec.tier(tier)

    def metrics_for(group: RunGroup, axis_value: Any) -> list[dict]:
        point = next(p for p in group.points if same_value(p.axis_value, axis_value))
        z = seed_offsets(spec.id, group.name, axis_value)
        out = []
        for i in range(PAPER_SEEDS):
            noise = spec.paper_noise * float(z[i])
            seed = {m: ([x + noise for x in v] if isinstance(v, list) else v + noise) for m, v in point.paper.items()}
            seed["diverged_at"] = None
            out.append(seed)
        return out

    return Observations(t.groups, metrics_for)


def _swapped(check: CheckSpec) -> CheckSpec | None:
    p = check.params
    if check.kind in ("greater", "less"):
        return dataclasses.replace(check, params=dataclasses.replace(p, a=p.b, b=p.a))
    if check.kind == "layer_pattern":
        return dataclasses.replace(check, params=dataclasses.replace(p, layers=p.than, than=p.layers))
    if check.kind == "monotonic":
        other = "decreasing" if p.direction == "increasing" else "increasing"
        return dataclasses.replace(check, params=dataclasses.replace(p, direction=other))
    return None


def _covers_range(check: CheckSpec, groups: dict) -> str | None:
    p = check.params
    sels = p.selections()
    if not sels:
        return None
    lo, hi = selection_range(next(iter(sels.values())), groups)
    if lo is None or hi is None:
        return None
    width = hi - lo
    if check.kind in ("equal", "value") and p.tolerance >= width:
        return f"tolerance {p.tolerance:g} covers every value of the metric ({lo:g}..{hi:g})"
    if check.kind == "at_most" and p.margin >= width:
        return f"bound {p.margin:g} covers every value of the metric ({lo:g}..{hi:g})"
    if check.kind == "distribution" and (p.min is None or p.min <= lo) and (p.max is None or p.max >= hi):
        return f"bounds min {p.min} / max {p.max} include every value of the metric ({lo:g}..{hi:g})"
    return None


def check_against_paper(spec: ClaimSpec, tier: str = "full") -> list[Finding]:
    t = spec.tier(tier)
    if t.not_run:
        return []
    obs = paper_observations(spec, tier)
    file = display_path(spec.path)
    findings = []

    def add(check: CheckSpec, message: str, fatal: bool) -> None:
        findings.append(Finding(file, check.line, check.field_path, message, fatal))

    for check in t.checks:
        covers = _covers_range(check, t.groups)
        if covers:
            add(check, f"cannot fail: {covers}", True)
        result = evaluate_check(check, obs)
        if result.status == ERROR:
            add(check, f"not judged against the paper: {result.reason} (the paper gives no number for it)", False)
            continue
        stated = check.params.paper_fails
        if result.status == REPRODUCED:
            if stated:
                add(check, f"paper_fails is stated but the paper's numbers pass ({result.arithmetic})", True)
            swapped = _swapped(check)
            if swapped is not None and evaluate_check(swapped, obs).status == REPRODUCED:
                add(check, "cannot fail: it still passes with its two sides swapped", True)
        elif stated:
            add(check, f"the paper's own numbers fail it ({result.status}), as stated: {stated}", False)
        else:
            add(check, f"the paper's own numbers give '{result.status}' (noise std {spec.paper_noise:g}): "
                       f"{result.reason}; {result.arithmetic}", True)
    return findings
