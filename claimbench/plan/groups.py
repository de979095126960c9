"""The runs of a plan and the fused groups they train in.

In:  ``RunConfig``s (their group key, ``claimbench.config.group_key``), this machine's device and
     memory (``claimbench.machine.detect``).
Out: ``PlannedRun`` (one distinct run: its cache key, who needs it, whether it is cached, its
     steps and FLOPs), ``form_groups`` (runs that train together, largest work first),
     ``group_id`` and ``group_label`` (a kind of group's stable name and its label), and the
     defaults of ``-j`` and of the group size on this machine. No torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable

from claimbench.config import RunConfig, group_key, stackable
from claimbench.machine import detect


@dataclass
class PlannedRun:
    key: str
    config: RunConfig
    claims: list[str] = field(default_factory=list)
    cached: bool = False
    steps: int = 0
    flops: float = 0.0
    cells: list[str] = field(default_factory=list)  # paper-table cells (claimbench.spec.tables) this run fills


def default_group_size(device: str, jobs: int) -> int:
    """Runs per fused group. On a GPU a batch-40 step is launch-bound: stack many (16 until
    ``claimbench gpu-check`` has measured a kind on this machine: training then groups the kind
    by the K its sweep chose, ``claimbench.execute.measured_group_size``). On CPU a
    single process gains from stacking (1.5x at 2 threads, 1.4x at 1 thread on the 2-core
    development machine, benchmarks/throughput.py), but with one job per core the cores are
    already busy: the smoke tier took 9.4 min with groups of 4 and 8.5 min unfused at -j 2
    (33 vs 30 s per run), so parallel CPU jobs train unfused."""
    if device.startswith("cuda"):
        return 16
    return 4 if jobs == 1 else 1


# What one CPU training job needs in memory: `claimbench run examples/digits-adam-l2.yaml` peaked at
# 0.47 GB resident, torch included (/usr/bin/time -v on the 2-core development machine,
# 2026-12-07); twice that leaves room for the smoke tier's larger images.
CPU_JOB_BYTES = 1 << 30


def default_jobs(device: str) -> int:
    """``-j`` when it is not given. A GPU trains one group at a time (its groups stack 16 runs).
    A CPU trains one group per core, as many as the available memory holds (``CPU_JOB_BYTES``
    each): one process with every core's torch threads is the slowest way when other work
    competes for the cores, as a user measured on a loaded 2-core machine (19.5 min at -j 1
    against 4 min at -j 2 for comparable runs), and even idle the smoke tier took 8.5 min at -j 2
    against 9.4 min stacked at -j 1 (``default_group_size``)."""
    if device.startswith("cuda"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (a container's share)
    except AttributeError:
        cores = os.cpu_count() or 1
    memory = detect.available_memory()
    return max(1, min(cores, memory // CPU_JOB_BYTES if memory is not None else cores))



def group_id(config: RunConfig) -> str:
    """A short stable name of the kind of group a run trains in (a digest of ``group_key``)."""
    return hashlib.sha256(group_key(config).encode()).hexdigest()[:16]


def form_groups(runs: list[PlannedRun], group_size: int,
                size_of: Callable[[RunConfig], int] | None = None) -> list[list[PlannedRun]]:
    """Runs that can train together (``config.group_key``), in chunks of at most group_size
    (``size_of(config)``: the size for the runs of that config's key instead, as gpu-check chose
    it per kind on a GPU), largest work first so that parallel jobs finish together."""
    by_key: dict[str, list[PlannedRun]] = {}
    for i, r in enumerate(runs):
        # A plug-in network that is not stackable (claimbench.plugins.ModelPlugin.stackable), and a
        # trainer's run, trains in a group of its own.
        alone = not stackable(r.config)
        by_key.setdefault(f"{group_id(r.config)} {i}" if alone else group_id(r.config), []).append(r)
    groups = []
    for members in by_key.values():
        size = max(1, size_of(members[0].config) if size_of is not None else group_size)
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return sorted(groups, key=lambda g: -sum(r.flops for r in g))


def group_label(group: list[PlannedRun]) -> str:
    return group[0].config.summary() + (f" +{len(group) - 1}" if len(group) > 1 else "")
