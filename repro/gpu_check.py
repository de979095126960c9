"""``repro gpu-check``: prove the fast training path on this machine in minutes, before the long run.

In:  the runs a tier plans (``repro.plan``), this machine's device, a cache root.
Out: ``CheckResult``: per kind of group (dataset x architecture x the optimizers it mixes x graphs
     or not x folder data or not, derived from the plan's groups of 16), whether each fast feature
     gives the numbers the plain loop gives, steady-state step times of both; a markdown report; a
     record under the cache root (``gpu-check.json``, keyed by machine, driver, torch and code)
     that the training path consults (``SwitchedOff``): a feature that disagreed or raised is
     switched off for that kind of group on this machine, and said so in one line.

For each kind, one real group of its runs (up to 16) trains a few dozen steps twice, on fabricated
data of the dataset's real shape and classes (random tensors: the check needs no dataset):

(a) the fast path: the runs stacked in one network, the fastest optimizer kernels (fused, else
    foreach), the step as a CUDA graph where there is one (capturable kernels, captured again at
    the learning-rate drop inside the window), interrupted by a real SIGINT mid-phase, its
    checkpoint saved and resumed (which captures again);
(b) the plain path: each run alone, eager, no graph, optimizers stepping one parameter at a time.

The features (``FEATURES``): ``stacked``, ``kernels``, ``graphs``, ``resume``. When (a) and (b)
disagree beyond the tolerance, or (a) raises, or a capture fails, the fast path is trained again
with features switched off, cheapest loss first, until it agrees; those features are switched off
for that kind (``isolate``).

Tolerance (``Tolerance``, derived per run, optimizer and precision, never a fixed number).
Both paths compute the same arithmetic in a different order (grouped vs single convolutions,
fused vs per-parameter updates), so they differ by rounding: about one unit roundoff u per
operation (fp32: u = 2**-24; TF32 convolutions and matmuls round their operands to 10 mantissa
bits: u = 2**-11), which training then amplifies step after step by a factor no one can assume.
It is measured: every plain run trains again in float64 from the same float32 initial weights on
the same images (``exact_reference``), and the plain run's distance from that exact arithmetic,
per tensor (weights, BatchNorm running statistics) and for the loss curve, is its *spread*: how
much rounding the precision makes and training grows. A correct fast path is about as far from
exact as the plain path, so fast and plain are about one or two spreads apart; a fast-path run may
differ by ``SAFETY`` (30) x the spread, floored at ``FLOOR_ULPS`` (64) x u. A TF32 run's spread is
measured against the same float64 run, so its tolerance follows the rounding TF32 makes.

A discrete event (a ReLU or max-pool decision flipping under rounding) can move one run far past
any rounding-sized tolerance: measured on the CPU, one of three runs of a shrunk VGG-19 group at
170x while the same steps in float64 are bit-identical. So a float32 disagreement is confirmed in
float64: the fast path trains again in float64 and is judged against the exact reference with the
same tolerance; float64 rounding is 2**29 times finer, so what remains there is a fault of the
arithmetic (a lost, repeated or misplaced step, a wrong slice). It is excused only when float64
agrees and some run of the group agrees in float32 (lost precision strikes every run, so a group
whose every run disagrees, a group of one included, is never excused: fail closed).

Distance: for a float tensor ||a - b|| / ||b|| (the relative L2 distance: robust to single
elements near zero) over all but its largest 5% elementwise differences (a ReLU or max-pool
decision that flips under rounding moves a few elements, say 2 of a BatchNorm's 64 betas, by a
fraction of an Adam step, 1e-4, which no rounding-sized spread covers; a fault that loses, repeats
or corrupts steps moves most elements), integer tensors (BatchNorm's batch counter) must be equal,
the loss curve by the median of |a - b| / |b| over its points (every step's loss of every run).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

from repro.config import DATASET_SHAPES, RunConfig
from repro.plan import PARTS, form_groups, gpu_model_seconds, machine_name, part_of, run_cost, unsteady_steps

log = logging.getLogger(__name__)

# The fast features, in the order they are given up when the fast path disagrees: the one whose
# loss costs least first (resume is insurance; kernels gain little; graphs more; stacking most).
FEATURES = ("resume", "kernels", "graphs", "stacked")
FEATURE_TEXT = {
    "stacked": "runs stacked in one network",
    "kernels": "fused/foreach optimizer kernels",
    "graphs": "CUDA graphs (capture, replay, capture again per learning-rate phase)",
    "resume": "checkpoint save and resume",
}
# How the training path gives each feature up (``repro.execute.train_group``), for messages.
FEATURE_OFF = {
    "stacked": "groups of one run (--group-size 1 for every kind)",
    "kernels": "plain (for-loop) optimizer kernels",
    "graphs": "eager steps (no CUDA graph)",
    "resume": "no checkpoint: an interrupted group starts over",
}
# Datasets decoded from image folders for every batch (repro.data.folder.FolderImageData): their
# groups take host indices and no CUDA graph.
FOLDER_DATASETS = frozenset({"imagenet"})
RECORD_FILE = "gpu-check.json"

UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11}
SAFETY = 30.0
FLOOR_ULPS = 64.0
# The window: a few dozen steps on a GPU (3 warm-ups, a capture, replays; a phase change; a
# resume mid-phase 2, which warms up and captures again); on a CPU a short one on shrunk networks.
GPU_STEPS = 32
CPU_STEPS = 10
# CPU (quick) scale: the networks and groups shrunk so every kind runs in seconds.
CPU_WIDTH, CPU_BATCH, CPU_RUNS, CPU_FC, CPU_SIDE = 0.0625, 8, 4, 64, 64
EPOCH_BATCHES = 8  # fabricated training set: this many batches, so epochs turn over in the window
REPORT = Path("reports/gpu-check.md")
# Each tensor's largest 5% of elementwise differences are left out of its distance (tensors of at
# least 20 elements; see ``distances``).
TRIM, TRIM_MIN = 0.05, 20


# -- kinds of groups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupKind:
    dataset: str
    arch: str
    optimizers: tuple[str, ...]
    folder: bool  # data decoded on the host per batch (no graph)
    graphs: bool  # the step is a CUDA graph on a GPU
    precision: str = "fp32"

    @property
    def id(self) -> str:
        parts = [self.dataset, self.arch, "+".join(self.optimizers),
                 "folder data" if self.folder else "in memory", "graphs" if self.graphs else "no graphs"]
        return " ".join(parts + ([self.precision] if self.precision != "fp32" else []))

    @property
    def family(self) -> str:
        """Which data family it exercises (the CPU default covers one kind of each)."""
        if self.folder:
            return "folder data"
        side = DATASET_SHAPES[self.dataset][1]
        return "digits-like small" if side <= 16 else f"{side}x{side}"


def kind_of(configs: list[RunConfig]) -> GroupKind:
    c = configs[0]
    folder = c.data.dataset in FOLDER_DATASETS
    # Every optimizer here has a capturable step (repro.train.optim.GRAPH_SAFE): only folder data
    # keeps a group off graphs. What ran is read back from each outcome's Execution.
    return GroupKind(c.data.dataset, c.model.arch, tuple(sorted({x.optim.name for x in configs})), folder,
                     not folder, c.train.precision)


@dataclass(frozen=True)
class KindCase:
    kind: GroupKind
    configs: tuple[RunConfig, ...]  # the representative group, as planned
    groups: int  # groups of this kind in the plan


def kinds_of(configs: list[RunConfig], group_size: int = 16) -> list[KindCase]:
    """Every kind of group the runs form in groups of ``group_size`` (a GPU's), each with one real
    group: the paper's batch of 40 where the kind has it, else its largest group."""
    from repro.plan import PlannedRun

    runs = [PlannedRun("", c, steps=0, flops=run_cost(c)[1]) for c in configs]
    by: dict[GroupKind, list[list[RunConfig]]] = {}
    for g in form_groups(runs, group_size):
        members = [r.config for r in g]
        by.setdefault(kind_of(members), []).append(members)
    cases = []
    for kind, groups in by.items():
        best = min(groups, key=lambda g: (g[0].train.batch_size != 40, -len(g), run_cost(g[0])[1]))
        cases.append(KindCase(kind, tuple(best), len(groups)))
    return sorted(cases, key=lambda c: (c.kind.family, c.kind.id))


def select_kinds(cases: list[KindCase], max_kinds: int | None) -> list[KindCase]:
    """At most ``max_kinds``: one of each data family first (its smallest group), then in order."""
    if max_kinds is None or max_kinds >= len(cases):
        return list(cases)
    first: dict[str, KindCase] = {}
    for c in sorted(cases, key=lambda c: (len(c.configs), c.kind.id)):
        first.setdefault(c.kind.family, c)
    chosen = list(first.values())[:max_kinds]
    chosen += [c for c in cases if c not in chosen][: max_kinds - len(chosen)]
    return sorted(chosen, key=lambda c: (c.kind.family, c.kind.id))


# -- what trains -------------------------------------------------------------------------------------


def window(config: RunConfig, steps: int, quick: bool) -> RunConfig:
    """``config`` over ``steps`` steps in two learning-rate phases (so graphs are captured again
    inside the window), one snapshot; on the CPU (``quick``) shrunk in width and batch."""
    first = max(1, round(steps * 0.45))
    train = replace(config.train, unit="steps", phases=(first, steps - first), snapshots=1)
    if quick:
        train = replace(train, batch_size=min(train.batch_size, CPU_BATCH))
        side = config.data.image_size or DATASET_SHAPES[config.data.dataset][1]
        config = replace(config, data=replace(config.data, image_size=min(side, CPU_SIDE)))
        from repro.netshape import default_head

        head = config.model.fc_hidden if config.model.fc_hidden is not None else default_head(
            config.model.arch, config.data.dataset)
        config = replace(config, model=replace(config.model, width=min(config.model.width, CPU_WIDTH),
                                               fc_hidden=tuple(min(h, CPU_FC) for h in head)))
    return replace(config, train=train)


def resume_at(steps: int) -> int:
    """The step the fast path is interrupted after: mid-way through the second phase, leaving room
    for 3 warm-ups, a capture and replays after the resume."""
    first = max(1, round(steps * 0.45))
    return first + max(1, (steps - first) // 2 - 1)


def fabricated_data(config: RunConfig, device, seed: int = 0):
    """Random images of the dataset's real shape and classes (``DATASET_SHAPES``), EPOCH_BATCHES
    batches of training data. Folder datasets get host-decoded data (indices on the host, the
    batch copied to the device per step), as the image-folder loader does."""
    import torch

    from repro.data.base import ImageData

    d = config.data
    _, native_side, channels, classes = DATASET_SHAPES[d.dataset]
    side, classes = d.image_size or native_side, d.num_classes or classes
    n = config.train.batch_size * EPOCH_BATCHES
    g = torch.Generator().manual_seed(seed)
    # Learnable: each class its own mean image, plus noise. With labels unrelated to the images the
    # gradients are mostly cancelling noise, and Adam-like optimizers amplify rounding in them
    # into differences a check cannot tell from a fault.
    y = torch.randint(classes, (n,), generator=g)
    means = torch.randn(classes, channels, side, side, generator=g)
    x = means[y] + torch.randn(n, channels, side, side, generator=g)
    cls = _host_decoded_class() if d.dataset in FOLDER_DATASETS else ImageData
    b = config.train.batch_size
    return cls(f"fabricated {d.dataset}", x, y, x[:b].clone(), y[:b].clone(), classes).to(device)


def _host_decoded_class():
    """An ImageData that keeps its images on the host and copies each batch to the device, with
    host indices: the image-folder loader's contract (``decodes_on_host``, ``prefetch``)."""
    from typing import ClassVar

    import torch

    from repro.data.base import ImageData

    @dataclass(frozen=True)
    class HostDecodedData(ImageData):
        device: torch.device = torch.device("cpu")
        decodes_on_host: ClassVar[bool] = True

        def to(self, device):
            device = torch.device(device)
            return replace(self, device=device, train_y=self.train_y.to(device), test_y=self.test_y.to(device))

        def prefetch(self, index, flip=None) -> None:
            pass  # nothing to decode ahead: the images are in host memory

        def train_batch(self, index, flip):
            host = index.to("cpu")
            x = self.train_x[host]
            if flip is not None:
                x = torch.where(flip.to("cpu")[..., None, None, None], x.flip(-1), x)
            return x.to(self.device, non_blocking=True), self.train_y[index.to(self.train_y.device)]

    return HostDecodedData


@dataclass
class Trained:
    """One training path's outcomes (one per run, in the group's order), its step stamps per
    process and its error, if it raised."""

    outcomes: list = field(default_factory=list)
    segments: list[list[tuple[int, float]]] = field(default_factory=list)
    error: str | None = None


class Interrupted(Exception):
    pass


def _train(configs, data, device, *, stamps: list, **kw):
    """``train_models`` with a stamp after each recorded step (every step in a short window)."""
    from repro.train.loop import train_models

    segment: list[tuple[int, float]] = []
    stamps.append(segment)
    user = kw.pop("on_step", None)

    def on_step(step: int, total: int) -> None:
        segment.append((step, time.perf_counter()))
        if user is not None:
            user(step, total)

    return train_models(list(configs), data, device, on_step=on_step, **kw)


def train_fast(configs, data, device, off: frozenset[str], backend, workdir: Path, stop: int,
               dtype=None) -> Trained:
    """The fast path with the features in ``off`` switched off (``dtype``: as ``train_plain``)."""
    out = Trained()
    groups = [[c] for c in configs] if "stacked" in off else [list(configs)]
    graphs = "graphs" not in off and backend is not False
    kw = {"cuda_graphs": graphs, "graph_backend": backend if graphs and backend else None,
          "kernels": "plain" if "kernels" in off else "fastest", "dtype": dtype}
    try:
        for i, group in enumerate(groups):
            if "resume" in off:
                out.outcomes += _train(group, data, device, stamps=out.segments, **kw)
                continue
            path = workdir / f"fast-{i}.pt"
            path.unlink(missing_ok=True)
            interrupt_after(group, data, device, path, stop, out.segments, kw)
            out.outcomes += _train(group, data, device, stamps=out.segments, checkpoint=path,
                                   checkpoint_every_s=1e9, **kw)
            path.unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001  (any error of the fast path is a finding, reported by kind)
        out.error = f"{type(e).__name__}: {e}"
        log.debug("fast path raised:\n%s", traceback.format_exc())
    return out


def interrupt_after(group, data, device, path: Path, stop: int, segments: list, kw: dict) -> None:
    """Train until ``stop`` steps are done and interrupt as Ctrl-C does (SIGINT: the loop ends the
    step, saves the checkpoint and raises KeyboardInterrupt); only that interrupt is caught."""
    asked = {"at": None}

    def on_step(step: int, total: int) -> None:
        if step == stop:
            asked["at"] = step
            os.kill(os.getpid(), signal.SIGINT)

    try:
        _train(group, data, device, stamps=segments, checkpoint=path, checkpoint_every_s=1e9, on_step=on_step, **kw)
    except KeyboardInterrupt:
        if asked["at"] is None or not path.is_file():
            raise  # the user's Ctrl-C, not ours
        return
    raise Interrupted(f"the interrupt after step {stop} did not stop training (no checkpoint taken)")


def train_plain(configs, data, device, dtype=None) -> Trained:
    """Each run alone, eager, no graph, optimizers one parameter at a time (``dtype``: the
    network's and the data's, None: float32)."""
    out = Trained()
    for c in configs:
        out.outcomes += _train([c], data, device, stamps=out.segments, cuda_graphs=False, kernels="plain",
                               dtype=dtype)
    return out


# -- comparing ---------------------------------------------------------------------------------------


def distances(a, b) -> dict[str, float]:
    """Per tensor of the run's state (weights, BatchNorm statistics) and for its loss curve:
    relative L2 distance of ``a`` from ``b``; integer tensors: 0 if equal, inf if not."""
    import torch

    out: dict[str, float] = {}
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for name in sb:
        x, y = sa[name].detach().cpu(), sb[name].detach().cpu()
        if not y.is_floating_point():
            out[name] = 0.0 if torch.equal(x, y) else math.inf
            continue
        gaps = (x - y).double().abs().flatten()
        if gaps.numel() >= TRIM_MIN:
            # A discrete event (a ReLU or max-pool decision flipping under rounding) moves a few
            # elements by an lr-sized step; left out. A systematic fault moves most of them.
            gaps = gaps.sort().values[: gaps.numel() - math.ceil(TRIM * gaps.numel())]
        diff = torch.linalg.vector_norm(gaps).item()
        norm = torch.linalg.vector_norm(y.double()).item()
        out[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    la, lb = a.history.get("loss", []), b.history.get("loss", [])
    if len(la) != len(lb):
        out["loss"] = math.inf
    else:
        # The median over the curve's points: one point after a discrete event is not a fault; a
        # fault shifts the curve from its step on.
        gaps = sorted(abs(p - q) / max(abs(q), 1e-30) for p, q in zip(la, lb))
        out["loss"] = gaps[len(gaps) // 2] if gaps else 0.0
    if (a.diverged_at is None) != (b.diverged_at is None):
        out["diverged"] = math.inf
    return out


@dataclass(frozen=True)
class Tolerance:
    """How far a fast-path run may be from its plain run, per tensor: ``SAFETY`` x the measured
    spread, at least ``FLOOR_ULPS`` x the precision's unit roundoff (module docstring)."""

    precision: str
    spread: dict[str, float]

    @property
    def floor(self) -> float:
        return FLOOR_ULPS * UNIT_ROUNDOFF[self.precision]

    def of(self, name: str) -> float:
        if name == "diverged":
            return 0.0
        s = self.spread.get(name, 0.0)
        if math.isinf(s) and name != "loss":
            return 0.0  # an integer tensor: must be equal
        return max(self.floor, SAFETY * (s if math.isfinite(s) else 0.0))

    def worst(self, got: dict[str, float]) -> tuple[float, str]:
        """(the verdict's ratio, what it is); above 1 disagrees. The ratio is the larger of the
        median tensor's distance over its tolerance and the loss curve's: one tensor crossing a
        discrete event (measured on the CPU: up to 100x its tolerance, the median tensor under
        0.6x) is not a fault; a fault moves most tensors (a replay that steps twice: the median
        over 2,000x). Integer tensors and divergence must agree exactly."""
        import statistics

        ratios = {}
        for name, d in got.items():
            tol = self.of(name)
            ratios[name] = (0.0 if d == 0 else math.inf) if tol == 0 else d / tol
        strict = [n for n, r in ratios.items() if math.isinf(r)]
        if strict:
            return math.inf, f"{strict[0]} differs"
        tensors = [r for n, r in ratios.items() if n != "loss"]
        median = statistics.median(tensors) if tensors else 0.0
        top = max(ratios, key=lambda n: ratios[n])
        note = f"median tensor {median:.2g}, loss {ratios.get('loss', 0.0):.2g}, largest {top} {ratios[top]:.2g}"
        return max(median, ratios.get("loss", 0.0)), note


def in_float64(data):
    """``data`` with its images in float64: the exact-arithmetic reference's input."""
    import torch

    return replace(data, train_x=data.train_x.to(torch.float64), test_x=data.test_x.to(torch.float64))


def exact_reference(configs, data, device) -> Trained:
    """The plain path in float64 from the same float32 initial weights: exact arithmetic as far
    as a few dozen steps can tell (float64 rounding is 2**29 times finer than float32's). Its
    final weights come back as float32 (a run's single network is float32): one last rounding,
    64 times below the tolerance's floor."""
    import torch

    return train_plain(configs, in_float64(data), device, dtype=torch.float64)


def tolerance_of(plain_run, exact_run, precision: str) -> Tolerance:
    """The spread of a plain run: its distance per tensor from the exact-arithmetic run."""
    return Tolerance(precision, distances(plain_run, exact_run))


# -- step times --------------------------------------------------------------------------------------


def steady_step_s(trained: Trained, phases: list[dict] | None) -> float | None:
    """Median seconds of the steady-state steps (not the first step of each process, not warm-ups
    or captures: ``repro.plan.unsteady_steps``), over every process of ``trained``."""
    per: list[float] = []
    for seg in trained.segments:
        if len(seg) < 2:
            continue
        total = seg[-1][0]
        skip = unsteady_steps(phases, total) if phases else {0}
        skip = skip | {seg[0][0] - 1}  # the first step this process timed includes its set-up
        for (s0, t0), (s1, t1) in zip(seg, seg[1:]):
            if s1 > s0 and not skip.intersection(range(s0, s1)):
                per += [(t1 - t0) / (s1 - s0)] * (s1 - s0)
    if not per:
        return None
    per.sort()
    mid = len(per) // 2
    return per[mid] if len(per) % 2 else (per[mid - 1] + per[mid]) / 2


def plain_step_s(trained: Trained) -> float | None:
    """Seconds of one step of every run of the group, one after another: the sum of each run's
    median steady step."""
    times = [steady_step_s(Trained(segments=[seg]), None) for seg in trained.segments]
    return None if any(t is None for t in times) else sum(times)  # type: ignore[misc]


# -- one kind ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureResult:
    feature: str
    status: str  # "passed", "failed", "not applicable"
    why: str = ""

    def line(self) -> str:
        return self.status + (f": {self.why}" if self.why else "")


@dataclass(frozen=True)
class KindResult:
    kind: GroupKind
    runs: int
    groups: int
    batch_size: int
    trained_as: str  # what the window trained (scale, steps)
    features: tuple[FeatureResult, ...]
    worst: float  # the fast path's largest distance over its tolerance (with the features kept)
    worst_at: str
    tolerance: str  # the tolerance, summarised
    fast_step_s: float | None
    plain_step_s: float | None
    flops_per_step: float  # the real group's training FLOPs per step (all its runs)
    kernels: str
    seconds: float

    @property
    def switched_off(self) -> dict[str, str]:
        return {f.feature: f.why for f in self.features if f.status == "failed"}


def check_kind(case: KindCase, device, *, steps: int, quick: bool, backend, workdir: Path,
               say: Callable[[str], None]) -> KindResult:
    import torch

    started = time.perf_counter()
    kind = case.kind
    configs = [window(c, steps, quick) for c in case.configs[: CPU_RUNS if quick else None]]
    precision = configs[0].train.precision
    data = fabricated_data(configs[0], device)
    stop = resume_at(steps)

    applicable: dict[str, str] = {}  # feature -> why not applicable
    if len(configs) == 1:
        applicable["stacked"] = "a group of one run"
    on_gpu = torch.device(device).type == "cuda"
    if not kind.graphs:
        applicable["graphs"] = "folder data is decoded on the host per batch: never graphed"
    elif not on_gpu and not backend:
        applicable["graphs"] = "no CUDA device here (CPU run)"
    if threading.current_thread() is not threading.main_thread():
        applicable["resume"] = "needs the main thread (the interrupt is a real SIGINT)"
    features = [f for f in FEATURES if f not in applicable]
    na = frozenset(applicable)

    plain = train_plain(configs, data, device)
    exact = exact_reference(configs, data, device)
    tolerances = [tolerance_of(p, e, precision) for p, e in zip(plain.outcomes, exact.outcomes)]

    def run_ratios(t: Trained, ref: Trained) -> list[tuple[float, str]]:
        out = []
        for c, got, want, tol in zip(configs, t.outcomes, ref.outcomes, tolerances):
            w, at = tol.worst(distances(got, want))
            out.append((w, f"{c.optim.name} s{c.train.seed}: {at}"))
        return out

    def judge(t: Trained, off: frozenset[str]) -> tuple[bool, str, float, str]:
        """(agrees, why not, worst ratio, where). A float32 disagreement is excused only when the
        same fast path in float64 agrees with the exact reference (its arithmetic is the plain
        path's: what float32 shows is rounding that training amplified through a discrete event,
        a ReLU or max-pool decision flipping) and some run of the group agrees in float32 (such
        an event strikes runs one by one; lost precision, TF32 or half-precision kernels where
        float32 was asked for, strikes every run). A group of one run is never excused."""
        if t.error is not None:
            return False, f"raised {t.error}", math.inf, ""
        capture = [p.error for o in t.outcomes[:1] for p in o.execution.phases if p.error]
        if "graphs" not in off and "graphs" in features and capture:
            return False, f"capture failed: {capture[0]}", math.inf, ""
        ratios = run_ratios(t, plain)
        worst, where = max(ratios, key=lambda r: r[0])
        if worst <= 1:
            return True, "", worst, where
        beyond = sum(w > 1 for w, _ in ratios)
        why = f"{where} ({worst:.3g}x the tolerance)"
        if beyond == len(ratios):
            return False, why + (f"; {beyond} of {len(ratios)} runs beyond it" if len(ratios) > 1 else ""), worst, where
        again = train_fast(configs, in_float64(data), device, off, backend, workdir, stop, dtype=torch.float64)
        if again.error is not None:
            return False, f"{why}; in float64 it raised {again.error}", worst, where
        w64, at64 = max(run_ratios(again, exact), key=lambda r: r[0])
        if w64 > 1:
            return False, f"{why}; in float64 too: {at64} ({w64:.3g}x)", worst, where
        return True, "", worst, (f"{where}: {beyond} of {len(ratios)} runs beyond the float32 tolerance, every run "
                                 f"within it in float64 (worst {w64:.2g}x): rounding through a discrete event")

    fast = train_fast(configs, data, device, na, backend, workdir, stop)
    ok, why, worst, where = judge(fast, na)
    failed: dict[str, str] = {}
    kept = fast
    if not ok:
        say(f"  fast path disagrees ({why}); finding the feature")
        off = set(na)
        for f in features:  # each alone, cheapest loss first
            t = train_fast(configs, data, device, frozenset(off | {f}), backend, workdir, stop)
            agrees, _, w, at = judge(t, frozenset(off | {f}))
            if agrees:
                failed[f] = why
                kept, worst, where = t, w, at
                break
        else:  # no single feature: give them up in order until it agrees
            for f in features:
                off.add(f)
                failed[f] = why
                t = train_fast(configs, data, device, frozenset(off), backend, workdir, stop)
                agrees, _, w, at = judge(t, frozenset(off))
                if agrees:
                    kept, worst, where = t, w, at
                    break
    results = []
    for f in ("stacked", "kernels", "graphs", "resume"):
        if f in applicable:
            results.append(FeatureResult(f, "not applicable", applicable[f]))
        elif f in failed:
            results.append(FeatureResult(f, "failed", failed[f]))
        else:
            results.append(FeatureResult(f, "passed"))
    if "kernels" not in failed:
        kernel_names = sorted({f"{k.optimizer} {k.kernel}{' capturable' if k.capturable else ''}"
                               for o in kept.outcomes[:1] for k in o.execution.kernels})
    else:
        kernel_names = ["plain (switched off)"]
    phases = [p.to_dict() for p in kept.outcomes[0].execution.phases] if kept.outcomes else None
    fast_s = steady_step_s(kept, phases) if kept.error is None and "stacked" not in failed else None
    flops = sum(run_cost(c)[1] / max(1, run_cost(c)[0]) for c in case.configs)
    tol = tolerances[0]
    summary = (f"{SAFETY:g} x measured spread, floor {tol.floor:.2g} ({precision}); e.g. "
               f"{configs[0].optim.name} conv1 {tol.of(_first_weight(tol)):.2g}, loss {tol.of('loss'):.2g}")
    scale = (f"{len(configs)} run{'s' if len(configs) != 1 else ''}, width {configs[0].model.width:g}, batch {configs[0].train.batch_size}"
             + (" (shrunk for the CPU)" if quick else ""))
    return KindResult(kind, len(case.configs), case.groups, case.configs[0].train.batch_size,
                      f"{scale}, {steps} steps in phases {list(configs[0].train.phases)}, resumed after {stop}",
                      tuple(results), worst, where, summary, fast_s, plain_step_s(plain), flops,
                      ", ".join(kernel_names), time.perf_counter() - started)


def _first_weight(tol: Tolerance) -> str:
    return next((k for k in tol.spread if k.endswith("weight")), "loss")


# -- the record the training path reads -----------------------------------------------------------


def nvidia_query(field_name: str) -> list[str]:
    """``nvidia-smi --query-gpu=FIELD`` per GPU (the driver version), without torch; [] when absent."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The training code's fingerprint and this check's own (both by syntax, as cache keys are)."""
    from repro.cache.keys import fingerprint, training_modules

    return fingerprint(training_modules() + ("repro.gpu_check",))


@dataclass(frozen=True)
class MachineKey:
    """What a check's findings hold for: the device, its driver, torch and the code."""

    machine: str
    driver: str
    torch: str
    code: str

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def here(cls, device: str) -> "MachineKey":
        driver = "none"
        if device.startswith("cuda"):
            found = nvidia_query("driver_version")
            driver = found[0] if found else "unknown"
        return cls(machine_name(device), driver, _torch_version(), code_fingerprint())


def read_record(cache_root: Path) -> dict:
    path = Path(cache_root) / RECORD_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raw = None
        problem = f"unreadable: {str(e)[:120]}"
    else:
        problem = record_problem(raw)
    if problem:
        # The record lives in the cache root, which a project or a shared cache may ship: a bad
        # one is ignored (the check runs again when a tier needs it) rather than trusted or fatal.
        log.warning("%s: ignored, not a gpu-check record repro wrote (%s); `repro gpu-check` writes a new one",
                    path, problem)
        return {}
    return raw


def record_problem(raw: object) -> str | None:
    """What makes ``raw`` no gpu-check record, or None: machine id -> {complete: bool, kinds:
    {kind id -> {dataset, arch, precision: strings, switched_off: {known feature: reason}}}}."""
    if not isinstance(raw, dict):
        return f"a {type(raw).__name__}, expected an object"
    for machine, entry in raw.items():
        if not isinstance(entry, dict):
            return f"{machine[:60]}: a {type(entry).__name__}, expected an object"
        if not isinstance(entry.get("complete"), bool):
            return f"{machine[:60]}.complete: {str(entry.get('complete'))[:20]!r} is not true or false"
        kinds = entry.get("kinds")
        if not isinstance(kinds, dict):
            return f"{machine[:60]}.kinds: expected an object"
        for kid, kind in kinds.items():
            where = f"{machine[:60]}.kinds.{kid[:60]}"
            if not isinstance(kind, dict) or not all(isinstance(kind.get(f), str) for f in ("dataset", "arch", "precision")):
                return f"{where}: expected dataset, arch and precision"
            off = kind.get("switched_off", {})
            if not isinstance(off, dict):
                return f"{where}.switched_off: expected an object"
            for feature, why in off.items():
                if feature not in FEATURES:
                    return f"{where}.switched_off: unknown feature {feature[:40]!r}; known: {', '.join(FEATURES)}"
                if not isinstance(why, str) or not why.strip():
                    return f"{where}.switched_off.{feature}: expected the reason it was switched off"
    return None


class CheckRecordError(RuntimeError):
    pass


def write_record(cache_root: Path, key: MachineKey, results: list[KindResult], complete: bool) -> Path:
    path = Path(cache_root) / RECORD_FILE
    raw = read_record(cache_root)
    entry = raw.get(key.id) or {**asdict(key), "kinds": {}, "complete": False}
    entry["kinds"].update({r.kind.id: {"dataset": r.kind.dataset, "arch": r.kind.arch, "precision": r.kind.precision,
                                       "switched_off": r.switched_off} for r in results})
    entry["complete"] = bool(entry.get("complete")) or complete
    entry["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    raw[key.id] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(raw, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def passed_here(cache_root: Path, device: str) -> dict | None:
    """The complete check recorded for this machine, driver, torch and code (the stamp), or None."""
    entry = read_record(cache_root).get(MachineKey.here(device).id)
    return entry if entry and entry.get("complete") else None


@dataclass(frozen=True)
class SwitchedOff:
    """The features a check switched off on this machine, per kind of group: what the training
    path consults (``repro.execute.train_plan``)."""

    kinds: dict  # kind id -> {feature: why}
    meta: dict  # kind id -> {"dataset", "arch", "precision"}
    path: Path

    @classmethod
    def load(cls, cache_root: Path, device: str) -> "SwitchedOff":
        entry = read_record(cache_root).get(MachineKey.here(device).id) or {"kinds": {}}
        kinds = {k: dict(v.get("switched_off") or {}) for k, v in entry["kinds"].items()}
        return cls(kinds, entry["kinds"], Path(cache_root) / RECORD_FILE)

    def for_group(self, configs: list[RunConfig]) -> dict[str, str]:
        """{feature: why} for this group's kind. A kind the check did not train (another mix of
        optimizers) takes every feature switched off for a checked kind of its dataset,
        architecture and precision."""
        kind = kind_of(configs)
        if kind.id in self.kinds:
            return self.kinds[kind.id]
        out: dict[str, str] = {}
        for kid, off in self.kinds.items():
            m = self.meta[kid]
            if (m["dataset"], m["arch"], m["precision"]) == (kind.dataset, kind.arch, kind.precision):
                for f, why in off.items():
                    out.setdefault(f, f"{why} (checked on {kid})")
        return out


def announce(kind_id: str, off: dict[str, str], path: Path) -> list[str]:
    """One line per switched-off feature: what, why, how the training path gives it up."""
    return [f"gpu-check switched off {f} ({FEATURE_TEXT[f]}) for {kind_id} on this machine: {why}; "
            f"training uses {FEATURE_OFF[f]} for it (record: {path})" for f, why in sorted(off.items())]


# -- the whole check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    results: tuple[KindResult, ...]
    skipped: tuple[KindCase, ...]  # kinds not trained (--max-kinds)
    device: dict
    seconds: float
    quick: bool
    record: Path
    report: Path | None

    @property
    def switched_off(self) -> dict[str, dict[str, str]]:
        return {r.kind.id: r.switched_off for r in self.results if r.switched_off}


def device_facts(device) -> dict:
    import torch

    dev = torch.device(device)
    facts = {"device": "cpu", "torch": torch.__version__, "cuda": torch.version.cuda or "none",
             "cudnn": "none", "driver": "none", "machine": machine_name(str(dev))}
    if dev.type == "cuda":
        found = nvidia_query("driver_version")
        facts.update(device=torch.cuda.get_device_name(dev), cudnn=str(torch.backends.cudnn.version()),
                     driver=found[0] if found else "unknown")
    else:
        facts["device"] = facts["machine"]
    facts["threads"] = str(torch.get_num_threads())
    return facts


def run_gpu_check(configs: list[RunConfig], cache_root: Path, *, device: str = "auto", steps: int | None = None,
                  max_kinds: int | None = None, quick: bool | None = None, out: Path | None = REPORT,
                  graph_backend=None, say: Callable[[str], None] = print, tier: str = "full") -> CheckResult:
    """Check every kind of group ``configs`` form (``max_kinds``: at most that many, one of each
    data family first). ``quick`` (default: on a CPU) shrinks networks and groups; ``graph_backend``
    makes graphs on a CPU (tests). Writes the record (and the stamp when every kind was checked)
    under ``cache_root`` and the report to ``out``."""
    import torch

    from repro.train.loop import resolve_device

    started = time.perf_counter()
    dev = resolve_device(device)
    quick = dev.type != "cuda" if quick is None else quick
    steps = steps or (CPU_STEPS if quick else GPU_STEPS)
    if steps < 8:
        raise ValueError(f"--steps {steps}: the window needs at least 8 steps (two phases and a resume)")
    own = [c for c in configs if c.train.trainer is None]
    if len(own) < len(configs):
        say(f"gpu-check: {len(configs) - len(own)} run(s) train with a registered trainer, not repro's loop: "
            "its fast path is the trainer's own, so they are not checked")
    cases = kinds_of(own)
    chosen = select_kinds(cases, max_kinds)
    facts = device_facts(dev)
    say(f"gpu-check on {facts['device']}: {len(chosen)} of {len(cases)} kinds of group of the {tier} tier, "
        f"{steps} steps each on fabricated data{' (CPU: shrunk networks)' if quick else ''}")
    results = []
    with tempfile.TemporaryDirectory(prefix="repro-gpu-check-") as tmp:
        for i, case in enumerate(chosen, 1):
            say(f"[{i}/{len(chosen)}] {case.kind.id} ({len(case.configs)} run{'s' if len(case.configs) != 1 else ''}) ...")
            r = check_kind(case, dev, steps=steps, quick=quick, backend=graph_backend, workdir=Path(tmp),
                           say=say)
            for line in announce(r.kind.id, r.switched_off, Path(cache_root) / RECORD_FILE):
                say(line)
            say(f"  {', '.join(f'{f.feature} {f.status}' for f in r.features)}; {r.seconds:.1f} s "
                f"(elapsed {time.perf_counter() - started:.0f} s)")
            results.append(r)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    key = MachineKey.here(str(dev))
    record = write_record(cache_root, key, results, complete=len(chosen) == len(cases))
    result = CheckResult(tuple(results), tuple(c for c in cases if c not in chosen), facts,
                         time.perf_counter() - started, quick, record, out)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(render(result, configs))
        say(f"wrote {out}")
    say(f"gpu-check took {format_s(result.seconds)}"
        + (f"; switched off: {sum(len(v) for v in result.switched_off.values())} feature(s)" if result.switched_off
           else "; every feature agrees with the plain loop"))
    return result


# -- the report ----------------------------------------------------------------------------------------


def format_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def estimate_rows(result: CheckResult, configs: list[RunConfig]) -> tuple[list[tuple], str]:
    """Per part of the tier: its hours with the measured rate of each kind of group where the
    check measured it at real scale (FLOPs of each group over the measured FLOP/s of its kind),
    else modelled (repro.plan's share of the peak for an H100 SXM, or this GPU)."""
    from repro.devices import DEFAULT_GPU, match_gpu
    from repro.plan import PlannedRun

    peak = match_gpu(result.device["device"]) if result.device["device"] != result.device["machine"] else None
    target = peak or match_gpu(DEFAULT_GPU)
    rate = {}
    if not result.quick:
        for r in result.results:
            if r.fast_step_s and r.fast_step_s > 0:
                rate[r.kind] = r.flops_per_step / r.fast_step_s
    runs = [PlannedRun("", c, steps=run_cost(c)[0], flops=run_cost(c)[1]) for c in configs]
    parts: dict[str, list[float]] = {}
    for g in form_groups(runs, 16):
        kind = kind_of([r.config for r in g])
        flops = sum(r.flops for r in g)
        model = sum(gpu_model_seconds(r.flops, target, r.config.train.precision) or 0.0 for r in g)
        est = flops / rate[kind] if kind in rate else model
        row = parts.setdefault(part_of(g[0].config), [0, 0.0, 0.0, 0.0, 0])
        row[0] += len(g)
        row[1] += flops
        row[2] += model
        row[3] += est
        row[4] += int(kind in rate)
    names = [p for p in PARTS if p in parts] + sorted(set(parts) - set(PARTS))
    rows = []
    for name in names + ["total"]:
        sel = [parts[n] for n in names] if name == "total" else [parts[name]]
        n, flops, model, est, measured = (sum(x[i] for x in sel) for i in range(5))
        groups = sum(1 for g in form_groups(runs, 16) if name == "total" or part_of(g[0].config) == name)
        source = "measured" if measured == groups else "modelled" if measured == 0 else f"{measured} of {groups} groups measured"
        rows.append((name, int(n), f"{flops / 1e15:,.0f}", f"{model / 3600:,.1f}", f"{est / 3600:,.1f}", source))
    where = (f"{target.name} (this machine)" if peak else f"{target.name} (modelled: not this machine)")
    if result.quick:
        where += "; this run's step times are of shrunk networks and are not used"
    return rows, where


def render(result: CheckResult, configs: list[RunConfig]) -> str:
    from tabulate import tabulate

    d = result.device
    lines = ["# gpu-check: the fast training path on this machine", ""]
    if result.quick:
        lines += ["> **CPU run** (no CUDA device): networks shrunk (width "
                  f"{CPU_WIDTH:g}, fc layers at most {CPU_FC} wide, images at most {CPU_SIDE}x{CPU_SIDE}, batch {CPU_BATCH}, at most {CPU_RUNS} runs per group); graphs: not applicable. "
                  "Nothing here says how a GPU behaves.", ""]
    lines += [f"- device: {d['device']}", f"- driver: {d['driver']}", f"- CUDA: {d['cuda']}", f"- cuDNN: {d['cudnn']}",
              f"- torch: {d['torch']} ({d['threads']} threads)", f"- check took {format_s(result.seconds)}",
              f"- record (what training consults): `{result.record}`", "",
              "Each kind of group trained a window of steps twice on fabricated data of its dataset's shape "
              "and classes (random tensors; no dataset is read): the fast path (stacked, fastest kernels, "
              "CUDA graph with a capture per learning-rate phase, checkpoint and resume mid-phase) and the "
              "plain path (each run alone, eager, per-parameter optimizer steps). A feature that disagrees "
              "or raises is switched off for its kind on this machine.", "",
              "## Features per kind of group", ""]
    rows = []
    for r in result.results:
        f = {x.feature: x.line() for x in r.features}
        rows.append((r.kind.id, r.runs, f["stacked"], f["kernels"], f["graphs"], f["resume"],
                     f"{r.worst:.2g} ({r.worst_at})" if math.isfinite(r.worst) else "-"))
    lines.append(tabulate(rows, headers=("kind", "runs", "stacked", "kernels", "graphs", "resume",
                                         "worst distance / tolerance"), tablefmt="github", disable_numparse=True))
    if result.skipped:
        lines += ["", f"Not checked in this run ({len(result.skipped)} kinds, --max-kinds): "
                  + "; ".join(c.kind.id for c in result.skipped) + "."]
    lines += ["", "## Tolerance", "",
              f"Per tensor: {SAFETY:g} x the spread, each plain run's distance from the same run trained in "
              f"float64 from the same initial weights (exact arithmetic for a few dozen steps), at least "
              f"{FLOOR_ULPS:g} u (fp32 {FLOOR_ULPS * UNIT_ROUNDOFF['fp32']:.2g}, tf32 "
              f"{FLOOR_ULPS * UNIT_ROUNDOFF['tf32']:.2g}). Distances: relative L2 per tensor (weights, BatchNorm "
              "running statistics) without each tensor's largest 5% of differences, integer tensors equal, loss curve "
              "by the median relative difference over its points; a run agrees when its median tensor and its loss curve are within. "
              "A float32 disagreement of some (not all) of a group's runs is trained again in float64 and excused only "
              "when every run agrees there (a rounding-triggered discrete event, not a fault). "
              "Derivation: "
              "`repro/gpu_check.py`.", ""]
    lines.append(tabulate([(r.kind.id, r.kind.precision, r.tolerance) for r in result.results],
                          headers=("kind", "precision", "tolerance"), tablefmt="github", disable_numparse=True))
    lines += ["", "## Step times (steady state: warm-ups, captures and each process's first step left out)", ""]
    rows = []
    for r in result.results:
        speed = (f"{r.plain_step_s / r.fast_step_s:.2f}x" if r.fast_step_s and r.plain_step_s else "-")
        rows.append((r.kind.id, r.batch_size, r.trained_as, _ms(r.fast_step_s), _ms(r.plain_step_s), speed, r.kernels))
    lines.append(tabulate(rows, headers=("kind", "batch", "trained", "fast ms/step (whole group)",
                                         "plain ms (every run one step)", "fast vs plain", "kernels (fast)"),
                          tablefmt="github", disable_numparse=True))
    est, where = estimate_rows(result, configs)
    lines += ["", f"## The tier's estimate ({where})", "",
              "FLOPs of each group over the measured FLOP/s of its kind's fast path where measured at real "
              "scale, else repro plan's model (a share of the peak).", ""]
    lines.append(tabulate(est, headers=("part", "runs", "PFLOP", "modelled h", "estimate h", "source"),
                          tablefmt="github", disable_numparse=True))
    off = result.switched_off
    lines += ["", "## Switched off", ""]
    lines += ([f"- {k}: {f} ({FEATURE_TEXT[f]}): {why}" for k, v in off.items() for f, why in v.items()]
              or ["Nothing: every feature agrees with the plain loop."])
    return "\n".join(lines) + "\n"
