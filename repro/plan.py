"""Selected claims at a tier -> the deduplicated runs they need, with a compute estimate.

In:  ClaimSpecs, a tier name, the run store.
Out: ``Plan``: one ``PlannedRun`` per distinct cache key (which claims need it, whether it is
cached, its steps and FLOPs) and the estimated time on the detected device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from repro.cache import RunStore, run_key
from repro.config import RunConfig, phase_steps
from repro.data.embedded import DIGITS_TRAIN, SHAPES_DEFAULT_CLASSES, SHAPES_DEFAULT_SIZE, SHAPES_DEFAULT_TRAIN
from repro.spec.claims import ClaimSpec
from repro.train.models import flops_per_image, net_spec

# (train images, image side, channels, classes) without loading anything.
DATASET_SHAPES = {
    "digits": (DIGITS_TRAIN, 8, 3, 10),
    "cifar10": (50000, 32, 3, 10),
    "cifar100": (50000, 32, 3, 100),
    "tinyimagenet": (100000, 64, 3, 200),
    "imagenet": (1281167, 224, 3, 1000),
}
SHAPES_DEFAULTS = (SHAPES_DEFAULT_TRAIN, SHAPES_DEFAULT_SIZE, 3, SHAPES_DEFAULT_CLASSES)

# Time model per training step: a fixed overhead (kernel launches, Python) plus arithmetic at an
# effective rate. CPU: fitted on the 2-core development machine (BasicNet width 1 at 32x32: 343
# ms/step for 42 GFLOP; width 0.375 at 8x8: 8 ms/step for 0.4 GFLOP). CUDA: a model for an
# H100-class GPU at batch 40 (fp32), not a measurement; benchmarks/throughput.py is where a
# measured figure belongs.
STEP_MODEL = {"cpu": (4e-3, 120e9), "cuda": (3e-3, 40e12)}


def data_shape(config: RunConfig) -> tuple[int, int, int, int]:
    d = config.data
    if d.dataset.startswith("shapes"):
        n, side, ch, k = SHAPES_DEFAULTS
        n, k = d.train_size or n, d.num_classes or k
    else:
        n, side, ch, k = DATASET_SHAPES[d.dataset]
    return n, d.image_size or side, ch, k


def run_cost(config: RunConfig) -> tuple[int, float]:
    """(training steps, training FLOPs); backward counted as 2x forward."""
    n, side, ch, k = data_shape(config)
    steps = sum(phase_steps(config.train, n))
    spec = net_spec(config.model, ch, side, k, config.data.dataset)
    return steps, 3.0 * flops_per_image(spec, side) * config.train.batch_size * steps


def estimate_seconds(steps: int, flops: float, device: str) -> float:
    overhead, rate = STEP_MODEL["cuda" if device.startswith("cuda") else "cpu"]
    return steps * overhead + flops / rate


@dataclass
class PlannedRun:
    key: str
    config: RunConfig
    claims: list[str] = field(default_factory=list)
    cached: bool = False
    steps: int = 0
    flops: float = 0.0
    cells: list[str] = field(default_factory=list)  # paper-table cells (repro.spec.tables) this run fills


@dataclass
class Plan:
    tier: str
    runs: list[PlannedRun]
    device: str
    claims_not_run: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.cached]

    def estimate_seconds(self, only_missing: bool = True) -> float:
        runs = self.missing if only_missing else self.runs
        return sum(estimate_seconds(r.steps, r.flops, self.device) for r in runs)

    def to_dict(self) -> dict:
        return {
            "tier": self.tier,
            "device": self.device,
            "runs": [
                {"key": r.key, "summary": r.config.summary(), "claims": r.claims, "cells": r.cells, "cached": r.cached,
                 "steps": r.steps, "flops": r.flops,
                 "estimated_s": round(estimate_seconds(r.steps, r.flops, self.device), 1),
                 "config": r.config.to_dict()}
                for r in self.runs
            ],
            "claims_not_run": self.claims_not_run,
            "total_runs": len(self.runs),
            "cached_runs": len(self.runs) - len(self.missing),
            "estimated_s_missing": round(self.estimate_seconds(), 1),
            "estimated_s_all": round(self.estimate_seconds(only_missing=False), 1),
        }


def detected_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_runs(specs: list[ClaimSpec], tier: str, store: RunStore, device: str | None = None,
              tables: list = ()) -> Plan:
    """``tables`` (TableSpecs): at the full tier every cell's runs join the plan, deduplicated by key."""
    by_key: dict[str, PlannedRun] = {}
    not_run = {}
    for spec in specs:
        t = spec.tier(tier)
        if t.not_run:
            not_run[spec.id] = t.not_run
            continue
        for config in t.configs():
            key = run_key(config)
            run = by_key.get(key)
            if run is None:
                steps, flops = run_cost(config)
                run = by_key[key] = PlannedRun(key, config, [], store.contains(key), steps, flops)
            if spec.id not in run.claims:
                run.claims.append(spec.id)
    # --- paper-table cells (issue 10): the full tier trains every configuration the tables report.
    for table in tables if tier == "full" else ():
        for cell in table.cells:
            for config in cell.configs:
                key = run_key(config)
                run = by_key.get(key)
                if run is None:
                    steps, flops = run_cost(config)
                    run = by_key[key] = PlannedRun(key, config, [], store.contains(key), steps, flops)
                if cell.id not in run.cells:
                    run.cells.append(cell.id)
    # --- end paper-table cells
    # Longest first, so parallel workers finish together.
    runs = sorted(by_key.values(), key=lambda r: (-r.flops, r.key))
    return Plan(tier, runs, device or detected_device(), not_run)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days ({math.ceil(hours):,} h)"
