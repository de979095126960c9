"""What a run costs and how long groups of runs take: the cost model behind a plan's estimate.

In:  ``RunConfig``s (sizes from ``claimbench.data.catalog``, FLOPs from ``claimbench.netcost``), a
     ``Target`` device (``claimbench.machine.target``), and per group either a measured time or
     nothing.
Out: ``run_cost`` (steps, FLOPs), ``run_memory_bytes`` and ``memory_group_cap`` (device memory),
     the modelled seconds on a CPU or a GPU (FLOPs over a stated share of the device's peak,
     ``claimbench.machine.peaks``), ``part_of`` (which part of the paper's tier a run belongs to),
     and ``GroupEstimate``/``Estimate``/``PartEstimate`` with ``combine`` and ``by_part``: the
     sums a plan and gpu-check's report print, saying what was measured and what modelled.

No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.config import ARCHS, RunConfig, phase_steps, plugin_registry
from claimbench.data.catalog import data_shape as dataset_shape
from claimbench.machine.peaks import ACHIEVABLE_FRACTION, DevicePeak
from claimbench.machine.target import Target
from claimbench.netcost import flops_per_image
from claimbench.netshape import net_spec


# CPU time model per training step and run: a fixed overhead (Python, dispatch) plus arithmetic at
# an effective rate, fitted on the 2-core development machine (BasicNet width 1 at 32x32: 343
# ms/step for 42 GFLOP; width 0.375 at 8x8: 8 ms/step for 0.4 GFLOP). It prices the smoke tier
# on a CPU; a CPU's peak is not known here, so it has no physical limit. GPUs are modelled from
# their peak (``gpu_model_seconds``): a fused group's CUDA graph takes the per-step overhead away.
CPU_MODEL = (4e-3, 120e9)


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
    (``claimbench.machine.peaks.ACHIEVABLE_FRACTION``); None when the peak is unknown."""
    if peak is None:
        return None
    fp32 = flops / (ACHIEVABLE_FRACTION["fp32"] * peak.fp32_tflops * 1e12)
    if precision == "fp32" or not peak.has_tf32():
        return fp32  # without TF32 tensor cores a tf32 run is fp32 arithmetic
    # TF32 only adds kernels and cuDNN's autotuning (on in the loop) keeps the fastest, so a TF32
    # step is never modelled slower than the fp32 one (on a GeForce card TF32 and fp32 peaks are
    # equal and TF32's smaller share of its peak would say otherwise).
    return min(fp32, flops / (ACHIEVABLE_FRACTION["tf32"] * peak.tf32_tflops * 1e12))



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


def by_part(groups: list[GroupEstimate]) -> dict[str, list[GroupEstimate]]:
    """``groups`` per part of the tier, in ``PARTS`` order, then any other part by name."""
    found = {g.part for g in groups}
    names = [n for n in PARTS if n in found] + sorted(found - set(PARTS))
    return {n: [g for g in groups if g.part == n] for n in names}
