"""The graph path of the training loop, run for real on the CPU with a fake graph backend.

``FakeGraphs`` stands where torch.cuda's graphs stand (``claimbench.train.graphs.GraphBackend``): its
capture records the step without running it, as CUDA does, and its replay runs it; it records
every warm-up, pool, capture, replay and release, and flags what a real GPU would not survive
(a pool given to two graphs, a released graph replayed or released twice). With it the real
``train_models`` loop shows: capture after warm-up, one replay per step, a new capture into a
new pool at each learning-rate phase, resume with graphs and this run's optimizer kernels, and
a failed capture turning graphs off for the rest of the run and recorded as failed, down to the
provenance a stored run carries. No GPU is involved: what CUDA itself does inside a capture is
not tested here.
"""

from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass

import pytest
import torch

import claimbench.group as group_module
from claimbench.cache import RunStore, run_key
from claimbench.runconfig import run_config_from_dict
from claimbench.train.graphs import StepGraph
from claimbench.train import train_runs
from claimbench.train.loop import train_models
from tests.helpers import BN_CANCELLED, tiny_data

CPU = torch.device("cpu")


def config(seed: int, name: str = "adam", phases=(5, 4, 3), **optim):
    return run_config_from_dict({
        "model": {"width": 0.0625, "pool_after": [1, 3]},
        "optim": {"name": name, "regularizer": "l2", "lam": 1e-2, **optim},
        "train": {"unit": "steps", "phases": list(phases), "batch_size": 8, "snapshots": 2, "seed": seed},
    })


@dataclass
class FakeGraph:
    number: int
    step: object
    pool: int
    released: bool = False


class FakeGraphs:
    """A graph backend for the CPU; ``fail`` maps a capture's number (0-based) to what it raises."""

    def __init__(self, capturable: bool = False, fail: dict[int, BaseException] | None = None):
        self.capturable = capturable
        self.fail = fail or {}
        self.events: list[str] = []
        self.problems: list[str] = []
        self.graphs: list[FakeGraph] = []
        self.pools_made = 0
        self.pools_used: set[int] = set()
        self.attempts = 0

    def warmup(self, step) -> None:
        self.events.append("warmup")
        step()

    def new_pool(self) -> int:
        self.pools_made += 1
        return self.pools_made

    def capture(self, step, pool: int) -> FakeGraph:
        attempt, self.attempts = self.attempts, self.attempts + 1
        if pool in self.pools_used:
            self.problems.append(f"pool {pool} given to a second graph")
        self.pools_used.add(pool)
        if attempt in self.fail:
            self.events.append(f"capture failed ({type(self.fail[attempt]).__name__})")
            raise self.fail[attempt]
        graph = FakeGraph(len(self.graphs), step, pool)
        self.graphs.append(graph)
        self.events.append(f"capture g{graph.number}")
        return graph  # not run: a capture records kernels, the replay runs them

    def replay(self, graph: FakeGraph) -> None:
        if graph.released:
            self.problems.append(f"g{graph.number} replayed after release")
        self.events.append(f"replay g{graph.number}")
        graph.step()

    def release(self, graph: FakeGraph) -> None:
        if graph.released:
            self.problems.append(f"g{graph.number} released twice")
        graph.released = True
        self.events.append(f"release g{graph.number}")


def states_equal(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def phases(outcome) -> list[tuple]:
    return [(p.phase, p.first_step, p.steps, p.warmup_steps, p.captures, p.replays, p.eager_steps)
            for p in outcome.execution.phases]


GROUP = [config(0, "adam"), config(1, "sgd", regularizer="wd")]


def test_capture_after_warmup_replay_every_step_and_capture_again_per_phase_in_a_new_pool():
    data = tiny_data()
    fake = FakeGraphs()
    graphed = train_models(GROUP, data, CPU, graph_backend=fake)
    assert fake.problems == []
    w = StepGraph.WARMUP_STEPS
    assert w == 3  # the numbers below are written for it
    # 12 steps in phases of 5, 4, 3: warm-up, then one capture per phase and a replay per step.
    assert fake.events == (["warmup"] * 3 + ["capture g0"] + ["replay g0"] * 2
                           + ["release g0", "capture g1"] + ["replay g1"] * 4
                           + ["release g1", "capture g2"] + ["replay g2"] * 3 + ["release g2"])
    assert len({g.pool for g in fake.graphs}) == 3  # every graph its own pool
    assert phases(graphed[0]) == [(0, 0, 5, 3, 1, 2, 0), (1, 5, 4, 0, 1, 4, 0), (2, 9, 3, 0, 1, 3, 0)]
    assert graphed[0].execution.cuda_graphs and all(p.error is None for p in graphed[0].execution.phases)
    # The replayed steps read the static index/flip buffers: the runs end exactly as without graphs.
    eager = train_models(GROUP, data, CPU)
    for g, e in zip(graphed, eager):
        assert states_equal(g, e) and g.history == e.history
    assert not eager[0].execution.cuda_graphs
    assert [(p.graphs, p.eager_steps) for p in eager[0].execution.phases] == [(False, 5), (False, 4), (False, 3)]


def test_a_phase_shorter_than_the_warmup_is_not_captured_and_graphs_still_count():
    fake = FakeGraphs()
    (out,) = train_models([config(0, phases=(2, 4))], tiny_data(), CPU, graph_backend=fake)
    assert fake.problems == []
    assert phases(out) == [(0, 0, 2, 2, 0, 0, 0), (1, 2, 4, 1, 1, 3, 0)]
    assert out.execution.cuda_graphs


FAILURES = [
    RuntimeError("CUDA error: operation not permitted when stream is capturing"),
    torch.cuda.OutOfMemoryError("CUDA out of memory while capturing"),
    AssertionError("Attempting CUDA graph capture of step() for an instance of Adam but capturable is False"),
    ValueError("bad value during capture"),
    TypeError("bad type during capture"),
    NotImplementedError("op has no capture support"),
]
if hasattr(torch, "AcceleratorError"):  # torch >= 2.8 raises it for CUDA errors
    FAILURES.append(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_a_failed_capture_turns_graphs_off_for_the_rest_of_the_run_and_is_recorded(error):
    data = tiny_data()
    fake = FakeGraphs(fail={1: error})  # the second capture: the first learning-rate drop
    graphed = train_models(GROUP, data, CPU, graph_backend=fake)
    assert fake.problems == []
    # The old graph is freed, the new capture fails, and nothing is captured or replayed again.
    assert fake.events[-2:] == ["release g0", f"capture failed ({type(error).__name__})"]
    execution = graphed[0].execution
    assert not execution.cuda_graphs
    p0, p1, p2 = execution.phases
    assert (p0.captures, p0.replays, p0.error) == (1, 2, None)
    assert p1.error == f"{type(error).__name__}: {error}"
    assert (p1.captures, p1.replays, p1.eager_steps) == (0, 0, 4)
    assert (p2.graphs, p2.captures, p2.eager_steps, p2.error) == (False, 0, 3, None)
    # A failed capture ran nothing: the step is taken once, eagerly.
    for g, e in zip(graphed, train_models(GROUP, data, CPU)):
        assert states_equal(g, e) and g.history == e.history


def test_ctrl_c_during_capture_stops_training_and_is_not_taken_for_a_failed_capture():
    fake = FakeGraphs(fail={0: KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        train_models(GROUP, tiny_data(), CPU, graph_backend=fake)
    assert fake.attempts == 1


def test_provenance_of_a_stored_run_says_a_failed_capture_failed(tmp_path, monkeypatch):
    cfg = run_config_from_dict({
        "model": {"width": 0.0625}, "data": {"dataset": "digits"},
        "optim": {"name": "adam", "regularizer": "l2", "lam": 1e-2},
        "train": {"unit": "steps", "phases": [6, 3], "batch_size": 20, "snapshots": 1},
    })
    fake = FakeGraphs(fail={0: RuntimeError("capture broke")})
    monkeypatch.setattr(group_module, "train_runs", functools.partial(train_runs, graph_backend=fake))
    (record,) = group_module.run_and_measure_group([cfg], device="cpu")
    store = RunStore(tmp_path)
    store.put(run_key(cfg), record)
    prov = store.get(run_key(cfg)).provenance  # as read back from provenance.json
    assert prov["cuda_graphs"] is False
    first = prov["cuda_graph_phases"][0]
    assert first["error"] == "RuntimeError: capture broke" and first["captures"] == 0 and first["eager_steps"] == 3
    assert prov["optimizer_kernel"]["kernel"] in ("fused", "foreach", "plain")
    assert prov["precision"] == "fp32" and prov["device"] == "cpu" and prov["torch_threads"] == torch.get_num_threads()
    assert prov["cudnn_benchmark"] is False and isinstance(prov["fp32_flags"], dict)

    # The same run with captures that work says so.
    monkeypatch.setattr(group_module, "train_runs", functools.partial(train_runs, graph_backend=FakeGraphs()))
    (ok,) = group_module.run_and_measure_group([cfg], device="cpu")
    assert ok.provenance["cuda_graphs"] is True
    assert [p["captures"] for p in ok.provenance["cuda_graph_phases"]] == [1, 1]


def interrupted_at(step: int, configs, data, path, backend):
    def interrupt(at, total):
        if at == step:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_models(configs, data, CPU, on_step=interrupt, checkpoint=path, checkpoint_every_s=1e9,
                     graph_backend=backend)


def test_resume_keeps_graphs_on_and_this_runs_optimizer_kernels(tmp_path):
    data = tiny_data()
    reference = train_models(GROUP, data, CPU, graph_backend=FakeGraphs())
    path = tmp_path / "partial.pt"
    interrupted_at(2, GROUP, data, path, FakeGraphs())
    # A checkpoint written by a process with other kernels (a GPU's capturable, unfused Adam):
    # torch's load_state_dict would copy these flags over the ones this run chose.
    saved = torch.load(path, map_location="cpu", weights_only=True)
    for opt in saved["optimizers"]:
        for group in opt["param_groups"]:
            group.update(fused=False, foreach=False, capturable=True)
    torch.save(saved, path)

    fake = FakeGraphs()
    resumed = train_models(GROUP, data, CPU, checkpoint=path, checkpoint_every_s=1e9, graph_backend=fake)
    assert fake.problems == []
    assert resumed[0].execution.kernels == reference[0].execution.kernels
    assert {k.optimizer: k.kernel for k in resumed[0].execution.kernels}["adam"] == "fused"  # CPU's fused Adam
    assert not any(k.capturable for k in resumed[0].execution.kernels)
    # Steps 0-1 ran in the first process (recorded in the checkpoint), the rest with graphs here.
    assert phases(resumed[0]) == [(0, 0, 2, 2, 0, 0, 0), (0, 2, 3, 3, 0, 0, 0), (1, 5, 4, 0, 1, 4, 0),
                                  (2, 9, 3, 0, 1, 3, 0)]
    assert resumed[0].execution.cuda_graphs
    for got, ref in zip(resumed, reference):
        assert states_equal(got, ref) and got.history == ref.history


def test_an_eager_checkpoint_resumes_with_a_capturable_adagrad(tmp_path):
    # Written without graphs (torch's Adagrad, its own kernel flags), resumed with graphs: the
    # resumed run steps with the capturable Adagrad and its flags, and ends where the eager run
    # ends to float tolerance.
    data = tiny_data()
    runs = [config(0, "adagrad"), config(1, "sgd")]
    eager = train_models(runs, data, CPU)
    path = tmp_path / "partial.pt"
    interrupted_at(4, runs, data, path, None)
    fake = FakeGraphs(capturable=True)
    resumed = train_models(runs, data, CPU, checkpoint=path, checkpoint_every_s=1e9, graph_backend=fake)
    assert fake.problems == []
    # Steps 0-3 ran eagerly in the first process: the run as a whole was not all graphs.
    assert phases(resumed[0]) == [(0, 0, 4, 0, 0, 0, 4), (0, 4, 1, 1, 0, 0, 0), (1, 5, 4, 2, 1, 2, 0),
                                  (2, 9, 3, 0, 1, 3, 0)]
    assert not resumed[0].execution.cuda_graphs
    kernels = {k.optimizer: k for k in resumed[0].execution.kernels}
    assert kernels["adagrad"].implementation == "CapturableAdagrad" and kernels["adagrad"].capturable
    assert kernels["adagrad"].kernel == "foreach"
    assert eager[0].execution.kernel("adagrad").implementation == "Adagrad"
    for got, ref in zip(resumed, eager):
        for (name, a), b in zip(got.model.state_dict().items(), ref.model.state_dict().values()):
            # CPU's fused Adagrad and the capturable one round differently (measured: 2e-6 after
            # 12 steps); the fc bias before BatchNorm is rounding noise either way (BN_CANCELLED).
            assert name in BN_CANCELLED or torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name


def test_a_group_with_adagrad_keeps_its_graphs():
    # torch's Adagrad cannot be captured; with graphs the group steps a capturable one, and every
    # run of the group trains as it does without graphs (float tolerance for the Adagrad run).
    data = tiny_data()
    # (No Adam here: torch's capturable Adam refuses CPU tensors.)
    runs = [config(0, "adagrad"), config(1, "adagrad", regularizer="wd", lr=3e-2), config(2, "sgd")]
    graphed = train_models(runs, data, CPU, graph_backend=FakeGraphs(capturable=True))
    assert graphed[0].execution.cuda_graphs
    assert graphed[0].execution.kernel("adagrad").implementation == "CapturableAdagrad"
    eager = train_models(runs, data, CPU)
    for got, ref in zip(graphed, eager):
        for (name, a), b in zip(got.model.state_dict().items(), ref.model.state_dict().values()):
            # CPU's fused Adagrad and the capturable one round differently (measured: 2e-6 after
            # 12 steps); the fc bias before BatchNorm is rounding noise either way (BN_CANCELLED).
            assert name in BN_CANCELLED or torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("where", ["capture_begin", "capture_end"])
def test_the_cuda_backend_goes_back_to_the_callers_stream_when_capture_fails(monkeypatch, where):
    # torch.cuda.graph enters the capture stream before capture_begin and leaves it after
    # capture_end; when either raises it stays there. torch.cuda is faked: no GPU here.
    from claimbench.train.graphs import CudaGraphBackend

    current = ["default"]

    class FakeCapture:
        def __init__(self, graph, pool=None, stream=None):
            self.stream = stream

        def __enter__(self):
            current[0] = self.stream
            if where == "capture_begin":
                raise RuntimeError("capture_begin failed")

        def __exit__(self, *exc):
            raise RuntimeError("capture_end failed")  # skips torch's switch back, as torch does

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "Stream", lambda: "side")
    monkeypatch.setattr(torch.cuda, "graph", FakeCapture)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: current.__setitem__(0, stream))
    with pytest.raises(RuntimeError, match=where):
        CudaGraphBackend().capture(lambda: None, pool=None)
    assert current[0] == "default"
