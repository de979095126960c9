"""Selected claims at a tier -> the deduplicated runs they need, their groups and a time estimate.

In:  ClaimSpecs, a tier name, the run store (which runs are cached; measured step times).
Out: ``Plan``: one ``PlannedRun`` per distinct cache key (which claims need it, whether it is
cached, its steps and FLOPs), the fused groups they train in (``claimbench.plan.groups``) and the
estimated time on a ``Target`` device, per part of the tier (``part_of``) and in total, for
fp32 and TF32: *measured* where a dry run (``claimbench verify --dry-run``) timed that kind of
group's steady-state steps on this machine (``claimbench.plan.step_times``,
``<cache>/step-times.json``), *modelled* elsewhere (``claimbench.plan.estimate``: FLOPs over a
stated share of the device's peak), next to the physical limit (the same FLOPs at the device's
peak), and the plan says which.

No torch here: sizes come from ``claimbench.data.catalog``, FLOPs from ``claimbench.netcost``, the device
from the driver's files (``claimbench.machine``). The cache key (``claimbench.cache``) is imported
where it is used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from claimbench.config import RunConfig
from claimbench.machine import detect
from claimbench.machine.peaks import ACHIEVABLE_FRACTION, PRECISIONS
from claimbench.machine.target import Target, machine_target
from claimbench.plan.estimate import (Estimate, GroupEstimate, PartEstimate, by_part, combine, cpu_model_seconds,
                                      gpu_model_seconds, part_of, run_cost)
from claimbench.plan.groups import PlannedRun, default_group_size, form_groups, group_id, group_label
from claimbench.plan.step_times import StepTime, StepTimes

if TYPE_CHECKING:
    from claimbench.cache import RunStore
    from claimbench.spec.claims import ClaimSpec


@dataclass
class Plan:
    tier: str
    runs: list[PlannedRun]
    device: str
    claims_not_run: dict[str, str] = field(default_factory=dict)
    # Measured step times on this machine by group id (empty: everything is modelled).
    step_times: dict[str, StepTime] = field(default_factory=dict)
    # The device the estimate is for (default: this machine's, ``machine_target(device)``).
    target: Target | None = None

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = machine_target(self.device)

    @property
    def missing(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.cached]

    def groups(self, group_size: int | None = None, only_missing: bool = True) -> list[list[PlannedRun]]:
        """The groups the target device trains (groups of 16 on a GPU, even when planned on a CPU)."""
        runs = self.missing if only_missing else self.runs
        return form_groups(runs, group_size or default_group_size(self.target.kind, 1))

    def model_seconds(self, steps: int, flops: float, precision: str) -> float | None:
        """Modelled seconds of one run on the target (None: the GPU's peak is unknown)."""
        if self.target.kind == "cpu":
            return cpu_model_seconds(steps, flops)
        return gpu_model_seconds(flops, self.target.peak, precision)

    def limit_seconds(self, flops: float, precision: str) -> float | None:
        """``flops`` at the target's peak (None on a CPU or a GPU whose peak is unknown)."""
        if self.target.kind == "cpu" or self.target.peak is None:
            return None
        return flops / (self.target.peak.tflops(precision) * 1e12)

    def group_estimates(self, group_size: int | None = None, only_missing: bool = True,
                        precision: str | None = None,
                        rate_of: Callable[[list[RunConfig]], float | None] | None = None) -> list[GroupEstimate]:
        """Seconds per group trained one group at a time, at ``precision`` (None: each run's
        own): measured steady-state step time x steps where a dry run timed this kind of group
        on this machine (the target), else the group's FLOPs over ``rate_of(its configs)`` where
        that gives a measured FLOP/s (gpu-check's rate of the group's kind), else the model
        (FLOPs over a share of the peak)."""
        out = []
        for g in self.groups(group_size, only_missing):
            config = g[0].config
            p = precision or config.train.precision
            if p != config.train.precision:
                config = replace(config, train=replace(config.train, precision=p))
            measured = self.step_times.get(group_id(config)) if self.target.here else None
            rate = rate_of([r.config for r in g]) if rate_of is not None and measured is None else None
            steps = max(r.steps for r in g)
            flops = sum(r.flops for r in g)
            if measured is not None:
                seconds: float | None = measured.run_step_s * len(g) * steps
            elif rate:
                seconds = flops / rate
            else:
                each = [self.model_seconds(r.steps, r.flops, p) for r in g]
                seconds = None if any(x is None for x in each) else sum(each)  # type: ignore[arg-type]
            out.append(GroupEstimate(group_label(g), len(g), steps, seconds, measured is not None or bool(rate),
                                     part_of(config), flops, self.limit_seconds(flops, p)))
        return out

    def estimate(self, only_missing: bool = True, group_size: int | None = None,
                 precision: str | None = None) -> Estimate:
        return combine(self.group_estimates(group_size, only_missing, precision), self.target, precision)

    def estimate_seconds(self, only_missing: bool = True, group_size: int | None = None) -> float | None:
        return self.estimate(only_missing, group_size).seconds

    def estimate_source(self, only_missing: bool = True) -> str:
        """'measured', 'modelled', 'partly measured' (by groups), or '..., peak unknown'."""
        return self.estimate(only_missing).source

    def part_estimates(self, only_missing: bool = True,
                       group_size: int | None = None) -> tuple[list[PartEstimate], PartEstimate]:
        """Per part of the tier (``PARTS`` order, then any other) and in total: FLOPs and the
        estimate as if every run trained in fp32, and in TF32."""
        by = {p: self.group_estimates(group_size, only_missing, p) for p in PRECISIONS}
        parts = {p: by_part(by[p]) for p in PRECISIONS}

        def row(name: str, sel: dict[str, list[GroupEstimate]]) -> PartEstimate:
            return PartEstimate(name, sum(g.size for g in sel["fp32"]), sum(g.flops for g in sel["fp32"]),
                                combine(sel["fp32"], self.target, "fp32"), combine(sel["tf32"], self.target, "tf32"))

        return ([row(n, {p: parts[p][n] for p in PRECISIONS}) for n in parts["fp32"]], row("total", by))

    def to_dict(self) -> dict:
        t = self.target
        parts, total = self.part_estimates(only_missing=False)
        everything = self.estimate(only_missing=False)
        return {
            "tier": self.tier,
            "device": self.device,
            "target": {"kind": t.kind, "name": t.name, "this_machine": t.here, "note": t.note,
                       "peak_fp32_tflops": t.peak.fp32_tflops if t.peak else None,
                       "peak_tf32_tflops": t.peak.tf32_tflops if t.peak else None,
                       "peak_source": t.peak.source if t.peak else None,
                       "modelled_share_of_peak": dict(ACHIEVABLE_FRACTION) if t.kind == "cuda" else None},
            "runs": [
                {"key": r.key, "summary": r.config.summary(), "claims": r.claims, "cells": r.cells, "cached": r.cached,
                 "steps": r.steps, "flops": r.flops, "part": part_of(r.config),
                 "modelled_s": _rounded(self.model_seconds(r.steps, r.flops, r.config.train.precision)),
                 "config": r.config.to_dict()}
                for r in self.runs
            ],
            "groups": [asdict(e) for e in self.group_estimates(only_missing=False)],
            "parts": [_part_dict(p) for p in parts],
            "total": _part_dict(total),
            "claims_not_run": self.claims_not_run,
            "total_runs": len(self.runs),
            "cached_runs": len(self.runs) - len(self.missing),
            "estimated_s_missing": _rounded(self.estimate_seconds()),
            "estimated_s_all": _rounded(everything.seconds),
            "estimate": everything.source,
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _part_dict(p: PartEstimate) -> dict:
    return {"part": p.part, "runs": p.runs, "flops": p.flops,
            **{prec: {"seconds": _rounded(e.seconds), "source": e.source, "limit_seconds": _rounded(e.limit_seconds),
                      "ratio_to_limit": None if e.ratio is None else round(e.ratio, 4)}
               for prec, e in (("fp32", p.fp32), ("tf32", p.tf32))}}


def parts_table(plan: Plan, only_missing: bool = True, group_size: int | None = None) -> str:
    """Per part of the tier and in total: PFLOP, then for fp32 and for TF32 the hours, whether
    measured or modelled, the hours at the device's peak and the limit over the estimate."""
    from tabulate import tabulate

    def hours(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 3600:,.1f}"

    def share(e: Estimate) -> str:
        # A measured row's share of the peak is a finding; a modelled row's is the model's
        # assumption, said as one (a ratio there would only restate it).
        if e.ratio is not None:
            return f"{e.ratio:.2f} measured"
        if e.source != "modelled" or not e.seconds or e.limit_seconds is None or plan.target.kind != "cuda":
            return "-"  # partly measured: neither a finding nor the model's assumption
        return f"{e.limit_seconds / e.seconds:.0%} assumed"

    def cells(e: Estimate) -> tuple:
        return hours(e.seconds), e.source, hours(e.limit_seconds), share(e)

    parts, total = plan.part_estimates(only_missing, group_size)
    rows = [(p.part, p.runs, f"{p.flops / 1e15:,.0f}", *cells(p.fp32), *cells(p.tf32))
            for p in [*parts, total]]
    headers = ("part", "runs", "PFLOP", "fp32 h", "fp32 source", "fp32 at peak h", "share of peak",
               "tf32 h", "tf32 source", "tf32 at peak h", "share of peak")
    text = f"estimate for {plan.target.describe()}\n" + tabulate(rows, headers=headers, disable_numparse=True)
    modelled = any(not e.source.startswith("measured") and e.seconds is not None
                   for p in [*parts, total] for e in (p.fp32, p.tf32))
    if modelled and plan.target.kind == "cuda":
        text += "\n" + MODEL_BASIS
    return text


# What a modelled GPU row rests on, said under the table (``claimbench.machine.peaks.ACHIEVABLE_FRACTION``).
MODEL_BASIS = (
    f"modelled rows: FLOPs over {ACHIEVABLE_FRACTION['fp32']:.0%} of the fp32 peak ({ACHIEVABLE_FRACTION['tf32']:.0%} "
    "of the TF32 peak), shares of NVIDIA's ResNet-50 training at 224 px, batch 112-256: dense convolutions. "
    "The same share is assumed for every layer kind: the grouped convolutions of stacked runs (16 runs at "
    "4-32 px: CIFAR, TinyImageNet) likely reach less, the dense single-run ImageNet convolutions about that. "
    "Measure it (`claimbench gpu-check` at real size, `claimbench verify --dry-run` on the GPU) to price a part from "
    "its own rate.")


def plan_runs(specs: list[ClaimSpec], tier: str, store: RunStore, device: str | None = None,
              tables: list = ()) -> Plan:
    """``tables`` (TableSpecs): at the full tier every cell's runs join the plan, deduplicated by key."""
    from claimbench.cache import run_key

    by_key: dict[str, PlannedRun] = {}
    not_run = {}

    def need(config: RunConfig, tags: str, tag: str) -> None:
        """Plan ``config`` (once per cache key) and note who needs it: a claim or a table cell."""
        key = run_key(config)
        run = by_key.get(key)
        if run is None:
            steps, flops = run_cost(config)
            run = by_key[key] = PlannedRun(key, config, [], store.contains(key), steps, flops)
        if tag not in getattr(run, tags):
            getattr(run, tags).append(tag)

    for spec in specs:
        t = spec.tier(tier)
        if t.not_run:
            not_run[spec.id] = t.not_run
            continue
        for config in t.configs():
            need(config, "claims", spec.id)
    # The paper's tables: the full tier trains every configuration they report.
    for table in tables if tier == "full" else ():
        for cell in table.cells:
            for config in cell.configs:
                need(config, "cells", cell.id)
    # Longest first, so parallel workers finish together.
    runs = sorted(by_key.values(), key=lambda r: (-r.flops, r.key))
    device = device or detect.detected_device()
    return Plan(tier, runs, device, not_run, StepTimes(store.root).load(detect.machine_name(device)),
                machine_target(device))


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days ({math.ceil(hours):,} h)"

