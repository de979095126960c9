"""``claimbench gpu-check``: prove the fast training path on this machine in minutes, before the long run.

In:  the runs a tier plans (``claimbench.plan``), this machine's device, a cache root.
Out: ``CheckResult``: per kind of group (dataset x architecture x the optimizers it mixes x graphs
     or not x folder data or not, derived from the plan's groups of 16), whether each fast feature
     gives the numbers the plain loop gives, steady-state step times of both; a markdown report; a
     record under the cache root (``gpu-check.json``, keyed by machine, driver, torch and code,
     naming the kinds checked: ``split_by_record`` says which a plan still lacks) that the
     training path consults (``SwitchedOff``): a feature that disagreed or raised is
     switched off for that kind of group on this machine, and said so in one line.

For each kind, one real group of its runs (up to 16) trains a few dozen steps twice, on fabricated
data of the dataset's real shape and classes (the check needs no dataset; a folder dataset's
images are written as JPEG files and read through the real image-folder loader):

(a) the fast path: the runs stacked in one network, the fastest optimizer kernels (fused, else
    foreach), the step as a CUDA graph where there is one (capturable kernels, captured again at
    the learning-rate drop inside the window), interrupted by a real SIGINT mid-phase, its
    checkpoint saved and resumed (which captures again);
(b) the plain path: each run alone, eager, no graph, optimizers stepping one parameter at a time.

How a fast path is judged (every run's every tensor against its own tolerance, a float32
disagreement confirmed in float64): ``claimbench.gpu_check.judge``.

The features (``FEATURES``): ``stacked``, ``kernels``, ``graphs``, ``resume``. When (a) and (b)
disagree, or (a) raises, or a capture fails, the fast path is trained again as it was: a
disagreement that does not recur is reported flaky, with both measurements, and switches nothing
off. One that recurs is isolated: each feature is tried on its own (every other one off), cheapest
loss first, and one that disagrees on its own twice is switched off for that kind; if the path
still disagrees with those off, the fault lies in features sound alone but not together, and they
are given up in that order until it agrees, each saying so (failing closed).

Then each kind's group size (runs per group) is chosen from measured memory and, on a GPU, a
sweep of K (``claimbench.gpu_check.group_size``), recorded with the findings.

The modules, by job: ``kinds`` (what is checked), ``workload`` (the window and fabricated data
trained), ``judge`` (the verdict), ``group_size`` (K per kind), ``record`` (what the training path
reads), ``report`` (the markdown), ``selftest`` (``claimbench gpu-check --self-test``:
each kind of fault the check exists for injected into the fast path and shown caught).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Collection

from claimbench.config import RunConfig
# Names of the modules below are also this package's (``claimbench.gpu_check.distances``, ...): callers
# and tests use one import.
from claimbench.gpu_check.group_size import SWEEP, GroupSize, Measured, choose_group_size, group_size_of
from claimbench.gpu_check.judge import (FLOOR_ULPS, SAFETY, TRIM, TRIM_MIN, UNIT_ROUNDOFF, Tolerance, Verdict,
                                   distances, judge, run_name, tolerance_of)
from claimbench.gpu_check.kinds import (CPU_BATCH, CPU_FC, CPU_RUNS, CPU_SIDE, CPU_WIDTH, FEATURE_OFF, FEATURE_TEXT,
                                        FEATURES, FOLDER_DATASETS, GroupKind, KindCase, kind_of, kinds_of,
                                        own_loop, select_kinds)
from claimbench.gpu_check.record import (RECORD_FILE, CheckRecordError, ChosenGroupSizes, MachineKey, SwitchedOff,
                                         announce, code_fingerprint, covered, read_record, split_by_record,
                                         write_record)
from claimbench.gpu_check.report import estimate_rows, format_s, render
from claimbench.gpu_check.workload import EPOCH_BATCHES, fabricated_data, resume_at, window
from claimbench.machine.detect import machine_name, nvidia_query
from claimbench.plan.estimate import run_cost, run_memory_bytes
from claimbench.plan.step_times import steady_median

log = logging.getLogger(__name__)

# The window: a few dozen steps on a GPU (3 warm-ups, a capture, replays; a phase change; a
# resume mid-phase 2, which warms up and captures again); on a CPU a short one on shrunk networks.
GPU_STEPS = 32
CPU_STEPS = 10
REPORT = Path("reports/gpu-check.md")

# -- what trains -------------------------------------------------------------------------------------


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
    from claimbench.train.loop import train_models

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


# -- the exact reference ------------------------------------------------------------------------


def in_float64(data):
    """``data`` with its images in float64: the exact-arithmetic reference's input."""
    import torch

    if hasattr(data, "train_files"):  # image files decoded per batch: widened as each batch arrives
        return replace(data, dtype=torch.float64)
    return replace(data, train_x=data.train_x.to(torch.float64), test_x=data.test_x.to(torch.float64))


def exact_reference(configs, data, device) -> Trained:
    """The plain path in float64 from the same float32 initial weights: exact arithmetic as far
    as a few dozen steps can tell (float64 rounding is 2**29 times finer than float32's). Its
    final weights come back as float32 (a run's single network is float32): one last rounding,
    64 times below the tolerance's floor."""
    import torch

    return train_plain(configs, in_float64(data), device, dtype=torch.float64)


# -- step times --------------------------------------------------------------------------------------


def steady_step_s(trained: Trained, phases: list[dict] | None) -> float | None:
    """Median seconds of the steady-state steps over every process of ``trained``: the plan's
    median (``claimbench.plan.step_times.steady_median``: not warm-ups or captures), leaving out
    each process's first timed step too, which includes its set-up (a resumed process's first)."""
    found = steady_median(trained.segments, phases or None, first_timed_unsteady=True)
    return None if found is None else found[0]


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
    worst_at: str  # the run and tensor it names, or how a float32 disagreement was excused
    tolerance: str  # the tolerance, summarised
    fast_step_s: float | None
    plain_step_s: float | None
    flops_per_step: float  # the real group's training FLOPs per step (all its runs)
    kernels: str
    seconds: float
    flaky: str = ""  # a disagreement that did not recur: both measurements (nothing switched off)
    group_size: GroupSize | None = None  # the runs per group training uses for the kind, and why
    run_bytes: int | None = None  # modelled memory of one of its runs (``run_memory_bytes``): K's scale

    @property
    def switched_off(self) -> dict[str, str]:
        return {f.feature: f.why for f in self.features if f.status == "failed"}


@dataclass
class Bench:
    """One kind's group trained the plain way and in float64 (what every fast path of the kind is
    judged against), and how to train that fast path again with some features off."""

    configs: list
    data: object
    device: object
    backend: object
    workdir: Path
    stop: int
    plain: Trained
    exact: Trained
    tolerances: list[Tolerance]
    names: list[str]
    graphs_checked: bool  # graphs are one of the features this kind checks

    @classmethod
    def build(cls, configs, data, device, backend, workdir: Path, stop: int, graphs_checked: bool) -> "Bench":
        precision = configs[0].train.precision
        plain = train_plain(configs, data, device)
        exact = exact_reference(configs, data, device)
        tolerances = [tolerance_of(p, e, precision) for p, e in zip(plain.outcomes, exact.outcomes)]
        return cls(list(configs), data, device, backend, workdir, stop, plain, exact, tolerances,
                   [run_name(i, c) for i, c in enumerate(configs)], graphs_checked)

    def fast(self, off: frozenset[str], dtype=None, trainer=None) -> Trained:
        """The fast path with ``off`` switched off (``trainer``: another ``train_fast``, as the
        self-test's faulty ones; default this module's, looked up when called)."""
        data = in_float64(self.data) if dtype is not None else self.data
        return (trainer or train_fast)(self.configs, data, self.device, off, self.backend, self.workdir, self.stop,
                                       dtype)

    def verdict(self, t: Trained, off: frozenset[str], trainer=None) -> Verdict:
        """``t`` judged (``claimbench.gpu_check.judge``); a failed capture disagrees when graphs are on."""
        import torch

        capture = [p.error for o in t.outcomes[:1] for p in o.execution.phases if p.error]
        if "graphs" not in off and self.graphs_checked and capture:
            return Verdict(False, math.inf, why=f"capture failed: {capture[0]}")
        return judge(t, self.plain, self.exact, self.tolerances, self.names,
                     confirm=lambda: self.fast(off, torch.float64, trainer))


def check_kind(case: KindCase, device, *, steps: int, quick: bool, backend, workdir: Path,
               say: Callable[[str], None], sweep: bool = True) -> KindResult:
    """One kind checked; then (``sweep``) its group size chosen (``group_size.group_size_of``)."""
    import torch

    started = time.perf_counter()
    kind = case.kind
    configs = [window(c, steps, quick) for c in case.configs[: CPU_RUNS if quick else None]]
    precision = configs[0].train.precision
    data = fabricated_data(configs[0], device, folder=Path(tempfile.mkdtemp(prefix="images-", dir=workdir)))
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

    bench = Bench.build(configs, data, device, backend, workdir, stop, "graphs" in features)
    kept = bench.fast(na)
    v = bench.verdict(kept, na)
    failed: dict[str, str] = {}
    flaky = ""
    if not v.agrees:
        # Trained again before any feature is blamed: a GPU may differ from itself from one run to
        # the next (autotuned algorithms, atomics), and the first feature retried would otherwise
        # take the blame for a disagreement that does not recur.
        say(f"  fast path disagrees ({v.why}); training it again before isolating a feature")
        again = bench.fast(na)
        v2 = bench.verdict(again, na)
        if v2.agrees:
            flaky = (f"first {v.why} ({v.worst:.3g}x); trained again it agrees (worst {v2.worst:.2g}x, "
                     f"{v2.why or v2.where})")
            say(f"  flaky: {flaky}; nothing switched off")
            kept, v = again, v2
        else:
            why = v.why
            say(f"  it disagrees again ({v2.why}); trying each feature on its own")
            failed, kept, v = _isolate(bench, features, na, why, say, kept, v)
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
    tol = bench.tolerances[0]
    summary = (f"{SAFETY:g} x measured spread, floor {tol.floor:.2g} ({precision}); e.g. "
               f"{configs[0].optim.name} conv1 {tol.of(_first_weight(tol)):.2g}, loss {tol.of('loss'):.2g}")
    scale = (f"{len(configs)} run{'s' if len(configs) != 1 else ''}, width {configs[0].model.width:g}, batch {configs[0].train.batch_size}"
             + (" (shrunk for the CPU)" if quick else ""))
    plain_s = plain_step_s(bench.plain)
    # The groups trained so far are let go first: the sweep's largest K needs the device's memory.
    bench = kept = again = data = None
    if on_gpu:
        torch.cuda.empty_cache()
    size = (group_size_of(case, device, quick=quick, off=na | frozenset(failed), backend=backend, say=say)
            if sweep else None)
    if size is not None:
        say(f"  group size {size.k}: {size.why}")
    return KindResult(kind, len(case.configs), case.groups, case.configs[0].train.batch_size,
                      f"{scale}, {steps} steps in phases {list(configs[0].train.phases)}, resumed after {stop}",
                      tuple(results), v.worst, (v.why if v.agrees and v.why else v.where), summary, fast_s,
                      plain_s, flops, ", ".join(kernel_names), time.perf_counter() - started,
                      flaky, size, run_memory_bytes(case.configs[0]))


def _isolate(bench: "Bench", features: list[str], na: frozenset[str], why: str, say: Callable[[str], None],
             kept: "Trained", v: Verdict) -> tuple[dict[str, str], "Trained", Verdict]:
    """The features to switch off after a fast path that disagreed twice: each feature is tried on
    its own (every other one off), cheapest loss first, and convicted only when it disagrees on its
    own twice (one disagreement can be the chance that made the whole path disagree once). The
    path with the convicted features off must then agree; where it does not, the fault lies in
    features sound alone and not together: the one whose absence makes the rest agree twice is
    switched off, else they are given up in order until it agrees (failing closed), each saying
    so. Returns (feature -> why, the run kept, its verdict)."""
    failed: dict[str, str] = {}
    for f in features:
        alone = na | frozenset(g for g in features if g != f)
        w = bench.verdict(bench.fast(alone), alone)
        if w.agrees:
            continue
        w2 = bench.verdict(bench.fast(alone), alone)
        if w2.agrees:
            say(f"  {f} on its own disagreed once ({w.why}), then agreed: not convicted")
            continue
        say(f"  {f} on its own disagrees twice ({w.why}): switched off")
        failed[f] = w.why or why
    off = na | frozenset(failed)
    t = bench.fast(off)
    w = bench.verdict(t, off)
    if w.agrees:
        return failed, t, w
    # Sound alone, not together: first the one feature whose absence makes the rest agree twice.
    together = f"sound on its own, but the path with it and the others disagrees ({w.why or why})"
    rest = [g for g in features if g not in failed]
    say(f"  with {', '.join(sorted(failed)) or 'no feature'} off it still disagrees ({w.why}): trying the others "
        "one off at a time")
    for f in rest:
        t = bench.fast(off | {f})
        w = bench.verdict(t, off | {f})
        if w.agrees and bench.verdict(bench.fast(off | {f}), off | {f}).agrees:
            say(f"  {f} off agrees twice: switched off")
            failed[f] = together
            return failed, t, w
    for f in rest:  # failing closed: given up in order until the path agrees
        say(f"  no single one: {f} is given up")
        failed[f] = together
        off = off | {f}
        t = bench.fast(off)
        w = bench.verdict(t, off)
        if w.agrees:
            break
    return failed, t, w


def _first_weight(tol: Tolerance) -> str:
    return next((k for k in tol.spread if k.endswith("weight")), "loss")


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
                  graph_backend=None, say: Callable[[str], None] = print, tier: str = "full",
                  kinds: Collection[str] | None = None) -> CheckResult:
    """Check every kind of group ``configs`` form (``kinds``: only those of these ids;
    ``max_kinds``: at most that many, one of each data family first). ``quick`` (default: on a
    CPU) shrinks networks and groups; ``graph_backend`` makes graphs on a CPU (tests). Writes the
    kinds checked into the record under ``cache_root`` and the report to ``out``."""
    import torch

    from claimbench.train.device import resolve_device

    started = time.perf_counter()
    dev = resolve_device(device)
    quick = dev.type != "cuda" if quick is None else quick
    steps = steps or (CPU_STEPS if quick else GPU_STEPS)
    if steps < 8:
        raise ValueError(f"--steps {steps}: the window needs at least 8 steps (two phases and a resume)")
    own = own_loop(configs)
    if len(own) < len(configs):
        say(f"gpu-check: {len(configs) - len(own)} run(s) train with a registered trainer, not claimbench's loop: "
            "its fast path is the trainer's own, so they are not checked")
    cases = [c for c in kinds_of(own) if kinds is None or c.kind.id in kinds]
    chosen = select_kinds(cases, max_kinds)
    facts = device_facts(dev)
    say(f"gpu-check on {facts['device']}: {len(chosen)} of {len(cases)} kinds of group of the {tier} tier"
        f"{' not yet checked here' if kinds is not None else ''}, "
        f"{steps} steps each on fabricated data{' (CPU: shrunk networks)' if quick else ''}")
    results = []
    with tempfile.TemporaryDirectory(prefix="claimbench-gpu-check-") as tmp:
        for i, case in enumerate(chosen, 1):
            say(f"[{i}/{len(chosen)}] {case.kind.id} ({len(case.configs)} run{'s' if len(case.configs) != 1 else ''}) ...")
            r = check_kind(case, dev, steps=steps, quick=quick, backend=graph_backend, workdir=Path(tmp),
                           say=say)
            for line in announce(r.kind.id, r.switched_off, Path(cache_root) / RECORD_FILE):
                say(line)
            # The worst ratio is the margin left: on a GPU, one above about 0.3 says the safety
            # factor is mostly used up even where every feature passed.
            say(f"  {', '.join(f'{f.feature} {f.status}' for f in r.features)}; worst {r.worst:.2g}x of the "
                f"tolerance; {r.seconds:.1f} s (elapsed {time.perf_counter() - started:.0f} s)")
            results.append(r)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    key = MachineKey.here(str(dev))
    record = write_record(cache_root, key, results)
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


