"""How many runs one group of a kind stacks (K), from measured memory and a sweep of step times.

In:  one kind's representative group (``KindCase``), the device, the fast features the check kept;
     or, as the tests give it, any ``measure(k) -> Measured`` and the device's memory.
Out: ``GroupSize``: K, why (one line), the memory cap and every measurement; the gpu-check record
     keeps it per kind (``record.write_record``), the report shows it (``report.render``) and
     training on a GPU groups the kind's runs by it (``record.ChosenGroupSizes``).

Why here and not in ``claimbench.plan``: choosing K means training groups on the device (torch),
and the plan loads no torch; the plan's part is what it already had, a size per group key
(``form_groups``). What is pure arithmetic (``choose_group_size``) takes its measurements as a
function, so it is tested on a CPU with a GPU's numbers.

How K is chosen on a CUDA device:
- K runs through SWEEP (1, 4, 8, 16, 32; not past the runs the tier has of the kind), smallest
  first. Each K trains K runs stacked for SWEEP_STEPS steps on the fast path the check kept (its
  switched-off features off) and measures both the peak memory
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, above what was
  allocated before) and the steady step
  (the plan's ``steady_median``: warm-ups, captures and the first timed step left out). One
  training gives both, so measuring memory costs no extra training.
- The memory cap: a group's peak grows linearly in K (each run's activations, weights and
  optimizer state; the data and the allocator's pools are shared). Before each K, the line
  through the two largest K measured (through the origin after one: an upper bound), plus the
  bytes the real dataset holds on the device and the fabricated one does not, predicts its peak;
  a K predicted above MEMORY_FRACTION of the device's memory is not tried, nor any larger. The
  cap is the largest K the line says fits.
- Out of memory at a K anyway: the group is tried again at half its size (halved again if need
  be), said in one line, and no larger K is tried.
- The choice: the most run-steps per second (K / seconds per step of the group), preferring the
  smallest K within WITHIN of the best: it needs less memory and a failed group loses fewer runs.
On a CPU, in a quick check (shrunk networks) or where stacking is switched off: no sweep, and
the K that training uses there, with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from claimbench.run_failures import out_of_memory

SWEEP = (1, 4, 8, 16, 32)
# Steps per K: 16 in two learning-rate phases leave about 9 steady steps after the warm-ups and
# one capture per phase; every K of 27 kinds is trained, so the sweep stays short.
SWEEP_STEPS = 16
# Of the device's memory, the share a group's measured peak may fill: the peak counts tensors
# only; the CUDA context (about 0.5 GiB), cuDNN's workspaces outside the allocator and its
# fragmentation (reserved above allocated) take the rest.
MEMORY_FRACTION = 0.85
# A smaller K this close to the best rate is preferred: half the memory for 3% is a good trade,
# and a 3% difference is within what two timings of a few steps differ by.
WITHIN = 0.03
# The test split beside the training set, at most 0.3 of it for the built-in datasets (digits:
# 397 of 1,400; CIFAR: 10,000 of 50,000): the real data's resident size counts it too.
TEST_SHARE = 0.3
GiB = 2**30


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


@dataclass(frozen=True)
class Measured:
    """One K trained: its peak device memory and steady seconds per step (None: not timed)."""

    k: int
    peak_bytes: int | None
    step_s: float | None

    @property
    def rate(self) -> float | None:
        """Run-steps per second: K runs advance one step each per step of the group."""
        return self.k / self.step_s if self.step_s else None


@dataclass(frozen=True)
class GroupSize:
    """The runs per group chosen for a kind, and why."""

    k: int
    why: str
    cap: int | None = None  # the most runs the measured memory says fit; None: not measured
    device_bytes: int | None = None
    measured: tuple[Measured, ...] = ()

    def to_dict(self) -> dict:
        return {"k": self.k, "why": self.why, "cap": self.cap, "device_bytes": self.device_bytes,
                "measured": [[m.k, m.peak_bytes, m.step_s] for m in self.measured]}

    @classmethod
    def from_dict(cls, raw: object) -> "GroupSize":
        """Raises ValueError naming what is wrong (the record is read from a folder others may fill)."""
        if not isinstance(raw, dict):
            raise ValueError("expected an object")
        k, why, cap = raw.get("k"), raw.get("why"), raw.get("cap")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k: expected a whole number of runs, at least 1, not {k!r:.40}")
        if not isinstance(why, str) or not why.strip():
            raise ValueError("why: expected the reason K was chosen")
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"cap: expected a whole number of runs or null, not {cap!r:.40}")
        try:
            measured = tuple(Measured(int(a), None if b is None else int(b), None if c is None else float(c))
                             for a, b, c in raw.get("measured", []))
        except (TypeError, ValueError):
            raise ValueError("measured: expected [K, peak bytes, seconds per step] rows") from None
        device = raw.get("device_bytes")
        return cls(k, why, cap, device if isinstance(device, int) else None, measured)


# -- the choice (no torch: the measurements come in as a function) ---------------------------------


def choose_group_size(measure: Callable[[int], Measured], device_bytes: int, *, resident_bytes: int = 0,
                      most: int | None = None, say: Callable[[str], None] = print, label: str = "") -> GroupSize:
    """K for one kind from ``measure(k)`` over ``SWEEP`` (up to ``most`` runs: the tier's runs of
    the kind), within ``MEMORY_FRACTION`` of ``device_bytes``; ``resident_bytes``: what the real
    training holds on the device besides what ``measure`` saw (its dataset). An out-of-memory
    error at K retries at K/2 with one line through ``say``; any other error propagates."""
    limit = MEMORY_FRACTION * device_bytes
    sweep = [k for k in SWEEP if most is None or k < most] + ([most] if most is not None and most <= max(SWEEP) else [])
    done: dict[int, Measured] = {}
    notes: list[str] = []
    failed_at: int | None = None  # the K that ran out of memory
    for k in sweep:
        predicted = _predict(done, k, resident_bytes)
        if predicted is not None and predicted > limit:
            notes.append(f"K={k} not tried: {_gib(predicted)} predicted > {MEMORY_FRACTION:.0%} of {_gib(device_bytes)}")
            break
        m = _measure_halving(measure, k, say, label)
        done[m.k] = m
        if m.k < k:
            failed_at = k
            notes.append(f"K={k} ran out of memory, K={m.k} did not")
            break
    cap = _cap(done, limit, resident_bytes)
    if failed_at is not None and cap is not None:
        cap = min(cap, failed_at - 1)  # measured, not predicted: that K does not fit
    fits = [m for m in done.values() if m.peak_bytes is None or m.peak_bytes + resident_bytes <= limit]
    timed = sorted((m for m in fits if m.rate), key=lambda m: m.k)
    memory = ""
    if cap is not None:
        data = f", {_gib(resident_bytes)} of it the dataset" if resident_bytes else ""
        memory = f"memory cap {cap} runs ({MEMORY_FRACTION:.0%} of {_gib(device_bytes)}{data})"
    if not timed:
        k = max((m.k for m in fits), default=1)
        why = f"K={k}: no steady step timed" + (" (the largest that fits)" if fits else "; even one run may not fit")
        return GroupSize(k, "; ".join(x for x in (why, memory, *notes) if x), cap, device_bytes, tuple(done.values()))
    best = max(timed, key=lambda m: m.rate or 0.0)
    chosen = next(m for m in timed if (m.rate or 0.0) >= (1 - WITHIN) * (best.rate or 0.0))
    why = f"K={chosen.k}: {chosen.rate:,.0f} run-steps/s"
    if chosen is not best:
        more = (f", needs {best.peak_bytes / chosen.peak_bytes:.1f}x the memory"
                if best.peak_bytes and chosen.peak_bytes else "")
        why += f"; K={best.k} within {WITHIN:.0%} ({best.rate:,.0f}){more}"
    sweep_text = "sweep " + ", ".join(f"K={m.k} {m.rate:,.0f}" if m.rate else f"K={m.k} untimed"
                                      for m in sorted(done.values(), key=lambda m: m.k))
    return GroupSize(chosen.k, "; ".join(x for x in (why, sweep_text, memory, *notes) if x), cap, device_bytes,
                     tuple(sorted(done.values(), key=lambda m: m.k)))


def _measure_halving(measure: Callable[[int], Measured], k: int, say: Callable[[str], None], label: str) -> Measured:
    """``measure(k)``; out of device memory, again at half the group until one run (which may raise)."""
    while True:
        try:
            return measure(k)
        except Exception as e:  # noqa: BLE001  (only out of device memory is handled; the rest re-raised)
            if out_of_memory(e) != "device" or k == 1:
                raise
        say(f"  out of GPU memory at K={k}{f' ({label})' if label else ''}: retrying at K={k // 2}, half the group")
        k //= 2


def _line(done: dict[int, Measured]) -> tuple[float, float] | None:
    """(bytes at K=0, bytes per run) through the two largest K measured with a peak; through the
    origin with one (an upper bound: the shared part is counted per run)."""
    points = sorted((m.k, m.peak_bytes) for m in done.values() if m.peak_bytes is not None)
    if not points:
        return None
    if len(points) == 1:
        return 0.0, points[0][1] / points[0][0]
    (k1, p1), (k2, p2) = points[-2:]
    per_run = max(0.0, (p2 - p1) / (k2 - k1))
    return p2 - per_run * k2, per_run


def _predict(done: dict[int, Measured], k: int, resident_bytes: int) -> float | None:
    line = _line(done)
    return None if line is None else line[0] + line[1] * k + resident_bytes


def _cap(done: dict[int, Measured], limit: float, resident_bytes: int) -> int | None:
    """The largest K whose predicted peak fits ``limit`` (None: nothing measured)."""
    line = _line(done)
    if line is None:
        return None
    shared, per_run = line
    if per_run <= 0:  # no growth measured: what was measured is all that is known to fit
        return max(done)
    return max(1, int((limit - resident_bytes - shared) // per_run))


# -- where no sweep runs --------------------------------------------------------------------------


def without_sweep(device_type: str, quick: bool, stacked_off: bool) -> GroupSize | None:
    """The K of a check that runs no sweep, with the reason; None where the sweep runs."""
    from claimbench.plan.groups import default_group_size

    if device_type != "cuda":
        k = default_group_size("cpu", 1)
        return GroupSize(k, f"CPU: no sweep (no GPU memory to measure; a CPU's step times say nothing of a GPU's); "
                            f"a CPU trains {k} runs per group at -j 1, 1 at -j 2 or more")
    if stacked_off:
        return GroupSize(1, "stacking switched off for this kind: one run per group, no sweep")
    if quick:
        k = default_group_size("cuda", 1)
        return GroupSize(k, f"quick check on shrunk networks: no sweep; the default {k}")
    return None


# -- on the device ---------------------------------------------------------------------------------


def resident_data_bytes(config) -> int:
    """Bytes the real dataset holds on the device for the whole run (float32 images, training and
    test split; labels are negligible): 0 for folder data, decoded per batch on the host."""
    from claimbench.gpu_check.kinds import FOLDER_DATASETS
    from claimbench.plan.estimate import data_shape

    if config.data.dataset in FOLDER_DATASETS:
        return 0
    n, side, channels, _ = data_shape(config)
    return int(4 * n * channels * side * side * (1 + TEST_SHARE))


def device_measure(configs: list, device, off: frozenset[str], backend, graphs: bool) -> Callable[[int], Measured]:
    """``measure(k)`` on a CUDA device: K runs like ``configs`` (cycled, each copy its own seed)
    stacked on fabricated data for SWEEP_STEPS steps on the fast path without the features in
    ``off``; the peak memory of that training and its steady step median."""
    import torch

    from claimbench.gpu_check.workload import fabricated_data, window
    from claimbench.plan.step_times import steady_median
    from claimbench.train.loop import train_models

    base = [window(c, SWEEP_STEPS, quick=False) for c in configs]
    data = fabricated_data(base[0], device)
    use_graphs = graphs and "graphs" not in off and backend is not False

    def run(i: int):
        c = base[i % len(base)]
        return replace(c, train=replace(c.train, seed=c.train.seed + 1009 * (i // len(base))))

    def measure(k: int) -> Measured:
        stamps: list[tuple[int, float]] = []
        torch.cuda.empty_cache()
        # What the check holds already (its trained groups, the fabricated data) is not this
        # training's: its peak is counted above it, and the real dataset is ``resident_data_bytes``.
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            outcomes = train_models([run(i) for i in range(k)], data, device,
                                    on_step=lambda step, total: stamps.append((step, time.perf_counter())),
                                    cuda_graphs=use_graphs, graph_backend=backend if use_graphs and backend else None,
                                    kernels="plain" if "kernels" in off else "fastest")
            torch.cuda.synchronize(device)
        finally:
            peak = int(torch.cuda.max_memory_allocated(device)) - before
        phases = [p.to_dict() for p in outcomes[0].execution.phases]
        del outcomes
        torch.cuda.empty_cache()
        found = steady_median([stamps], phases, first_timed_unsteady=True)
        return Measured(k, peak, None if found is None else found[0])

    return measure


def group_size_of(case, device, *, quick: bool, off: frozenset[str], backend,
                  say: Callable[[str], None]) -> GroupSize:
    """K for ``case`` (a ``KindCase``) on ``device``, with the features in ``off`` switched off."""
    import torch

    dev = torch.device(device)
    fixed = without_sweep(dev.type, quick, "stacked" in off)
    if fixed is not None:
        return fixed
    # A kind whose runs fill one group of the tier needs no K beyond them.
    most = len(case.configs) if case.groups == 1 else None
    total = int(torch.cuda.get_device_properties(dev).total_memory)
    return choose_group_size(device_measure(list(case.configs), dev, off, backend, case.kind.graphs), total,
                             resident_bytes=resident_data_bytes(case.configs[0]), most=most, say=say,
                             label=case.kind.id)
