"""``claimbench gpu-check --self-test``: the check shows, on this machine, that it catches the faults it
exists for.

In:  this machine's device (a CPU is enough: seconds to a minute).
Out: one line per kind of fault injected into the fast path, "caught" with the run and tensor
     the verdict names, or "missed"; ``SelfTestResult.ok`` only when the fault-free fast path
     agrees and every fault is caught.

One small group of three runs (Adam with L2, Adam with weight decay, SGD: a mix a stacked group
really trains) is trained once the plain way and once in float64, the reference every fast path
is judged against (``claimbench.gpu_check.Bench``). Then the fast path trains once without a fault
(the control: if it disagreed, "caught" would prove nothing) and once per fault, each judged by
the check's own verdict (``Bench.verdict``: every tensor, float64 confirmation). The faults are
injected into the fast path only, as the bugs they stand for would be: into its final state (a
scaled BatchNorm gamma, a corrupted running variance, a perturbed head or last convolution, two
runs' slices swapped, a run missing from the stack), into its graph backend (a replay that steps
twice; on a CPU, where there are no CUDA graphs, a stand-in backend whose replay calls the eager
step, so the graphed path runs there too), or into the training loop while the fast path trains
(a phase change one step late, weight decay applied twice to one group).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from claimbench.config import RunConfig
from claimbench.runconfig import run_config_from_dict
from claimbench.gpu_check.judge import Verdict

# The group: three runs that stack (same architecture, data, batch and schedule), one of them with
# weight decay so that a regularizer group can be applied twice.
GROUP = (("adam", "l2"), ("adam", "wd"), ("sgd", "l2"))


class EagerGraphs:
    """A graph backend for a machine without CUDA graphs: a capture keeps the step and a replay
    runs it, so the graphed path of the loop (warm-ups, capture per phase, replays) runs on a CPU."""

    capturable = False

    def warmup(self, step) -> None:
        step()

    def new_pool(self) -> object:
        return object()

    def capture(self, step, pool):
        return step  # a capture records, it does not run

    def replay(self, graph) -> None:
        graph()

    def release(self, graph) -> None:
        pass


class ReplayTwice:
    """A backend whose replay steps twice: the fault of a graph replayed once too often."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.capturable = inner.capturable

    def warmup(self, step) -> None:
        self.inner.warmup(step)

    def new_pool(self) -> object:
        return self.inner.new_pool()

    def capture(self, step, pool):
        return self.inner.capture(step, pool)

    def replay(self, graph) -> None:
        self.inner.replay(graph)
        self.inner.replay(graph)

    def release(self, graph) -> None:
        self.inner.release(graph)


# -- the faults ------------------------------------------------------------------------------------


def _modules(model, kind: str) -> list:
    import torch.nn as nn

    cls = {"bn": nn.modules.batchnorm._BatchNorm, "conv": nn.Conv2d, "linear": nn.Linear}[kind]
    return [(name, m) for name, m in model.named_modules() if isinstance(m, cls)]


def _scale(run: int, kind: str, which: int, attr: str, factor: float):
    """Multiply ``attr`` of the ``which``-th module of ``kind`` of run ``run`` by ``factor``."""
    import torch

    def corrupt(outcomes: list) -> tuple[list, str]:
        name, module = _modules(outcomes[run].model, kind)[which]
        with torch.no_grad():
            getattr(module, attr).mul_(factor)
        return outcomes, f"{name}.{attr}"

    return corrupt


def _swap(first: int, second: int):
    """Swap one convolution's weights between two runs: a slice misplaced in one layer."""
    import torch

    def corrupt(outcomes: list) -> tuple[list, str]:
        convs = [_modules(o.model, "conv") for o in (outcomes[first], outcomes[second])]
        (name, a), (_, b) = convs[0][len(convs[0]) // 2], convs[1][len(convs[1]) // 2]
        with torch.no_grad():
            saved = a.weight.clone()
            a.weight.copy_(b.weight)
            b.weight.copy_(saved)
        return outcomes, f"{name}.weight"

    return corrupt


def _drop_last(outcomes: list) -> tuple[list, str]:
    return outcomes[:-1], "(no outcome)"


@contextlib.contextmanager
def _phase_late() -> Iterator[None]:
    """Every learning-rate phase starts one step late: step s runs at step s - 1's rate."""
    from claimbench.train.optim import StepSchedule

    real = StepSchedule.factor
    StepSchedule.factor = lambda self, step: real(self, max(0, step - 1))  # type: ignore[method-assign]
    try:
        yield
    finally:
        StepSchedule.factor = real  # type: ignore[method-assign]


@contextlib.contextmanager
def _decay_twice() -> Iterator[None]:
    """The weight-decay group is decayed twice per step (the L2 group is left alone)."""
    from claimbench.train.optim import Regularizer

    real = Regularizer.after_step

    def twice(self, lr_factor: float) -> None:
        real(self, lr_factor)
        if self.kind == "wd":
            real(self, lr_factor)

    Regularizer.after_step = twice  # type: ignore[method-assign]
    try:
        yield
    finally:
        Regularizer.after_step = real  # type: ignore[method-assign]


@dataclass(frozen=True)
class Fault:
    """One kind of fault and how it enters the fast path (one of the three hooks)."""

    name: str
    # Changes the fast path's final state; returns the outcomes and the tensor it touched.
    corrupt: Callable[[list], tuple[list, str]] | None = None
    loop: Callable[[], contextlib.AbstractContextManager] | None = None  # patches the loop while it trains
    replay_twice: bool = False
    run: int | None = None  # the run it touches, when it touches one


FAULTS = (
    Fault("one BatchNorm gamma x1.1", corrupt=_scale(1, "bn", 0, "weight", 1.1), run=1),
    Fault("a running variance corrupted (x1.5)", corrupt=_scale(0, "bn", 1, "running_var", 1.5), run=0),
    Fault("the head perturbed (last linear weight x1.1)", corrupt=_scale(2, "linear", -1, "weight", 1.1), run=2),
    Fault("the last convolution perturbed (x1.2)", corrupt=_scale(0, "conv", -1, "weight", 1.2), run=0),
    Fault("two runs' slices swapped (one convolution)", corrupt=_swap(0, 1), run=0),
    Fault("a graph replay that steps twice", replay_twice=True),
    Fault("a learning-rate phase change one step late", loop=_phase_late),
    Fault("weight decay applied twice to one group", loop=_decay_twice),
    Fault("a run lost from the stack", corrupt=_drop_last, run=len(GROUP) - 1),
)


def faulty(fault: Fault | None, touched: list[str]):
    """A ``train_fast`` with ``fault`` in it (None: the real one); ``touched`` collects the tensors
    a state fault touched."""

    def trainer(configs, data, device, off, backend, workdir, stop, dtype=None):
        import claimbench.gpu_check as gc

        if fault is not None and fault.replay_twice:
            backend = ReplayTwice(backend)
        hook = fault.loop() if fault is not None and fault.loop else contextlib.nullcontext()
        with hook:
            out = gc.train_fast(configs, data, device, off, backend, workdir, stop, dtype)
        if fault is not None and fault.corrupt is not None and out.error is None:
            out.outcomes, tensor = fault.corrupt(list(out.outcomes))
            touched.append(tensor)
        return out

    return trainer


# -- the self-test ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultResult:
    fault: str
    caught: bool
    verdict: Verdict
    touched: str  # the tensor a state fault touched ("" for faults of the loop)
    seconds: float

    def line(self) -> str:
        v = self.verdict
        if self.caught:
            at = f"{v.run}: {v.tensor}" if v.run else v.why
            ratio = "" if not math.isfinite(v.worst) else f" at {v.worst:.3g}x its tolerance"
            return f"caught  {self.fault}: {at}{ratio}"
        return f"MISSED  {self.fault}: the check agrees (worst {v.worst:.2g}x, {v.where})"


@dataclass(frozen=True)
class SelfTestResult:
    control: Verdict  # the fast path without a fault
    faults: tuple[FaultResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.control.agrees and all(f.caught for f in self.faults)


def self_test_group(quick: bool, steps: int) -> list[RunConfig]:
    """The self-test's three runs at the check's window (shrunk on a CPU)."""
    from claimbench.gpu_check import window

    return [window(run_config_from_dict({
        "data": {"dataset": "cifar10"}, "optim": {"name": name, "regularizer": reg, "lam": 1e-4},
        "train": {"unit": "steps", "phases": [1, 1], "batch_size": 40, "seed": i}}), steps, quick)
        for i, (name, reg) in enumerate(GROUP)]


def run_self_test(device: str = "auto", *, faults: tuple[Fault, ...] | None = None,
                  say: Callable[[str], None] = print) -> SelfTestResult:
    """Inject each of ``faults`` (default ``FAULTS``) into the fast path and say whether the check
    caught it."""
    import torch

    import claimbench.gpu_check as gc
    from claimbench.train.device import resolve_device
    from claimbench.train.graphs import CudaGraphBackend

    faults = FAULTS if faults is None else faults
    started = time.perf_counter()
    dev = resolve_device(device)
    quick = dev.type != "cuda"
    steps = gc.CPU_STEPS if quick else gc.GPU_STEPS
    configs = self_test_group(quick, steps)
    backend = EagerGraphs() if dev.type != "cuda" else CudaGraphBackend()
    say(f"gpu-check self-test on {gc.device_facts(dev)['device']}: {len(faults)} faults injected into the fast "
        f"path of a group of {len(configs)} runs ({', '.join(f'{n}+{r}' for n, r in GROUP)}), {steps} steps"
        + (" (CPU: shrunk network; graphs by an eager stand-in)" if quick else ""))
    off = frozenset() if threading_main() else frozenset({"resume"})
    with tempfile.TemporaryDirectory(prefix="claimbench-gpu-self-test-") as tmp:
        data = gc.fabricated_data(configs[0], dev)
        bench = gc.Bench.build(configs, data, dev, backend, Path(tmp), gc.resume_at(steps), graphs_checked=True)
        control = bench.verdict(bench.fast(off, trainer=faulty(None, [])), off, trainer=faulty(None, []))
        say(f"control (no fault): {'agrees' if control.agrees else 'DISAGREES'} "
            f"(worst {control.worst:.2g}x, {control.why or control.where})")
        results = []
        for fault in faults:
            t0 = time.perf_counter()
            touched: list[str] = []
            trainer = faulty(fault, touched)
            v = bench.verdict(bench.fast(off, trainer=trainer), off, trainer=trainer)
            r = FaultResult(fault.name, not v.agrees, v, touched[0] if touched else "", time.perf_counter() - t0)
            say(r.line())
            results.append(r)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    result = SelfTestResult(control, tuple(results), time.perf_counter() - started)
    caught = sum(r.caught for r in results)
    say(f"self-test: {caught} of {len(results)} faults caught"
        + ("" if control.agrees else "; the fault-free fast path disagrees, so nothing is proven")
        + f"; {result.seconds:.0f} s")
    return result


def threading_main() -> bool:
    """The resume feature interrupts with a real SIGINT, which only the main thread can take."""
    import threading

    return threading.current_thread() is threading.main_thread()
