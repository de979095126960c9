"""Selected claims at a tier -> the deduplicated runs they need, their groups and a time estimate.

In:  ClaimSpecs, a tier name, the run store (which runs are cached; measured step times).
Out: ``Plan``: one ``PlannedRun`` per distinct cache key (which claims need it, whether it is
cached, its steps and FLOPs), the fused groups they train in (``form_groups``) and the
estimated time on a ``Target`` device, per part of the tier (``part_of``) and in total, for
fp32 and TF32: *measured* where a dry run (``claimbench verify --dry-run``) timed that kind of group's
steady-state steps on this machine (``StepTimes``, ``<cache>/step-times.json``), *modelled*
elsewhere (FLOPs over a stated share of the device's peak, ``claimbench.devices``), next to the
physical limit (the same FLOPs at the device's peak), and the plan says which.

No torch here: sizes come from ``claimbench.data.catalog``, FLOPs from ``claimbench.netshape``, the device
from the driver's files. The cache key (``claimbench.cache``) and the group key
(``claimbench.config.group_key``) are imported where they are used.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from claimbench.config import ARCHS, RunConfig, phase_steps, plugin_registry, stackable
from claimbench.data.catalog import data_shape as dataset_shape
from claimbench.devices import ACHIEVABLE_FRACTION, DEFAULT_GPU, PRECISIONS, DevicePeak, match_gpu, parse_peak_tflops
from claimbench.netshape import flops_per_image, net_spec

if TYPE_CHECKING:
    from claimbench.cache import RunStore
    from claimbench.spec.claims import ClaimSpec

log = logging.getLogger(__name__)

# CPU time model per training step and run: a fixed overhead (Python, dispatch) plus arithmetic at
# an effective rate, fitted on the 2-core development machine (BasicNet width 1 at 32x32: 343
# ms/step for 42 GFLOP; width 0.375 at 8x8: 8 ms/step for 0.4 GFLOP). It prices the smoke tier
# on a CPU; a CPU's peak is not known here, so it has no physical limit. GPUs are modelled from
# their peak (``gpu_model_seconds``): a fused group's CUDA graph takes the per-step overhead away.
CPU_MODEL = (4e-3, 120e9)
STEP_TIMES_FILE = "step-times.json"


def data_shape(config: RunConfig) -> tuple[int, int, int, int]:
    return dataset_shape(config.data)


def run_cost(config: RunConfig) -> tuple[int, float]:
    """(training steps, training FLOPs); backward counted as 2x forward."""
    n, side, ch, k = data_shape(config)
    steps = sum(phase_steps(config.train, n))
    if config.model.arch not in ARCHS:
        # A plug-in prices itself if it says how (``flops_per_image``); else its arithmetic is
        # not known here and only the per-step cost of the CPU model counts.
        plugin = plugin_registry().model_plugin(config.model.arch).plugin
        if plugin.flops_per_image is None:
            return steps, 0.0
        per_image = float(plugin.flops_per_image(ch, side, k, config.model.params))
        return steps, 3.0 * per_image * config.train.batch_size * steps
    spec = net_spec(config.model, ch, side, k, config.data.dataset)
    return steps, 3.0 * flops_per_image(spec, side) * config.train.batch_size * steps


# -- memory --------------------------------------------------------------------------------------

# Of a GPU's free memory, the share a group may plan to fill: the rest is left to cuDNN's
# workspaces, the caching allocator's fragmentation and the CUDA graph pools.
MEMORY_HEADROOM = 0.8


def run_memory_bytes(config: RunConfig) -> int | None:
    """Device memory one run of a group needs to train, estimated from its layout (None for a
    plug-in's network, whose layout is not known here): per image, the float32 tensors autograd
    keeps for the backward pass (the image, and for each convolution its output, the BatchNorm
    output and the activation output; for each max-pool its output and int64 indices), times the
    batch; plus four copies of the parameters (weights, gradients, two optimizer states). Against
    a trace of what autograd saves (``saved_tensors_hooks`` on ``meta``): VGG-16 at 224 px and
    batch 40 saves 4.9 GiB, the activation part here says 6.5 (1.33x: an upper bound, on purpose);
    BasicNet on CIFAR, 16 runs at batch 40: 1.4 GiB, here 1.43."""
    if config.model.arch not in ARCHS:
        return None
    _, side, ch, k = data_shape(config)
    spec = net_spec(config.model, ch, side, k, config.data.dataset)
    floats, cin = ch * side * side, ch
    params = 0
    for c in spec.convs:
        floats += 3 * c.out_channels * side * side
        params += c.kernel * c.kernel * cin * c.out_channels + 2 * c.out_channels
        if c.pool_after:
            side = max(1, side // 2)
            floats += 3 * c.out_channels * side * side  # pooled output and its int64 indices
        cin = c.out_channels
    flat = cin * spec.pooled_size * spec.pooled_size
    for h in (*spec.head_hidden, spec.num_classes):
        params += flat * h + h
        floats += 3 * h
        flat = h
    return 4 * (floats * config.train.batch_size + 4 * params)


def memory_group_cap(config: RunConfig, free_bytes: int) -> int | None:
    """The most runs like ``config`` one group may stack in ``free_bytes`` of device memory (at
    least 1: a single run that does not fit fails as it would anyway); None when unknown."""
    per_run = run_memory_bytes(config)
    if per_run is None or per_run <= 0:
        return None
    return max(1, int(free_bytes * MEMORY_HEADROOM // per_run))


def cpu_model_seconds(steps: int, flops: float) -> float:
    overhead, rate = CPU_MODEL
    return steps * overhead + flops / rate


def gpu_model_seconds(flops: float, peak: DevicePeak | None, precision: str) -> float | None:
    """FLOPs over the share of the device's peak a training step is modelled to reach
    (``claimbench.devices.ACHIEVABLE_FRACTION``); None when the peak is unknown."""
    if peak is None:
        return None
    fp32 = flops / (ACHIEVABLE_FRACTION["fp32"] * peak.fp32_tflops * 1e12)
    if precision == "fp32" or not peak.has_tf32():
        return fp32  # without TF32 tensor cores a tf32 run is fp32 arithmetic
    # TF32 only adds kernels and cuDNN's autotuning (on in the loop) keeps the fastest, so a TF32
    # step is never modelled slower than the fp32 one (on a GeForce card TF32 and fp32 peaks are
    # equal and TF32's smaller share of its peak would say otherwise).
    return min(fp32, flops / (ACHIEVABLE_FRACTION["tf32"] * peak.tf32_tflops * 1e12))


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


@dataclass(frozen=True)
class Target:
    """The device an estimate is for: this machine's, or a GPU named for planning elsewhere."""

    kind: str  # "cuda" or "cpu"
    name: str
    peak: DevicePeak | None  # None: peak unknown (a CPU, or a GPU not in claimbench.devices)
    here: bool  # this machine's device: the step times a dry run measured here apply
    note: str = ""  # how it was chosen, printed with the estimate

    def describe(self) -> str:
        where = "this machine" if self.here else "not this machine"
        if self.kind == "cpu":
            peak = "peak unknown; modelled at the development CPU's fitted rate"
        elif self.peak is None:
            peak = "peak unknown (not in claimbench/devices.py; give --peak-tflops FP32[,TF32])"
        else:
            tf32 = f"TF32 dense {self.peak.tf32_tflops:g}" if self.peak.has_tf32() else "no TF32 (tf32 runs as fp32)"
            peak = (f"peak fp32 {self.peak.fp32_tflops:g}, {tf32} TFLOP/s ({self.peak.source}); modelled at "
                    + ", ".join(f"{ACHIEVABLE_FRACTION[p]:.0%} of {p} peak" for p in PRECISIONS))
        return f"{self.name} ({where}{'; ' + self.note if self.note else ''}): {peak}"


def machine_target(device: str) -> Target:
    """This machine's device as an estimate's target."""
    if device.startswith("cuda"):
        names = _nvidia_gpu_names()
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        name = names[index] if index < len(names) else "unknown GPU"
        peak = match_gpu(name)
        return Target("cuda", peak.name if peak else name, peak, True)
    return Target("cpu", machine_name("cpu"), None, True)


def estimate_target(tier: str, device: str, gpu: str | None = None, peak_tflops: str | None = None) -> Target:
    """What ``claimbench plan`` estimates for. ``gpu``: a GPU to plan for (matched in
    ``claimbench.devices``); ``peak_tflops``: "FP32[,TF32]" for a GPU the table lacks (or to override
    it). Without either: this machine's device, except that the full tier on a machine without a
    GPU is modelled for ``DEFAULT_GPU`` (nobody trains it on a CPU). Raises ValueError for a
    malformed ``peak_tflops``."""
    here = machine_target(device)
    if gpu is None and peak_tflops is None and (here.kind == "cuda" or tier != "full"):
        return here
    if gpu is not None:
        peak = match_gpu(gpu)
        name, note = (peak.name if peak else gpu), "named by --gpu"
    elif here.kind == "cuda":
        peak, name, note = here.peak, here.name, ""
    elif peak_tflops is not None:
        peak, name, note = None, "GPU of --peak-tflops", "no GPU on this machine"
    else:
        peak = match_gpu(DEFAULT_GPU)
        name, note = peak.name, "no GPU on this machine; --gpu NAME for another"
    if peak_tflops is not None:
        peak = parse_peak_tflops(peak_tflops, name)
        note = "; ".join(n for n in (note, "peaks from --peak-tflops") if n)
    # Measurements of this machine apply when the target is its GPU (the same model).
    same = here.kind == "cuda" and (gpu is None or (peak is not None and here.peak is not None
                                                    and match_gpu(gpu) == here.peak))
    return Target("cuda", name, peak, same, note)


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
    memory = available_memory()
    return max(1, min(cores, memory // CPU_JOB_BYTES if memory is not None else cores))


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable, else the free pages);
    None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def group_id(config: RunConfig) -> str:
    """A short stable name of the kind of group a run trains in (a digest of ``group_key``)."""
    from claimbench.config import group_key

    return hashlib.sha256(group_key(config).encode()).hexdigest()[:16]


def form_groups(runs: list[PlannedRun], group_size: int) -> list[list[PlannedRun]]:
    """Runs that can train together (``loop.group_key``), in chunks of at most group_size,
    largest work first so that parallel jobs finish together."""
    by_key: dict[str, list[PlannedRun]] = {}
    for i, r in enumerate(runs):
        # A plug-in network that is not stackable (claimbench.plugins.ModelPlugin.stackable), and a
        # trainer's run, trains in a group of its own.
        alone = not stackable(r.config)
        by_key.setdefault(f"{group_id(r.config)} {i}" if alone else group_id(r.config), []).append(r)
    size = max(1, group_size)
    groups = [members[i : i + size] for members in by_key.values() for i in range(0, len(members), size)]
    return sorted(groups, key=lambda g: -sum(r.flops for r in g))


def group_label(group: list[PlannedRun]) -> str:
    return group[0].config.summary() + (f" +{len(group) - 1}" if len(group) > 1 else "")


# -- measured step times --------------------------------------------------------------------------

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
    recorded (``cuda_graph_phases`` in provenance, ``loop.PhaseRun``):

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


def steady_step_time(info: dict, phases: list[dict] | None, group_size: int) -> StepTime | None:
    """The median seconds per steady-state step of one dry-run group, or None when no steady
    step was timed (too few steps) or the record cannot say which steps were steady.

    ``info["step_ends"]``: ``[[steps done, seconds], ...]`` stamped after each recorded step
    (``execute.train_group``); an interval between two stamps counts only if none of its steps
    is in ``unsteady_steps``."""
    ends = info.get("step_ends")
    if not ends or phases is None:
        return None
    stamps = sorted((int(s), float(t)) for s, t in ends)
    skip = unsteady_steps(phases, stamps[-1][0])
    per_step: list[float] = []
    for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]):
        if s1 > s0 and not skip.intersection(range(s0, s1)):
            per_step += [(t1 - t0) / (s1 - s0)] * (s1 - s0)
    if not per_step:
        return None
    per_step.sort()
    mid = len(per_step) // 2
    median = per_step[mid] if len(per_step) % 2 else (per_step[mid - 1] + per_step[mid]) / 2
    return StepTime(median, group_size, len(per_step), str(info.get("measured_at", "")))


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
    cells: list[str] = field(default_factory=list)  # paper-table cells (claimbench.spec.tables) this run fills


# The parts of the paper's tier a user plans GPU time by, in this order; a run's part comes from
# its dataset and architecture (``part_of``).
PARTS = ("CIFAR BasicNet", "VGG on CIFAR", "TinyImageNet", "ImageNet")


def part_of(config: RunConfig) -> str:
    dataset, arch = config.data.dataset, config.model.arch
    if dataset == "imagenet":
        return "ImageNet"
    if dataset == "tinyimagenet":
        return "TinyImageNet"
    if dataset in ("cifar10", "cifar100") and arch == "basicnet":
        return "CIFAR BasicNet"
    if dataset in ("cifar10", "cifar100") and arch.startswith("vgg"):
        return "VGG on CIFAR"
    return f"{arch} on {dataset}"  # the smoke tier's small analogs


@dataclass(frozen=True)
class GroupEstimate:
    label: str
    size: int
    steps: int
    seconds: float | None  # None: cannot be judged (nothing measured and the device's peak unknown)
    measured: bool
    part: str = ""
    flops: float = 0.0
    limit_seconds: float | None = None  # the same FLOPs at the device's peak (None: peak unknown)


@dataclass(frozen=True)
class Estimate:
    """The time of some groups at one precision, how it was judged and the device's limit."""

    seconds: float | None  # None: cannot be judged
    source: str  # measured, modelled, partly measured, "modelled, peak unknown", ...
    limit_seconds: float | None  # the same FLOPs at the device's peak: no run can be faster

    @property
    def ratio(self) -> float | None:
        """The physical limit over a measured estimate: the share of the device's peak the runs
        reached (0-1). None for a modelled or partly modelled estimate: there the ratio is the
        share the model assumes (``ACHIEVABLE_FRACTION``), restated, and checks nothing."""
        if self.seconds is None or self.limit_seconds is None or self.seconds <= 0:
            return None
        if not self.source.startswith("measured"):
            return None
        return self.limit_seconds / self.seconds


@dataclass(frozen=True)
class PartEstimate:
    part: str
    runs: int
    flops: float
    fp32: Estimate
    tf32: Estimate


def combine(groups: list[GroupEstimate], target: Target, precision: str | None) -> Estimate:
    """The estimate of ``groups`` together (one group at a time). A sum with an unknown term is
    unknown: a partial total would read as the whole."""
    measured = {g.measured for g in groups}
    if any(g.seconds is None for g in groups):
        seconds = None
        source = "partly measured, rest peak unknown" if True in measured else "modelled, peak unknown"
    else:
        seconds = sum(g.seconds for g in groups)  # type: ignore[misc]
        source = "partly measured" if len(measured) > 1 else "measured" if measured == {True} else "modelled"
    if precision == "tf32" and (target.kind == "cpu" or (target.peak is not None and not target.peak.has_tf32())):
        source += " (no TF32: as fp32)"
    limits = [g.limit_seconds for g in groups]
    limit = None if any(x is None for x in limits) or not groups else sum(limits)  # type: ignore[arg-type]
    return Estimate(seconds, source, limit)


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
                        precision: str | None = None) -> list[GroupEstimate]:
        """Seconds per group trained one group at a time, at ``precision`` (None: each run's
        own): measured steady-state step time x steps where a dry run timed this kind of group
        on this machine (the target), else the model (FLOPs over a share of the peak)."""
        out = []
        for g in self.groups(group_size, only_missing):
            config = g[0].config
            p = precision or config.train.precision
            if p != config.train.precision:
                config = replace(config, train=replace(config.train, precision=p))
            measured = self.step_times.get(group_id(config)) if self.target.here else None
            steps = max(r.steps for r in g)
            flops = sum(r.flops for r in g)
            if measured is not None:
                seconds: float | None = measured.run_step_s * len(g) * steps
            else:
                each = [self.model_seconds(r.steps, r.flops, p) for r in g]
                seconds = None if any(x is None for x in each) else sum(each)  # type: ignore[arg-type]
            out.append(GroupEstimate(group_label(g), len(g), steps, seconds, measured is not None,
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
        found = {g.part for g in by["fp32"]}
        names = [n for n in PARTS if n in found] + sorted(found - set(PARTS))

        def row(name: str, keep) -> PartEstimate:
            sel = {p: [g for g in by[p] if keep(g)] for p in PRECISIONS}
            return PartEstimate(name, sum(g.size for g in sel["fp32"]), sum(g.flops for g in sel["fp32"]),
                                combine(sel["fp32"], self.target, "fp32"), combine(sel["tf32"], self.target, "tf32"))

        return [row(n, lambda g, n=n: g.part == n) for n in names], row("total", lambda g: True)

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


# What a modelled GPU row rests on, said under the table (``claimbench.devices.ACHIEVABLE_FRACTION``).
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
    device = device or detected_device()
    return Plan(tier, runs, device, not_run, StepTimes(store.root).load(machine_name(device)), machine_target(device))


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days ({math.ceil(hours):,} h)"
