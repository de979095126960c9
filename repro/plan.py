"""Selected claims at a tier -> the deduplicated runs they need, their groups and a time estimate.

In:  ClaimSpecs, a tier name, the run store (which runs are cached; measured step times).
Out: ``Plan``: one ``PlannedRun`` per distinct cache key (which claims need it, whether it is
cached, its steps and FLOPs), the fused groups they train in (``form_groups``) and the
estimated time on the target device: *measured* where a dry run (``repro verify --dry-run``)
timed that kind of group on this machine (``StepTimes``, ``<cache>/step-times.json``),
*modelled* (``STEP_MODEL``) elsewhere, and the plan says which.

No torch here: sizes come from ``repro.data.catalog``, FLOPs from ``repro.netshape``, the device
from the driver's files. The cache key (``repro.cache``) and the group key
(``repro.config.group_key``) are imported where they are used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from repro.config import RunConfig, phase_steps
from repro.data.catalog import data_shape as dataset_shape
from repro.netshape import flops_per_image, net_spec

if TYPE_CHECKING:
    from repro.cache import RunStore
    from repro.spec.claims import ClaimSpec

log = logging.getLogger(__name__)

# Time model per training step and run: a fixed overhead (kernel launches, Python) plus arithmetic
# at an effective rate. CPU: fitted on the 2-core development machine (BasicNet width 1 at 32x32:
# 343 ms/step for 42 GFLOP; width 0.375 at 8x8: 8 ms/step for 0.4 GFLOP). CUDA: a model for an
# H100-class GPU at batch 40 (fp32), not a measurement. A dry run replaces it with a measurement.
STEP_MODEL = {"cpu": (4e-3, 120e9), "cuda": (3e-3, 40e12)}
STEP_TIMES_FILE = "step-times.json"


def data_shape(config: RunConfig) -> tuple[int, int, int, int]:
    return dataset_shape(config.data)


def run_cost(config: RunConfig) -> tuple[int, float]:
    """(training steps, training FLOPs); backward counted as 2x forward."""
    n, side, ch, k = data_shape(config)
    steps = sum(phase_steps(config.train, n))
    spec = net_spec(config.model, ch, side, k, config.data.dataset)
    return steps, 3.0 * flops_per_image(spec, side) * config.train.batch_size * steps


def estimate_seconds(steps: int, flops: float, device: str) -> float:
    """Modelled seconds of one run trained alone."""
    overhead, rate = STEP_MODEL["cuda" if device.startswith("cuda") else "cpu"]
    return steps * overhead + flops / rate


# -- the machine --------------------------------------------------------------------------------


def detected_device() -> str:
    """'cuda' when an NVIDIA GPU is visible to this process, else 'cpu' (without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "cpu"
    if _nvidia_gpu_names():
        return "cuda"
    # A driver without nvidia-smi on the PATH (some containers) still lists its GPUs here.
    gpus = Path("/proc/driver/nvidia/gpus")
    return "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"


def _nvidia_gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_name(device: str) -> str:
    """What a step time was measured on: the GPU model, or the CPU model and its core count."""
    if device.startswith("cuda"):
        names = _nvidia_gpu_names()
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return f"cuda {names[index] if index < len(names) else 'unknown GPU'}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {model} x{os.cpu_count() or 1}"


# -- groups --------------------------------------------------------------------------------------


def default_group_size(device: str, jobs: int) -> int:
    """Runs per fused group. On a GPU a batch-40 step is launch-bound: stack many. On CPU a
    single process gains from stacking (1.5x at 2 threads, 1.4x at 1 thread on the 2-core
    development machine, benchmarks/throughput.py), but with one job per core the cores are
    already busy: the smoke tier took 9.4 min with groups of 4 and 8.5 min unfused at -j 2
    (33 vs 30 s per run), so parallel CPU jobs train unfused."""
    if device.startswith("cuda"):
        return 16
    return 4 if jobs == 1 else 1


def group_id(config: RunConfig) -> str:
    """A short stable name of the kind of group a run trains in (a digest of ``group_key``)."""
    from repro.config import group_key

    return hashlib.sha256(group_key(config).encode()).hexdigest()[:16]


def form_groups(runs: list[PlannedRun], group_size: int) -> list[list[PlannedRun]]:
    """Runs that can train together (``loop.group_key``), in chunks of at most group_size,
    largest work first so that parallel jobs finish together."""
    by_key: dict[str, list[PlannedRun]] = {}
    for r in runs:
        by_key.setdefault(group_id(r.config), []).append(r)
    size = max(1, group_size)
    groups = [members[i : i + size] for members in by_key.values() for i in range(0, len(members), size)]
    return sorted(groups, key=lambda g: -sum(r.flops for r in g))


def group_label(group: list[PlannedRun]) -> str:
    return group[0].config.summary() + (f" +{len(group) - 1}" if len(group) > 1 else "")


# -- measured step times --------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTime:
    """Seconds per training step of a group of ``group_size`` runs (median over a dry run)."""

    step_s: float
    group_size: int
    steps: int  # steps the median was taken over
    measured_at: str

    @property
    def run_step_s(self) -> float:
        # Linear in the group size: exact on a CPU (arithmetic-bound), pessimistic on a GPU.
        return self.step_s / self.group_size


class StepTimes:
    """Measured step times per machine and kind of group, in ``<cache root>/step-times.json``:
    ``{machine: {group_id: {step_s, group_size, steps, measured_at}}}``."""

    def __init__(self, root: Path):
        self.path = Path(root) / STEP_TIMES_FILE

    def load(self, machine: str) -> dict[str, StepTime]:
        try:
            raw = json.loads(self.path.read_text())
            return {gid: StepTime(**v) for gid, v in raw.get(machine, {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable step times %s: %s", self.path, e)
            return {}

    def save(self, machine: str, times: dict[str, StepTime]) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raw = {}
        raw.setdefault(machine, {}).update({gid: asdict(t) for gid, t in times.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(raw, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- the plan ------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    key: str
    config: RunConfig
    claims: list[str] = field(default_factory=list)
    cached: bool = False
    steps: int = 0
    flops: float = 0.0
    cells: list[str] = field(default_factory=list)  # paper-table cells (repro.spec.tables) this run fills


@dataclass(frozen=True)
class GroupEstimate:
    label: str
    size: int
    steps: int
    seconds: float
    measured: bool


@dataclass
class Plan:
    tier: str
    runs: list[PlannedRun]
    device: str
    claims_not_run: dict[str, str] = field(default_factory=dict)
    # Measured step times on this machine by group id (empty: everything is modelled).
    step_times: dict[str, StepTime] = field(default_factory=dict)

    @property
    def missing(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.cached]

    def groups(self, group_size: int | None = None, only_missing: bool = True) -> list[list[PlannedRun]]:
        runs = self.missing if only_missing else self.runs
        return form_groups(runs, group_size or default_group_size(self.device, 1))

    def group_estimates(self, group_size: int | None = None, only_missing: bool = True) -> list[GroupEstimate]:
        """Seconds per group trained one group at a time: measured step time x steps where a dry
        run timed this kind of group here, else the model (one run at a time, summed)."""
        out = []
        for g in self.groups(group_size, only_missing):
            measured = self.step_times.get(group_id(g[0].config))
            steps = max(r.steps for r in g)
            if measured is not None:
                seconds = measured.run_step_s * len(g) * steps
            else:
                seconds = sum(estimate_seconds(r.steps, r.flops, self.device) for r in g)
            out.append(GroupEstimate(group_label(g), len(g), steps, seconds, measured is not None))
        return out

    def estimate_seconds(self, only_missing: bool = True, group_size: int | None = None) -> float:
        return sum(e.seconds for e in self.group_estimates(group_size, only_missing))

    def estimate_source(self, only_missing: bool = True) -> str:
        """'measured', 'modelled' or 'partly measured' (by groups)."""
        kinds = {e.measured for e in self.group_estimates(only_missing=only_missing)}
        return "partly measured" if len(kinds) > 1 else "measured" if kinds == {True} else "modelled"

    def to_dict(self) -> dict:
        return {
            "tier": self.tier,
            "device": self.device,
            "runs": [
                {"key": r.key, "summary": r.config.summary(), "claims": r.claims, "cells": r.cells, "cached": r.cached,
                 "steps": r.steps, "flops": r.flops,
                 "modelled_s": round(estimate_seconds(r.steps, r.flops, self.device), 1),
                 "config": r.config.to_dict()}
                for r in self.runs
            ],
            "groups": [asdict(e) for e in self.group_estimates(only_missing=False)],
            "claims_not_run": self.claims_not_run,
            "total_runs": len(self.runs),
            "cached_runs": len(self.runs) - len(self.missing),
            "estimated_s_missing": round(self.estimate_seconds(), 1),
            "estimated_s_all": round(self.estimate_seconds(only_missing=False), 1),
            "estimate": self.estimate_source(only_missing=False),
        }


def plan_runs(specs: list[ClaimSpec], tier: str, store: RunStore, device: str | None = None,
              tables: list = ()) -> Plan:
    """``tables`` (TableSpecs): at the full tier every cell's runs join the plan, deduplicated by key."""
    from repro.cache import run_key

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
    device = device or detected_device()
    return Plan(tier, runs, device, not_run, StepTimes(store.root).load(machine_name(device)))


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days ({math.ceil(hours):,} h)"
