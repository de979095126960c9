"""A training step as one replayable graph (CUDA graphs), and when a group's step is to be one.

In:  a ``TrainState``, the eager step (``claimbench.train.loop.step_on_batch``, handed in), a
     ``GraphBackend`` (``CudaGraphBackend``; tests pass a fake that runs on the CPU).
Out: ``StepGraph.run``: one step, by eager warm-up, capture or replay, and which ``PhaseRun``
     counter it adds to; ``graphs_wanted`` / ``use_cuda_graphs``: whether a group's step should be
     a graph.

The step is handed in rather than imported so that the loop, which owns the step, imports this
module and not the other way round.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Protocol

import torch

from claimbench.config import RunConfig
from claimbench.data.base import ImageData
from claimbench.train.optim import GRAPH_SAFE
from claimbench.train.state import TrainState

log = logging.getLogger(__name__)

# "0" turns CUDA graphs off (they are on by default on CUDA).
CUDA_GRAPHS_ENV = "CLAIMBENCH_CUDA_GRAPHS"


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
    """``step_on_batch`` (the loop's eager step, handed in) as one graph (``backend``; optimizers
    made ``capturable`` if it says so).

    The first steps run eagerly (``backend.warmup``: optimizer state, cuDNN autotuning), then the
    step is captured reading static index/flip buffers and replayed; the learning rate and weight
    decay are constants of the graph, so ``new_phase`` (at each phase change) frees the graph and
    the next step captures again, into a new pool. A failed capture, whatever torch raised,
    turns graphs off for the rest of the run: logged, and recorded in the phase's ``PhaseRun``.
    """

    WARMUP_STEPS = 3

    def __init__(self, state: TrainState, device: torch.device, flip: bool, backend: GraphBackend,
                 step_on_batch: Callable[[TrainState, ImageData, torch.Tensor, torch.Tensor | None], None]):
        k, b = state.runs, state.stream.batch
        self.backend = backend
        self.step_on_batch = step_on_batch
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
            self.step_on_batch(state, data, self.index, self.flip)

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
