"""The one training loop, for one run or a group of runs trained together.

In:  RunConfigs that share architecture, data, batch size, schedule and precision (see
     ``group_key``; optimizers, learning rates and regularizers may differ), and an ImageData
     already on the training device.
Out: one ``TrainOutcome`` per run: the trained single-run model, its histories (loss, learning
     rate, BN gamma/beta snapshots for the paper's Figure 2) and whether/when its loss diverged.

Every run of claimbench's own (not a registered trainer's) goes through ``train_models``, by way
of ``claimbench.train.train_runs``; a single run is a group of one. Seeds are set in
``init_state`` (``claimbench.train.state``): each run's initialisation from its ``train.seed``, its
data order and flips from its own CPU generator seeded with the same value, so a CPU run is
bit-for-bit repeatable and a run trains the same whether alone or in a group.

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
phase changes (``claimbench.train.graphs``). What actually ran (graph captures, replays or the
error that stopped them, per phase; optimizer kernels; precision flags) is returned with each
outcome as ``Execution`` (``claimbench.train.outcome``).

The loop reads top to bottom: ``init_state`` builds the ``TrainState``; ``train_models`` runs
``start_phase`` / ``train_step`` / ``record_losses`` / ``record_snapshots`` /
``save_checkpoint`` as the step count asks; ``claimbench.train.checkpoint`` converts the state to
and from a plain dict that loads without pickle.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from claimbench.config import RunConfig
from claimbench.data.base import ImageData
from claimbench.train.checkpoint import checkpoint_state, load_checkpoint, restore_state, save_checkpoint
from claimbench.train.device import fp32_flags, set_precision
from claimbench.train.graphs import CudaGraphBackend, GraphBackend, StepGraph, graphs_wanted
from claimbench.train.models import unstack_model
from claimbench.train.optim import CapturableAdagrad, kernel_used, set_lr
from claimbench.train.outcome import Execution, PhaseRun, TrainOutcome, bn_snapshot
from claimbench.train.state import TrainState, init_state

log = logging.getLogger(__name__)

# How many points the loss curve keeps, whatever the run length.
LOSS_POINTS = 200
# "plain" steps every optimizer one parameter at a time (foreach=False, fused=False) instead of
# the fastest kernels the installed torch has ("fastest", the default): the reference a machine's
# fast kernels are checked against (``claimbench gpu-check``), and the way to train without them.
OPTIMIZER_KERNELS_ENV = "CLAIMBENCH_OPTIMIZER_KERNELS"
OPTIMIZER_KERNELS = ("fastest", "plain")


def gather_batch(data: ImageData, index: torch.Tensor, flip: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One gather for all K runs: (B, K * C, H, W) images (run k in channels k*C..(k+1)*C, the
    stacked network's layout) and (K, B) labels."""
    x, y = data.train_batch(index, flip)  # (K, B, C, H, W), (K, B)
    k, b = index.shape
    return x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:]), y


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


def record_snapshots(state: TrainState) -> None:
    for i, h in enumerate(state.histories):
        h["snapshot_steps"].append(state.step)
        h["snapshots"].append(bn_snapshot(state.net, i))


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

    Only claimbench's own runs: a run whose config names a registered trainer (``train.trainer``)
    is trained by it, and ``claimbench.train.train_runs`` is where that is decided.
    """
    if any(c.train.trainer is not None for c in configs):
        raise ValueError("a run that names a registered trainer is trained by it: call claimbench.train.train_runs")
    kernels = kernels or os.environ.get(OPTIMIZER_KERNELS_ENV) or "fastest"
    if kernels not in OPTIMIZER_KERNELS:
        raise ValueError(f"optimizer kernels {kernels!r} (from the kernels argument or ${OPTIMIZER_KERNELS_ENV}): "
                         f"expected one of {', '.join(OPTIMIZER_KERNELS)}")
    set_precision(configs[0].train.precision, device, cudnn_benchmark, configs[0].train.flush_denormals)
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
    graph = StepGraph(state, device, configs[0].data.flip, graph_backend, step_on_batch) if graphs else None
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
