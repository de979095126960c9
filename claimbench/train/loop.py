"""The one training loop, for one run or a group of runs trained together.

In:  RunConfigs that share architecture, data, batch size, schedule and precision (see
     ``group_key``; optimizers, learning rates and regularizers may differ), and an ImageData
     already on the training device.
Out: one ``TrainOutcome`` per run: the trained single-run model, its histories (loss, learning
     rate, BN gamma/beta snapshots for the paper's Figure 2) and whether/when its loss diverged.

Every run in the project (CLI, claims, tests, benchmarks) goes through ``train_models``; a single
run is a group of one. Seeds are set here and only here: each run's initialisation from its
``train.seed`` (the model is built right after ``torch.manual_seed``), its data order and flips
from its own CPU generator seeded with the same value, so a CPU run is bit-for-bit repeatable and
a run trains the same whether alone or in a group.

Why groups: at the paper's batch of 40 a GPU step is bound by kernel launches, not arithmetic.
K runs of one architecture are one ``ConvNet(spec, runs=K)`` (grouped convolutions, per-channel
BatchNorm, batched fc layers; the same definition as a single run, see ``claimbench.train.models``).
Each run's optimizer and regularizer act on views of its slice of the stacked parameters and
gradients: all optimizers here are elementwise, so each run keeps its own optimizer type, state,
learning rate, scales and regularizer. Nothing mixes between runs: run k's loss depends only on
run k's parameters and batch.

A step makes no host-device copy and no host sync (``tests/test_loop_trace.py`` traces one on
the ``meta`` device): each epoch's data order and flips are drawn on the CPU once and copied to
the device once; the loss is read back once per recorded point. On CUDA the whole step can be
one CUDA graph (``StepGraph`` over a ``GraphBackend``), captured again when the learning-rate
phase changes. What actually ran (graph captures, replays or the error that stopped them, per
phase; optimizer kernels; precision flags) is returned with each outcome as ``Execution``.

The loop reads top to bottom: ``init_state`` builds the ``TrainState``; ``train_models`` runs
``start_phase`` / ``train_step`` / ``record_losses`` / ``record_snapshots`` /
``save_checkpoint`` as the step count asks; ``checkpoint_state`` / ``restore_state`` convert the
state to and from a plain dict that loads without pickle.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
import torch.nn.functional as F

from claimbench.config import RunConfig, group_key
from claimbench.data.base import ImageData
from claimbench.train.models import ConvNet, build_model, run_view, stack_models, unstack_model
from claimbench.train.optim import (
    GRAPH_SAFE,
    CapturableAdagrad,
    KernelUsed,
    Regularizer,
    StepSchedule,
    build_optimizers,
    build_regularizers,
    kernel_used,
    load_keeping_kernels,
    param_groups,
    set_lr,
)

log = logging.getLogger(__name__)

# How many points the loss curve keeps, whatever the run length.
LOSS_POINTS = 200
# Version of the checkpoint layout; a checkpoint of another layout is moved aside, not misread.
CHECKPOINT_FORMAT = 2
# "0" turns CUDA graphs off (they are on by default on CUDA).
CUDA_GRAPHS_ENV = "CLAIMBENCH_CUDA_GRAPHS"
# "plain" steps every optimizer one parameter at a time (foreach=False, fused=False) instead of
# the fastest kernels the installed torch has ("fastest", the default): the reference a machine's
# fast kernels are checked against (``claimbench gpu-check``), and the way to train without them.
OPTIMIZER_KERNELS_ENV = "CLAIMBENCH_OPTIMIZER_KERNELS"
OPTIMIZER_KERNELS = ("fastest", "plain")


@dataclass(frozen=True)
class PhaseRun:
    """How the steps of one learning-rate phase ran in one process (a resumed run starts a new
    record for the phase it resumes in)."""

    phase: int | None  # 0-based learning-rate phase; None: steps before a resume, not recorded
    lr_factor: float | None
    first_step: int
    steps: int
    graphs: bool  # the step was to be a graph (requested and possible)
    warmup_steps: int = 0  # eager steps before the first capture
    captures: int = 0
    replays: int = 0
    eager_steps: int = 0  # steps run eagerly outside warm-up (graphs off, or after a failed capture)
    error: str | None = None  # why capture failed (graphs then stay off for the rest of the run)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Execution:
    """What one group's training actually executed, read back after training (not what was asked
    for): the same for every run of the group but for its optimizer's kernel."""

    device: str  # "cpu", or the GPU's name
    phases: tuple[PhaseRun, ...]
    kernels: tuple[KernelUsed, ...]  # one per optimizer of the group
    fp32_flags: dict  # torch's float32 precision settings as they were at the end
    cudnn_benchmark: bool
    cudnn: int | None  # cuDNN version on CUDA
    torch_threads: int

    @property
    def cuda_graphs(self) -> bool:
        """Every step after warm-up was a graph replay, and no capture failed."""
        return (bool(self.phases) and any(p.replays for p in self.phases)
                and all(p.graphs and p.error is None and p.eager_steps == 0 for p in self.phases))

    def kernel(self, optimizer: str) -> KernelUsed:
        for k in self.kernels:
            if k.optimizer == optimizer:
                return k
        raise KeyError(f"no optimizer {optimizer!r} in this group (has {[k.optimizer for k in self.kernels]})")

    def provenance(self, optimizer: str) -> dict:
        """JSON-ready facts for a run of this group that used ``optimizer``."""
        return {
            "device": self.device,
            "cudnn_benchmark": self.cudnn_benchmark,
            **({"cudnn": self.cudnn} if self.cudnn is not None else {}),
            "fp32_flags": dict(self.fp32_flags),
            "torch_threads": self.torch_threads,
            "optimizer_kernel": self.kernel(optimizer).to_dict(),
            "cuda_graphs": self.cuda_graphs,
            "cuda_graph_phases": [p.to_dict() for p in self.phases],
        }


@dataclass
class TrainOutcome:
    model: ConvNet
    steps: int
    wall_s: float
    history: dict = field(default_factory=dict)
    diverged_at: int | None = None
    execution: Execution | None = None  # None: a registered trainer trained the run, not this loop
    # A registered trainer's run (claimbench.train.trainer): the metrics it reported, and which
    # trainer it was and what it ran on, for provenance.
    trainer_metrics: dict = field(default_factory=dict)
    trainer: dict | None = None


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_precision(precision: str, device: torch.device, cudnn_benchmark: bool | None = None) -> dict:
    """Set float32 arithmetic explicitly (torch's defaults differ by version and GPU: cuDNN
    convolutions default to TF32 on Ampere and later) and cuDNN autotuning (on by default on
    CUDA). Returns what was set, for provenance."""
    tf32 = precision == "tf32"
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        # torch >= 2.9: mixing this API with the legacy allow_tf32 flags is an error.
        value = "tf32" if tf32 else "ieee"
        cudnn.conv.fp32_precision = value
        cudnn.rnn.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
    else:
        cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    benchmark = device.type == "cuda" if cudnn_benchmark is None else cudnn_benchmark
    cudnn.benchmark = benchmark
    out = {"precision": precision, "cudnn_benchmark": benchmark}
    if device.type == "cuda":
        out["cudnn"] = cudnn.version()
    return out


def fp32_flags() -> dict:
    """torch's float32 precision settings as they are now (for provenance). Only the API in use
    is read: with torch >= 2.9's ``fp32_precision`` set, the legacy getters raise."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        return {"cudnn_conv": cudnn.conv.fp32_precision, "cudnn_rnn": cudnn.rnn.fp32_precision,
                "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}
    return {"cudnn_allow_tf32": bool(cudnn.allow_tf32), "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


# --- data order -----------------------------------------------------------------------------


class BatchStream:
    """Each run's shuffled mini-batches and flips, one permutation per epoch; the incomplete tail
    of an epoch is dropped so BatchNorm never sees a tiny batch.

    Every run draws from its own CPU generator in the same sequence as one permutation then one
    flip draw per step, but a whole epoch at a time, and the K runs' epoch is copied to the device
    in one transfer (pinned, asynchronous on CUDA): a step only slices device tensors.
    """

    def __init__(self, n: int, batch_size: int, flip: bool, seeds: list[int], device: torch.device):
        self.n, self.flip, self.device = n, flip, device
        self.batch = min(batch_size, n)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.per_epoch = max(1, n // batch_size)
        self.index = torch.empty(len(seeds), 0, dtype=torch.long, device=device)
        self.flips: torch.Tensor | None = None
        self.position = self.per_epoch  # forces a new epoch on the first batch

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _new_epoch(self) -> None:
        orders, flips = [], []
        used = self.per_epoch * self.batch
        for g in self.generators:
            orders.append(torch.randperm(self.n, generator=g)[:used])
            if self.flip:
                flips.append(torch.cat([torch.rand(self.batch, generator=g) < 0.5 for _ in range(self.per_epoch)]))
        self.index = self._to_device(torch.stack(orders))
        self.flips = self._to_device(torch.stack(flips)) if self.flip else None
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, batch) indices and (K, batch) flips (None without flipping), on the device."""
        if self.position >= self.per_epoch:
            self._new_epoch()
        batch = self._batch(self.position)
        self.position += 1
        return batch

    def peek(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """What ``next`` will return, without advancing; None when the next batch opens a new
        epoch (not drawn yet: drawing it early would change nothing but is not needed)."""
        return self._batch(self.position) if self.position < self.per_epoch else None

    def _batch(self, position: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = position * self.batch
        flip = self.flips[:, start : start + self.batch] if self.flips is not None else None
        return self.index[:, start : start + self.batch], flip

    def get_state(self) -> dict:
        return {"rng": [g.get_state() for g in self.generators], "index": self.index.cpu(),
                "flips": self.flips.cpu() if self.flips is not None else None, "position": self.position}

    def set_state(self, state: dict) -> None:
        for g, rng in zip(self.generators, state["rng"]):
            g.set_state(rng)
        self.index = state["index"].to(self.device)
        self.flips = state["flips"].to(self.device) if state["flips"] is not None else None
        self.position = state["position"]


def gather_batch(data: ImageData, index: torch.Tensor, flip: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One gather for all K runs: (B, K * C, H, W) images (run k in channels k*C..(k+1)*C, the
    stacked network's layout) and (K, B) labels."""
    x, y = data.train_batch(index, flip)  # (K, B, C, H, W), (K, B)
    k, b = index.shape
    return x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:]), y


# --- state ----------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a group's training needs, and everything a checkpoint saves."""

    configs: list[RunConfig]
    net: ConvNet  # ConvNet(spec, runs=K)
    optimizers: list[torch.optim.Optimizer]
    regularizers: list[Regularizer]
    grads: list[torch.Tensor]  # the stacked parameters' gradients: allocated once, zeroed per step
    stream: BatchStream
    schedule: StepSchedule
    loss_sum: torch.Tensor  # (K,) on the device: summed losses since the last recorded point
    histories: list[dict]
    diverged: list[int | None]
    step: int = 0  # steps done
    loss_count: int = 0  # steps summed in loss_sum
    factor: float | None = None  # the current learning-rate multiplier
    wall_s: float = 0.0  # training time spent before this process (resumed runs)
    # How the steps ran, one PhaseRun.to_dict() per phase and process; the last is counted into.
    phase_runs: list[dict] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.configs)


def init_state(configs: list[RunConfig], data: ImageData, device: torch.device, capturable: bool = False,
               dtype: torch.dtype | None = None) -> TrainState:
    """Build the group: each run initialised from its own seed, stacked into one network.
    ``dtype``: what the network computes in after its float32 initialisation (None: float32);
    float64 is the exact-arithmetic reference of ``claimbench gpu-check``, started from the very
    weights a float32 run starts from (torch draws float64 initial values from another stream)."""
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("runs trained together must share architecture, data, batch size, schedule and precision")
    first = configs[0]
    models = []
    for c in configs:
        torch.manual_seed(c.train.seed)
        models.append(build_model(c.model, data.in_channels, data.image_size, data.num_classes, c.data.dataset))
    k = len(configs)
    net = stack_models(models).to(device=device, dtype=dtype).train()
    grads = []
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    members, reg_members = [], []
    for i, c in enumerate(configs):
        def view(p: torch.Tensor, i: int = i) -> torch.Tensor:
            # A leaf sharing the stacked parameter's storage, with its gradient a view of the
            # stacked gradient: the run's optimizer updates its slice in place.
            v = run_view(p.detach(), k, i)
            v.grad = run_view(p.grad, k, i)
            return v
        groups = param_groups(net, c.optim, select=view)
        members.append((c.optim, groups))
        reg_members.append((c.optim, [p for g in groups for p in g["params"]]))
    histories = [{"loss_steps": [], "loss": [], "lr_steps": [], "lr": [], "snapshot_steps": [], "snapshots": []}
                 for _ in configs]
    return TrainState(
        configs=list(configs),
        net=net,
        optimizers=build_optimizers(members, device.type, capturable),
        regularizers=build_regularizers(reg_members),
        grads=grads,
        # Data decoded on the host per batch (image folders) takes host indices: no device sync.
        stream=BatchStream(data.train_size, first.train.batch_size, first.data.flip, [c.train.seed for c in configs],
                           torch.device("cpu") if data.decodes_on_host else device),
        schedule=StepSchedule.for_run(first.train, data.train_size),
        loss_sum=torch.zeros(k, device=device),
        histories=histories,
        diverged=[None] * k,
    )


def use_plain_kernels(optimizers: list[torch.optim.Optimizer]) -> None:
    """Step each optimizer one parameter at a time. Set before the first step (torch places each
    step counter by these flags when it creates the state) and kept on resume
    (``load_keeping_kernels``). The capturable Adagrad has only its own foreach step: left as is,
    and provenance says so."""
    for opt in optimizers:
        if isinstance(opt, CapturableAdagrad):
            continue
        for group in opt.param_groups:
            group["fused"], group["foreach"] = False, False


# --- the step -------------------------------------------------------------------------------


def start_phase(state: TrainState, factor: float) -> None:
    """A new learning-rate phase: every run's rates (and weight decay) follow ``factor``."""
    state.factor = factor
    set_lr(state.optimizers, factor)
    for h, c in zip(state.histories, state.configs):
        h["lr_steps"].append(state.step)
        h["lr"].append(c.optim.base_lr * factor)


def step_on_batch(state: TrainState, data: ImageData, index: torch.Tensor, flip: torch.Tensor | None) -> None:
    """One optimization step of every run on the given (K, B) batch indices; device work only."""
    x, y = gather_batch(data, index, flip)
    k, b = y.shape
    logits = state.net(x).view(b, k, -1)
    losses = F.cross_entropy(logits.flatten(0, 1), y.t().flatten(), reduction="none").view(b, k).mean(0)
    torch._foreach_zero_(state.grads)
    losses.sum().backward()  # runs share no parameter: each gets the gradient of its own loss
    for r in state.regularizers:
        r.before_step()
    for opt in state.optimizers:
        opt.step()
    for r in state.regularizers:
        r.after_step(state.factor)
    state.loss_sum += losses.detach()


def train_step(state: TrainState, data: ImageData, graph: "StepGraph | None" = None) -> None:
    index, flip = state.stream.next()
    if data.decodes_on_host:
        # Image folders: the next batch is decoded in the background while this step runs.
        ahead = state.stream.peek()
        if ahead is not None:
            data.prefetch(*ahead)
    if graph is not None and graph.enabled:
        how = graph.run(state, data, index, flip)
    else:
        step_on_batch(state, data, index, flip)
        how = "eager_steps"
    if state.phase_runs:
        state.phase_runs[-1][how] += 1
        state.phase_runs[-1]["steps"] += 1
    state.step += 1
    state.loss_count += 1


class GraphBackend(Protocol):
    """How a step becomes a replayable graph. ``CudaGraphBackend`` is torch.cuda's; tests pass a
    fake that runs the same loop on the CPU and records what was captured, replayed and freed."""

    capturable: bool  # optimizers must keep their state on the device (torch's ``capturable``)

    def warmup(self, step: Callable[[], None]) -> None:
        """Run ``step`` eagerly, as the capture will need it run first."""

    def new_pool(self) -> object:
        """A memory pool handle no other graph uses."""

    def capture(self, step: Callable[[], None], pool: object) -> object:
        """A graph of ``step`` allocating from ``pool``; it must not run the step."""

    def replay(self, graph: object) -> None:
        """Run the captured step once."""

    def release(self, graph: object) -> None:
        """Free ``graph`` and its pool; it is never replayed again."""


class CudaGraphBackend:
    """torch.cuda graphs. Warm-up and capture run on one side stream, so that what the first
    kernels allocate for that stream (cuBLAS workspaces, cuDNN plans) is made during warm-up, not
    inside a graph's pool; each capture gets a fresh pool, and the graph it replaces is freed
    first, so no pool ever outlives its graph or is shared with a dead one."""

    capturable = True

    def __init__(self) -> None:
        self._stream: torch.cuda.Stream | None = None

    def _side(self) -> "torch.cuda.Stream":
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def warmup(self, step: Callable[[], None]) -> None:
        side = self._side()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)

    def new_pool(self) -> object:
        return torch.cuda.graph_pool_handle()

    def capture(self, step: Callable[[], None], pool: object) -> "torch.cuda.CUDAGraph":
        graph = torch.cuda.CUDAGraph()
        before = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=self._side()):
                step()
        except BaseException:
            # torch.cuda.graph switches to the capture stream before capture_begin and back after
            # capture_end; when either raises, the switch back is skipped and every later eager
            # kernel would run on the side stream.
            torch.cuda.set_stream(before)
            raise
        return graph

    def replay(self, graph: "torch.cuda.CUDAGraph") -> None:
        graph.replay()

    def release(self, graph: "torch.cuda.CUDAGraph") -> None:
        torch.cuda.synchronize()  # its last replay may still be running
        graph.reset()


class StepGraph:
    """``step_on_batch`` as one graph (``backend``; optimizers made ``capturable`` if it says so).

    The first steps run eagerly (``backend.warmup``: optimizer state, cuDNN autotuning), then the
    step is captured reading static index/flip buffers and replayed; the learning rate and weight
    decay are constants of the graph, so ``new_phase`` (at each phase change) frees the graph and
    the next step captures again, into a new pool. A failed capture, whatever torch raised,
    turns graphs off for the rest of the run: logged, and recorded in the phase's ``PhaseRun``.
    """

    WARMUP_STEPS = 3

    def __init__(self, state: TrainState, device: torch.device, flip: bool, backend: GraphBackend):
        k, b = state.runs, state.stream.batch
        self.backend = backend
        self.enabled = True
        self.index = torch.zeros(k, b, dtype=torch.long, device=device)
        self.flip = torch.zeros(k, b, dtype=torch.bool, device=device) if flip else None
        self.graph: object | None = None
        self.warmup_left = self.WARMUP_STEPS

    def new_phase(self) -> None:
        self.close()

    def close(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            self.backend.release(graph)

    def run(self, state: TrainState, data: ImageData, index: torch.Tensor, flip: torch.Tensor | None) -> str:
        """One step; returns the PhaseRun counter it adds to."""
        self.index.copy_(index)
        if self.flip is not None:
            self.flip.copy_(flip)

        def step() -> None:
            step_on_batch(state, data, self.index, self.flip)

        if self.warmup_left > 0:
            self.warmup_left -= 1
            self.backend.warmup(step)
            return "warmup_steps"
        if self.graph is None:
            try:
                self.graph = self.backend.capture(step, self.backend.new_pool())
            except Exception as e:  # noqa: BLE001  (torch raises RuntimeError, AssertionError, AcceleratorError...)
                # Only the capture is guarded: KeyboardInterrupt and SystemExit are not Exceptions.
                # A capture records kernels without running them, so the step has not happened yet.
                reason = f"{type(e).__name__}: {e}"
                log.warning("graph capture failed at step %d (%s); training on without graphs", state.step, reason)
                self.enabled = False
                if state.phase_runs:
                    state.phase_runs[-1]["error"] = reason
                step()
                return "eager_steps"
            if state.phase_runs:
                state.phase_runs[-1]["captures"] += 1
        self.backend.replay(self.graph)
        return "replays"


def graphs_wanted(configs: list[RunConfig], requested: bool | None, data: ImageData | None = None) -> bool:
    """Whether a group's step should be one graph where graphs exist: unless turned off
    (``requested`` False, or None and ``$CLAIMBENCH_CUDA_GRAPHS=0``), never for data decoded on the
    host per batch (image folders: a graph cannot capture decoding) or optimizers without
    capturable kernels."""
    if data is not None and data.decodes_on_host:
        return False
    wanted = os.environ.get(CUDA_GRAPHS_ENV, "1") != "0" if requested is None else requested
    unsafe = {c.optim.name for c in configs} - GRAPH_SAFE
    if wanted and unsafe:
        log.info("no CUDA graph for a group with %s (no capturable kernels)", ", ".join(sorted(unsafe)))
    return wanted and not unsafe


def use_cuda_graphs(configs: list[RunConfig], device: torch.device, requested: bool | None,
                    data: ImageData | None = None) -> bool:
    """Whether the step is to be one CUDA graph: on CUDA when ``graphs_wanted``. Whether it was
    is in each outcome's ``Execution``."""
    return device.type == "cuda" and graphs_wanted(configs, requested, data)


# --- recording ------------------------------------------------------------------------------


def record_losses(state: TrainState) -> None:
    """Append each run's mean loss since the last point (one host sync) and flag divergence."""
    means = (state.loss_sum / max(1, state.loss_count)).tolist()
    state.loss_sum.zero_()
    state.loss_count = 0
    for i, (h, mean_loss) in enumerate(zip(state.histories, means)):
        if state.diverged[i] is not None:
            continue
        h["loss_steps"].append(state.step)
        h["loss"].append(mean_loss)
        if not math.isfinite(mean_loss):
            state.diverged[i] = state.step
            log.warning("run %s diverged at step %d (loss %s)", state.configs[i].summary(), state.step, mean_loss)


def bn_snapshot(model: ConvNet, run: int = 0) -> dict[str, list[list[float]]]:
    """Run ``run``'s BatchNorm gammas and betas, per conv layer."""
    return {
        "gamma": [run_view(b.bn.weight.detach(), model.runs, run).cpu().tolist() for b in model.blocks],
        "beta": [run_view(b.bn.bias.detach(), model.runs, run).cpu().tolist() for b in model.blocks],
    }


def record_snapshots(state: TrainState) -> None:
    for i, h in enumerate(state.histories):
        h["snapshot_steps"].append(state.step)
        h["snapshots"].append(bn_snapshot(state.net, i))


# --- checkpoints ----------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


def checkpoint_state(state: TrainState, wall_s: float) -> dict:
    """The whole state as plain containers and CPU tensors (loadable with weights_only=True)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "configs": [c.canonical_json() for c in state.configs],
        "step": state.step,
        "wall_s": wall_s,
        "net": {k: v.detach().cpu() for k, v in state.net.state_dict().items()},
        "optimizers": [o.state_dict() for o in state.optimizers],
        "stream": state.stream.get_state(),
        "loss_sum": state.loss_sum.cpu(),
        "loss_count": state.loss_count,
        "histories": state.histories,
        "diverged": state.diverged,
        "factor": state.factor,
        "phase_runs": state.phase_runs,
    }


@torch.no_grad()
def restore_state(state: TrainState, saved: dict) -> None:
    state.net.load_state_dict(saved["net"])
    for opt, sd in zip(state.optimizers, saved["optimizers"]):
        # This run's kernels (and capturability), not those of the process that saved.
        load_keeping_kernels(opt, sd)
    state.stream.set_state(saved["stream"])
    state.loss_sum.copy_(saved["loss_sum"])
    state.loss_count = saved["loss_count"]
    state.histories, state.diverged = saved["histories"], saved["diverged"]
    state.step, state.factor, state.wall_s = saved["step"], saved["factor"], saved["wall_s"]
    # A checkpoint without this record (written by an earlier version) says nothing of how its
    # steps ran: one unrecorded entry, so provenance cannot claim graphs for them.
    state.phase_runs = [dict(r) for r in saved.get("phase_runs") or []] or (
        [PhaseRun(None, None, 0, state.step, graphs=False, error="not recorded").to_dict()] if state.step else [])
    if state.factor is not None:
        set_lr(state.optimizers, state.factor)


def save_checkpoint(path: Path, saved: dict) -> bool:
    """Atomic: a reader (or a resumed run) sees the previous checkpoint or this one, whole.

    A checkpoint is insurance, not a result: when it cannot be written (a full disk, a lost
    mount) the partial file is removed, the previous checkpoint stays, one warning says so and
    training goes on; False then."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(saved, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not save the checkpoint %s (%s); the partial file was removed, %s, and training goes on",
                    path, e.strerror or e, "the previous checkpoint is kept" if path.exists() else "there is none yet")
        return False
    except RuntimeError as e:
        # torch.save reports a failed write (PytorchStreamWriter) as a RuntimeError: the same case.
        if "write" not in str(e).lower() and "file" not in str(e).lower():
            raise
        tmp.unlink(missing_ok=True)
        log.warning("could not save the checkpoint %s (%s); the partial file was removed and training goes on",
                    path, str(e).splitlines()[0])
        return False
    return True


def read_checkpoint(path: Path, configs: list[RunConfig]) -> dict:
    """The checkpoint at ``path`` for ``configs``, loaded without pickle (``weights_only``) onto
    the CPU; CheckpointError naming the file for anything else."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (holds a {type(saved).__name__}, not a dict)")
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {saved.get('format')!r}, this version reads {CHECKPOINT_FORMAT}")
    if saved.get("configs") != [c.canonical_json() for c in configs]:
        raise CheckpointError(f"{path}: checkpoint of other runs")
    return saved


def load_checkpoint(path: Path | None, configs: list[RunConfig]) -> dict | None:
    """``read_checkpoint`` if ``path`` exists; an unusable file is moved aside (so later attempts
    do not trip on it again), logged with its new name, and training starts from scratch."""
    if path is None or not path.is_file():
        return None
    try:
        return read_checkpoint(path, configs)
    except CheckpointError as e:
        aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}")
        try:
            os.replace(path, aside)
        except OSError as move_error:
            log.warning("%s; could not move it aside (%s); starting from scratch", e, move_error)
        else:
            log.warning("%s; moved to %s, starting from scratch", e, aside)
        return None


@contextlib.contextmanager
def interrupt_at_step_end() -> Iterator[dict]:
    """Ctrl-C during training ends the current step first (so the checkpoint saved on the way out
    is whole); a second Ctrl-C stops at once. Only in the main thread, where handlers can be set."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the loop -------------------------------------------------------------------------------


def train_models(
    configs: list[RunConfig],
    data: ImageData,
    device: torch.device,
    on_step: Callable[[int, int], None] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every_s: float = 300.0,
    cuda_graphs: bool | None = None,
    cudnn_benchmark: bool | None = None,
    graph_backend: GraphBackend | None = None,
    kernels: str | None = None,
    dtype: torch.dtype | None = None,
) -> list[TrainOutcome]:
    """Train runs together. ``on_step(step, total)`` is called at every recorded loss point
    (~0.5% of the run).

    With ``checkpoint``, the whole training state is saved there atomically at most every
    ``checkpoint_every_s`` seconds and when interrupted (Ctrl-C), and a run started with an
    existing checkpoint of the same configs resumes from it; on CPU the result is bit-identical
    to an uninterrupted run. ``cuda_graphs`` / ``cudnn_benchmark``: None = on for CUDA
    (``$CLAIMBENCH_CUDA_GRAPHS=0`` turns graphs off). ``graph_backend``: how graphs are made; None =
    ``CudaGraphBackend`` on CUDA, no graphs elsewhere (tests pass a fake to run the graph path on
    the CPU). ``kernels``: "fastest" or "plain" optimizer kernels (None: ``$CLAIMBENCH_OPTIMIZER_KERNELS``,
    default fastest). Each outcome's ``execution`` says what ran. ``dtype``: see ``init_state``
    (the data must be of it too).

    A run whose config names a registered trainer (``train.trainer``) is trained by it instead
    (``claimbench.train.trainer``), alone; graphs and kernels are then the trainer's business.
    """
    if any(c.train.trainer is not None for c in configs):
        from claimbench.train.trainer import train_with_trainer

        if len(configs) != 1:
            raise ValueError(f"a trainer's runs train one at a time, not in a group of {len(configs)}")
        set_precision(configs[0].train.precision, device, cudnn_benchmark)
        return [train_with_trainer(configs[0], data, device, on_step, checkpoint)]
    kernels = kernels or os.environ.get(OPTIMIZER_KERNELS_ENV) or "fastest"
    if kernels not in OPTIMIZER_KERNELS:
        raise ValueError(f"optimizer kernels {kernels!r} (from the kernels argument or ${OPTIMIZER_KERNELS_ENV}): "
                         f"expected one of {', '.join(OPTIMIZER_KERNELS)}")
    set_precision(configs[0].train.precision, device, cudnn_benchmark)
    if graph_backend is None and device.type == "cuda":
        graph_backend = CudaGraphBackend()
    graphs = graph_backend is not None and graphs_wanted(configs, cuda_graphs, data)
    state = init_state(configs, data, device, capturable=graphs and graph_backend.capturable, dtype=dtype)
    if kernels == "plain":
        use_plain_kernels(state.optimizers)
    resumed = load_checkpoint(checkpoint, configs)
    if resumed is not None:
        restore_state(state, resumed)
        log.info("resumed %d runs from %s at step %d", len(configs), checkpoint, state.step)
    graph = StepGraph(state, device, configs[0].data.flip, graph_backend) if graphs else None
    total = state.schedule.total_steps
    loss_every = max(1, total // LOSS_POINTS)
    snapshots = configs[0].train.snapshots
    snapshot_at = {round(total * (i + 1) / snapshots) for i in range(snapshots)} | {0}
    start = last_save = time.perf_counter()

    def wall() -> float:
        return state.wall_s + time.perf_counter() - start

    recording = False  # this process's first step opens a PhaseRun even mid-phase (resumed)
    with interrupt_at_step_end() as interrupted:
        while state.step < total and not all(d is not None for d in state.diverged):
            if state.step in snapshot_at:
                record_snapshots(state)
            factor = state.schedule.factor(state.step)
            new_phase = factor != state.factor
            if new_phase:
                start_phase(state, factor)
            if new_phase or not recording:
                recording = True
                on = graph is not None and graph.enabled
                state.phase_runs.append(PhaseRun(state.schedule.phase(state.step), factor, state.step, 0, on).to_dict())
                if graph is not None:
                    graph.new_phase()
            train_step(state, data, graph)
            if state.step % loss_every == 0 or state.step == total:
                record_losses(state)
                if on_step is not None:
                    on_step(state.step, total)
            due = state.step < total and time.perf_counter() - last_save >= checkpoint_every_s
            # Interrupted, even after the last step: resuming from it only builds the outcomes.
            if checkpoint is not None and (due or interrupted["hit"]):
                save_checkpoint(checkpoint, checkpoint_state(state, wall()))
                last_save = time.perf_counter()
            if interrupted["hit"]:
                log.info("interrupted at step %d%s", state.step, f"; checkpoint in {checkpoint}" if checkpoint else "")
                raise KeyboardInterrupt
    if graph is not None:
        graph.close()
    execution = Execution(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        phases=tuple(PhaseRun(**r) for r in state.phase_runs),
        kernels=tuple(kernel_used(o) for o in state.optimizers),
        fp32_flags=fp32_flags(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None,
        torch_threads=torch.get_num_threads(),
    )
    outcomes = []
    for i, (h, d) in enumerate(zip(state.histories, state.diverged)):
        if d is None:
            h["snapshot_steps"].append(total)
            h["snapshots"].append(bn_snapshot(state.net, i))
        model = unstack_model(state.net, i, device).eval()
        outcomes.append(TrainOutcome(model, total if d is None else d, wall(), h, d, execution))
    return outcomes
