"""Measured step times: which steps of a timed run are the steady state, their median, and the
file in the cache root that keeps them per machine and kind of group.

In:  a dry run's (or gpu-check's) step stamps, ``[[steps done, seconds], ...]``, and the phases
     the training loop recorded (``cuda_graph_phases``: warm-ups, captures); the cache root.
Out: ``unsteady_steps`` (the steps whose time is not the steady state), ``steady_median`` (the
     median seconds of the others), ``StepTime`` for one kind of group, and ``StepTimes``,
     ``<cache>/step-times.json``, written through ``claimbench.cache.side_records`` (merged under
     its lock: parallel dry runs keep each other's times). No torch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from claimbench.cache.side_records import update_json

log = logging.getLogger(__name__)

STEP_TIMES_FILE = "step-times.json"

# How step times are measured now: the median of steady-state steps only (``steady_step_time``).
# Times stored by earlier versions (the median over every timed step, warm-ups included) lack it
# and are ignored rather than trusted.
STEADY_STATE = "steady-state median"


@dataclass(frozen=True)
class StepTime:
    """Seconds per training step of a group of ``group_size`` runs (median over a dry run's
    steady-state steps)."""

    step_s: float
    group_size: int
    steps: int  # steady-state steps the median was taken over
    measured_at: str
    method: str = STEADY_STATE

    @property
    def run_step_s(self) -> float:
        # Linear in the group size: exact on a CPU (arithmetic-bound), pessimistic on a GPU.
        return self.step_s / self.group_size


def unsteady_steps(phases: list[dict], total: int) -> set[int]:
    """The (0-based) steps of a run whose time is not the steady state, from the phases the loop
    recorded (``cuda_graph_phases`` in provenance, ``outcome.PhaseRun``):

    - step 0: it allocates memory, creates the optimizers' state and, on CUDA, autotunes every
      convolution (cuDNN benchmark mode);
    - each eager warm-up step before a CUDA graph capture (the loop's ``StepGraph.WARMUP_STEPS``,
      3 at the start of the run): eager, so slower than the graph replays that follow;
    - each capture step (one per learning-rate phase on a graphed group: the graph is captured
      again at every phase change), and a step whose capture failed and that then ran eagerly;
    - any step no phase record covers (steps before a resume), whose run is unknown.
    On a CPU (no graphs) that leaves out step 0 only; on a graphed GPU group 3 warm-ups and one
    capture per phase: a dry run of N steps over P phases times N - 3 - P steps."""
    skip = {0}
    covered: set[int] = set()
    for p in phases:
        first, steps = int(p["first_step"]), int(p["steps"])
        if p.get("phase") is None:
            continue
        covered.update(range(first, first + steps))
        warmups = int(p.get("warmup_steps") or 0)
        captures = int(p.get("captures") or 0) + (1 if p.get("error") else 0)
        skip.update(range(first, first + min(steps, warmups + captures)))
    return skip | (set(range(total)) - covered)


def steady_median(segments: list[list[tuple[int, float]]], phases: list[dict] | None,
                  first_timed_unsteady: bool = False) -> tuple[float, int] | None:
    """(median seconds per steady-state step, how many steps it was taken over) across the
    processes' stamps ``segments`` (each ``[(steps done, seconds), ...]``), or None when no steady
    step was timed. An interval between two stamps counts only if none of its steps is in
    ``unsteady_steps(phases)``; without a phase record (``phases`` None) only step 0 is left out.
    ``first_timed_unsteady``: each process's first timed step is left out too (it includes that
    process's set-up, as in gpu-check's resumed path)."""
    per_step: list[float] = []
    for segment in segments:
        stamps = sorted((int(s), float(t)) for s, t in segment)
        if len(stamps) < 2:
            continue
        skip = unsteady_steps(phases, stamps[-1][0]) if phases is not None else {0}
        if first_timed_unsteady:
            skip = skip | {stamps[0][0] - 1}
        for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]):
            if s1 > s0 and not skip.intersection(range(s0, s1)):
                per_step += [(t1 - t0) / (s1 - s0)] * (s1 - s0)
    if not per_step:
        return None
    per_step.sort()
    mid = len(per_step) // 2
    median = per_step[mid] if len(per_step) % 2 else (per_step[mid - 1] + per_step[mid]) / 2
    return median, len(per_step)


def steady_step_time(info: dict, phases: list[dict] | None, group_size: int) -> StepTime | None:
    """The median seconds per steady-state step of one dry-run group, or None when no steady
    step was timed (too few steps) or the record cannot say which steps were steady.

    ``info["step_ends"]``: ``[[steps done, seconds], ...]`` stamped after each recorded step
    (``group.train_group``), one process's stamps (``steady_median``)."""
    ends = info.get("step_ends")
    if not ends or phases is None:
        return None
    found = steady_median([ends], phases)
    if found is None:
        return None
    median, steps = found
    return StepTime(median, group_size, steps, str(info.get("measured_at", "")))


class StepTimes:
    """Measured step times per machine and kind of group, in ``<cache root>/step-times.json``:
    ``{machine: {group_id: {step_s, group_size, steps, measured_at, method}}}``."""

    def __init__(self, root: Path):
        self.path = Path(root) / STEP_TIMES_FILE

    def load(self, machine: str) -> dict[str, StepTime]:
        try:
            raw = json.loads(self.path.read_text()).get(machine, {})
            times = {gid: StepTime(**v) for gid, v in raw.items() if v.get("method") == STEADY_STATE}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable step times %s: %s", self.path, e)
            return {}
        if len(times) < len(raw):
            log.warning("ignoring %d step times in %s measured with warm-up steps included; a new dry run "
                        "measures the steady state", len(raw) - len(times), self.path)
        return times

    def save(self, machine: str, times: dict[str, StepTime]) -> None:
        """Merge ``times`` into ``machine``'s, under the file's lock (``side_records.update_json``):
        a dry run that finishes at the same time as another keeps both's times."""

        def merge(raw: object) -> dict:
            raw = raw if isinstance(raw, dict) else {}
            raw.setdefault(machine, {}).update({gid: asdict(t) for gid, t in times.items()})
            return raw

        update_json(self.path, merge, indent=1, sort_keys=True)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


