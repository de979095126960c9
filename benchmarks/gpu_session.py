"""One part of the GPU session (``benchmarks/gpu_session.sh``): what a first hour on a GPU box
needs to know, measured in minutes.

    .venv/bin/python benchmarks/gpu_session.py PART --out DIR [--cpu]

In:  a part (canary, throughput, profile, check, decode, summary), the session's folder, and
     ``--cpu`` for toy sizes on the CPU (what CI runs: every part end to end, in seconds).
Out: every measurement appended to ``DIR/session.jsonl`` the moment it is taken, one JSON object
     a line with a ``part`` field, so a part the shell's ``timeout`` cuts short keeps what it
     measured; ``summary`` reads them back into ``DIR/summary.md``. Exit status: 1 when the
     canary fails (the fast path is not to be trusted, or there is no CUDA without ``--cpu``)
     or the summary cannot be written; a failure of any other part is written to the jsonl as
     an ``error`` line and exits 0, so the session goes on.

Nothing here trains its own way: the canary and the check are ``claimbench.gpu_check``'s benches
and verdicts, the throughput and profile rows are ``claimbench.train.loop.train_models`` with
step stamps (``claimbench.plan.step_times.steady_median`` picks the steady steps), the decode
rate is ``FolderImageData._decode_host`` on synthetic JPEGs, and the prices are
``claimbench.plan``'s. Step stamps are taken at each recorded loss point, which for windows
under 200 steps is every step and so includes one host sync per step: on a graphed step that
is one launch's latency, on an eager one the dispatch no longer overlaps the GPU (an upper
bound on the steady step).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("canary", "throughput", "profile", "check", "decode", "summary")
NOT_ON_CPU = "not applicable on CPU"


class Session:
    """Where a part writes: ``session.jsonl`` (appended and flushed per line) in ``out``."""

    def __init__(self, out: Path, part: str, cpu: bool):
        self.out, self.part, self.cpu = out, part, cpu
        self.jsonl = out / "session.jsonl"

    def record(self, **fields) -> dict:
        assert "part" not in fields, "a field named part would hide which part wrote the line"
        row = {"part": self.part, "t": round(time.time(), 3), **fields}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(f"[{self.part}] " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
        return row

    def rows(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        out = []
        for line in self.jsonl.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"part": "?", "unreadable": line[:200]})
        return out


# -- shared ------------------------------------------------------------------------------------------


def device_of(s: Session):
    import torch

    return torch.device("cpu" if s.cpu else "cuda")


def config(arch="basicnet", dataset="cifar10", optimizer="adam", seed=0, batch=40, steps=(30,), width=1.0,
           side=None, precision="fp32", fc=None):
    """One run of the paper's kind, over ``steps`` steps in those phases (the window a part times)."""
    from claimbench.runconfig import run_config_from_dict

    model = {"arch": arch, "width": width, **({"fc_hidden": list(fc)} if fc else {})}
    data = {"dataset": dataset, **({"image_size": side} if side else {})}
    return run_config_from_dict({"model": model, "data": data,
                                 "optim": {"name": optimizer, "regularizer": "l2", "lam": 1e-4},
                                 "train": {"seed": seed, "batch_size": batch, "unit": "steps",
                                           "phases": list(steps), "snapshots": 1, "precision": precision}})


def toy(c):
    """``c`` at the CPU's toy size: gpu-check's quick shrink (width, batch, image side, head)."""
    from claimbench.gpu_check import window

    return window(c, sum(c.train.phases), quick=True)


def timed(configs, data, device, **kw) -> tuple[list, float | None, int]:
    """Train ``configs`` as one group; (outcomes, median steady step seconds, steady steps)."""
    from claimbench.gpu_check import Trained, _train, steady_step_s

    t = Trained()
    outcomes = _train(configs, data, device, stamps=t.segments, **kw)
    phases = [p.to_dict() for p in outcomes[0].execution.phases]
    from claimbench.plan.step_times import steady_median

    found = steady_median(t.segments, phases, first_timed_unsteady=True)
    return outcomes, steady_step_s(t, phases), (0 if found is None else found[1])


def peak_of(device) -> tuple[float | None, str]:
    """The device's datasheet fp32 peak in FLOP/s (``claimbench.machine.peaks``), else None."""
    import torch

    if device.type != "cuda":
        return None, "no datasheet peak for a CPU"
    from claimbench.machine.peaks import match_gpu

    p = match_gpu(torch.cuda.get_device_name(device))
    return (p.fp32_tflops * 1e12, p.name) if p else (None, "GPU not in claimbench/machine/peaks.py")


def throughput_module():
    """benchmarks/throughput.py (beside this file, not a package): its data and matmul rate."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import throughput

    return throughput


# -- canary ------------------------------------------------------------------------------------------


def canary(s: Session) -> bool:
    """Go or no-go: a mixed Adam/SGD/Adagrad group trains with graphs (captured again at the
    phase drop) and ends within the check's tolerance of the plain loop; steady eager steps pass
    ``set_sync_debug_mode("error")`` across an epoch boundary; a capture that fails falls back to
    eager steps and ends where eager ends. On the CPU the graph path runs on gpu-check's stand-in
    backend (a replay calls the eager step), and what only CUDA has is said not applicable."""
    import torch

    from claimbench.gpu_check import Bench, EPOCH_BATCHES, fabricated_data, resume_at, window
    from claimbench.gpu_check.selftest import EagerGraphs

    if not s.cpu and not torch.cuda.is_available():
        s.record(check="cuda", status="failed", why=f"torch {torch.__version__} has no CUDA device: the session "
                 "stops here (run with --cpu for the toy session)")
        return False
    device = device_of(s)
    # The fewest steps that still capture, replay, capture again at the drop and resume mid-phase 2.
    steps = 12 if s.cpu else 24
    configs = [window(config(optimizer=o, seed=i, width=0.25, steps=(steps,)), steps, quick=s.cpu)
               for i, o in enumerate(("adam", "sgd", "adagrad"))]
    data = fabricated_data(configs[0], device)
    backend = EagerGraphs() if s.cpu else None  # None: the loop's CudaGraphBackend
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-session-") as tmp:
        bench = Bench.build(configs, data, device, backend, Path(tmp), resume_at(steps), graphs_checked=True)

        # 1. The fast path (stacked, fastest kernels, graphs, a real SIGINT and resume) against plain.
        t0 = time.perf_counter()
        fast = bench.fast(frozenset())
        v = bench.verdict(fast, frozenset())
        phases = [p for o in fast.outcomes[:1] for p in o.execution.phases]
        captured = sum(p.captures for p in phases)
        phase_ids = {p.phase for p in phases if p.captures}
        graphs_ok = fast.error is None and captured >= 2 and len(phase_ids) >= 2 and not any(p.error for p in phases)
        passed = v.agrees and graphs_ok
        ok &= passed
        s.record(check="fast path vs plain loop", status="passed" if passed else "failed",
                 worst_ratio=v.worst, where=v.why or v.where, error=fast.error, captures=captured,
                 phases_captured=sorted(phase_ids), replays=sum(p.replays for p in phases),
                 graphs="stand-in backend (real CUDA capture " + NOT_ON_CPU + ")" if s.cpu else "CUDA graphs",
                 seconds=round(time.perf_counter() - t0, 2))

        # 2. A capture that fails (a sync injected into it) falls back to eager and ends where eager ends.
        t0 = time.perf_counter()
        failing = FailingCapture(backend)
        fell = bench.fast(frozenset({"resume"}), trainer=lambda *a, **k: _with_backend(a, k, failing))
        off = frozenset({"resume", "graphs"})  # the failed capture is the point here, not a fault
        w = bench.verdict(fell, off)
        phases = [p for o in fell.outcomes[:1] for p in o.execution.phases]
        errors = [p.error for p in phases if p.error]
        fallback_ok = fell.error is None and bool(errors) and sum(p.replays for p in phases) == 0 \
            and sum(p.eager_steps for p in phases) > 0
        passed = w.agrees and fallback_ok
        ok &= passed
        s.record(check="failed capture falls back to eager", status="passed" if passed else "failed",
                 worst_ratio=w.worst, where=w.why or w.where, capture_error=(errors or [None])[0],
                 eager_steps=sum(p.eager_steps for p in phases), error=fell.error,
                 injected="a raising stand-in capture (a real sync in a CUDA capture " + NOT_ON_CPU + ")"
                 if s.cpu else "torch.cuda.synchronize() inside the capture",
                 seconds=round(time.perf_counter() - t0, 2))

    # 3. Steady eager steps never wait on the GPU, an epoch boundary included.
    if s.cpu:
        s.record(check="set_sync_debug_mode('error') on steady eager steps", status=NOT_ON_CPU)
    else:
        t0 = time.perf_counter()
        try:
            synced = eager_steps_without_sync(configs, data, device, warm=2, steady=EPOCH_BATCHES + 4)
            passed = synced is None
        except Exception as e:  # noqa: BLE001  (anything raised here is the finding)
            passed, synced = False, f"{type(e).__name__}: {e}"
        ok &= passed
        s.record(check="set_sync_debug_mode('error') on steady eager steps", status="passed" if passed else "failed",
                 steps=EPOCH_BATCHES + 4, epoch_boundary=True, why=synced, seconds=round(time.perf_counter() - t0, 2))
    s.record(verdict="go" if ok else "no-go")
    return ok


class FailingCapture:
    """A graph backend whose capture fails as a real one does when the step syncs: on CUDA the
    step is captured with ``torch.cuda.synchronize()`` inside it (illegal while capturing); on
    the CPU the stand-in capture raises."""

    def __init__(self, inner):
        from claimbench.train.graphs import CudaGraphBackend

        self.inner = inner or CudaGraphBackend()
        self.capturable = self.inner.capturable

    def warmup(self, step):
        self.inner.warmup(step)

    def new_pool(self):
        return self.inner.new_pool()

    def capture(self, step, pool):
        import torch

        if not torch.cuda.is_available() or not self.inner.capturable:
            raise RuntimeError("injected: capture failed (stand-in)")

        def syncing():
            step()
            torch.cuda.synchronize()

        return self.inner.capture(syncing, pool)

    def replay(self, graph):
        self.inner.replay(graph)

    def release(self, graph):
        self.inner.release(graph)


def _with_backend(args, kw, backend):
    """gpu-check's ``train_fast`` with ``backend`` in place of the one the bench holds."""
    from claimbench.gpu_check import train_fast

    configs, data, device, off, _backend, workdir, stop, dtype = args
    return train_fast(configs, data, device, off, backend, workdir, stop, dtype)


def eager_steps_without_sync(configs, data, device, warm: int, steady: int) -> str | None:
    """The loop's own steps (``init_state``, ``start_phase``, ``train_step``), eager, with torch
    raising on any synchronizing call during the ``steady`` steps after ``warm`` (the first
    allocates and autotunes). The loss is read back after, outside the mode, as the loop does at
    its recorded points. None when no step synced."""
    import torch

    from claimbench.train.device import set_precision
    from claimbench.train.loop import start_phase, train_step
    from claimbench.train.state import init_state

    set_precision(configs[0].train.precision, device, True, configs[0].train.flush_denormals)
    state = init_state(configs, data, device)
    start_phase(state, state.schedule.factor(0))
    for _ in range(warm):
        train_step(state, data, None)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steady):
            train_step(state, data, None)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return None


# -- throughput --------------------------------------------------------------------------------------


def throughput_rows(cpu: bool) -> list[dict]:
    """The rows: (label, K, the group's configs, training options). GPU: section 5's list, the
    cheap and decisive first, the memory probe last (the budget may cut it)."""
    import torch

    mix = ("adam", "sgd", "amsgrad", "adamax", "rmsprop", "adagrad", "adadelta")

    def group(k, steps=(30,), optimizers=("adam",), **c):
        return [config(optimizer=optimizers[i % len(optimizers)], seed=i, steps=steps, **c) for i in range(k)]

    if cpu:
        return [{"label": f"BasicNet CIFAR adam K={k} (toy: width 0.0625, batch 8)", "k": k,
                 "configs": [toy(c) for c in group(k, steps=(12,))], "kw": {}} for k in (1, 4)]
    rows = [{"label": "BasicNet CIFAR adam K=16", "k": 16, "configs": group(16), "kw": {}},
            {"label": "BasicNet CIFAR 7 optimizers K=16", "k": 16, "configs": group(16, optimizers=mix), "kw": {}}]
    rows += [{"label": f"BasicNet CIFAR adam K={k}", "k": k, "configs": group(k), "kw": {}} for k in (1, 4, 32)]
    # "setting": how a row departs from the way the tier trains (its rate then prices nothing).
    rows += [{"label": "BasicNet CIFAR adam K=16, no graphs", "k": 16, "configs": group(16),
              "kw": {"cuda_graphs": False}, "setting": "no graphs"},
             {"label": "BasicNet CIFAR adam K=16, no autotuning", "k": 16, "configs": group(16),
              "kw": {"cudnn_benchmark": False}, "setting": "no autotuning"},
             {"label": "BasicNet CIFAR adam K=16, TF32", "k": 16, "configs": group(16, precision="tf32"), "kw": {},
              "setting": "tf32"},
             {"label": "VGG-16 CIFAR b40 K=3", "k": 3, "configs": group(3, arch="vgg16"), "kw": {}},
             {"label": "VGG-19 CIFAR b512 K=3", "k": 3, "configs": group(3, arch="vgg19", batch=512), "kw": {}},
             {"label": "BasicNet TinyImageNet K=4", "k": 4, "configs": group(4, dataset="tinyimagenet"), "kw": {}},
             {"label": "VGG-16 TinyImageNet K=2", "k": 2, "configs": group(2, arch="vgg16", dataset="tinyimagenet"),
              "kw": {}},
             {"label": "BasicNet CIFAR adam K=16, fp64 plain", "k": 16, "configs": group(16, steps=(12,)),
              "kw": {"cuda_graphs": False, "kernels": "plain", "dtype": torch.float64}, "setting": "float64"},
             {"label": "VGG-16 ImageNet b40 K=1", "k": 1, "configs": group(1, steps=(15,), arch="vgg16",
                                                                         dataset="imagenet"), "kw": {}},
             {"label": "BasicNet ImageNet b256 K=1", "k": 1, "configs": group(1, steps=(15,), dataset="imagenet",
                                                                            batch=256), "kw": {}},
             {"label": "VGG-11 ImageNet b90 K=1", "k": 1, "configs": group(1, steps=(15,), arch="vgg11",
                                                                         dataset="imagenet", batch=90), "kw": {}},
             {"label": "VGG-16 ImageNet b40 K=8 (memory)", "k": 8, "configs": group(8, steps=(6,), arch="vgg16",
                                                                                   dataset="imagenet"), "kw": {},
              "setting": "memory probe"}]
    return rows


def throughput(s: Session) -> None:
    """Per row: steady seconds per step, training TFLOP/s, its share of the datasheet fp32 peak
    and of a measured fp32 matmul rate, peak device memory; one jsonl line as each row ends."""
    import torch

    from claimbench.gpu_check import fabricated_data, in_float64, kind_of
    from claimbench.plan.estimate import part_of, run_cost

    device = device_of(s)
    peak, peak_name = peak_of(device)
    matmul = throughput_module().matmul_rate(device)
    s.record(row="peak", datasheet_fp32_flops=peak, datasheet=peak_name, matmul_fp32_flops=matmul)
    made: dict = {}  # fabricated data by shape: an ImageNet batch set is gigabytes drawn on the host
    for row in throughput_rows(s.cpu):
        configs = row["configs"]
        label = row["label"]
        try:
            c = configs[0]
            shape = (c.data.dataset, c.data.image_size, c.train.batch_size, row["kw"].get("dtype") is not None)
            if shape not in made:
                made.clear()
                made[shape] = fabricated_data(c, device)
                if shape[-1]:
                    made[shape] = in_float64(made[shape])
            data = made[shape]
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            outcomes, step_s, n = timed(configs, data, device, **row["kw"])
            memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            flops = sum(run_cost(c)[1] / run_cost(c)[0] for c in configs)
            rate = flops / step_s if step_s else None
            ex = outcomes[0].execution
            s.record(row=label, k=row["k"], kind=kind_of(configs).id, tier_part=part_of(configs[0]),
                     batch=configs[0].train.batch_size, width=configs[0].model.width,
                     side=configs[0].data.image_size, precision=configs[0].train.precision,
                     step_s=step_s, steady_steps=n, flops_per_step=flops, tflops=rate and rate / 1e12,
                     share_of_peak=rate / peak if rate and peak else None,
                     share_of_matmul=rate / matmul if rate else None, peak_memory_bytes=memory,
                     graphed=any(p.replays for p in ex.phases), cudnn_benchmark=ex.cudnn_benchmark,
                     setting=row.get("setting", "default"),
                     toy=s.cpu, seconds=round(time.perf_counter() - t0, 2))
        except torch.OutOfMemoryError as e:
            s.record(row=label, k=row["k"], error=f"out of memory: {str(e)[:200]}")
        except Exception as e:  # noqa: BLE001  (one row failing is a finding; the others still run)
            s.record(row=label, k=row["k"], error=f"{type(e).__name__}: {e}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()


# -- profile -----------------------------------------------------------------------------------------


def profile(s: Session) -> None:
    """Top kernels (device time on CUDA, CPU time on the CPU) of a few steady steps, profiled
    from inside the loop (``on_step`` advances the profiler's schedule, which skips the warm-ups
    and captures): eager K=16, eager K=1, graphed K=16; a Chrome trace of eager K=16."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile, schedule

    from claimbench.gpu_check import fabricated_data

    device = device_of(s)
    cuda = device.type == "cuda"
    ks = (4, 1) if s.cpu else (16, 1)
    cases = [(f"eager K={k}", k, False) for k in ks] + [(f"graphed K={ks[0]}", ks[0], True)]
    # The CPU profiler slows this torch's every op by tens of times: two steps there say enough.
    active = 2 if s.cpu else 5
    for label, k, graphs in cases:
        if graphs and not cuda:
            s.record(case=label, status=NOT_ON_CPU)
            continue
        wait = 5 if graphs else 3  # past the warm-ups and the capture, or the first eager steps
        configs = [config(seed=i, steps=(wait + 1 + active + 1,)) for i in range(k)]
        configs = [toy(c) for c in configs] if s.cpu else configs
        data = fabricated_data(configs[0], device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        trace = s.out / f"trace-eager-k{k}.json" if not graphs and k == ks[0] else None
        seen: dict = {}

        def ready(prof) -> None:
            # Called once, at the end of the active steps: the events are only whole here (a
            # schedule clears them when the next cycle would begin).
            seen["events"] = prof.key_averages()
            if trace is not None:
                prof.export_chrome_trace(str(trace))

        t0 = time.perf_counter()
        with torch_profile(activities=activities, schedule=schedule(wait=wait, warmup=1, active=active, repeat=1),
                           on_trace_ready=ready) as prof:
            _, step_s, _ = timed(configs, data, device, cuda_graphs=graphs, on_step=lambda step, total: prof.step())
        events = seen.get("events", [])
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        if cuda and len(events) and not hasattr(events[0], key):
            key = "self_cuda_time_total"
        busy = [e for e in events if getattr(e, key, 0) > 0]
        total = sum(getattr(e, key) for e in busy) or 1.0
        conv_words = ("conv", "cudnn", "implicit_gemm", "winograd", "fft", "dgrad", "wgrad", "xmma")
        conv = sum(getattr(e, key) for e in busy if any(w in e.key.lower() for w in conv_words))
        top = sorted(busy, key=lambda e: -getattr(e, key))[:12]
        s.record(case=label, k=k, time=("device" if cuda else "cpu") + f" self time, {active} steady steps",
                 total_us=total, conv_share=conv / total, step_s=step_s,
                 # Of a steady step's wall time, the share the profiled device (or CPU) was busy:
                 # on a GPU the rest is idle, waiting on the host.
                 busy_share=total / active / 1e6 / step_s if step_s else None,
                 top=[{"name": e.key[:120], "us": round(getattr(e, key), 1), "calls": e.count} for e in top],
                 chrome_trace=trace.name if trace is not None and trace.is_file() else None,
                 toy=s.cpu, seconds=round(time.perf_counter() - t0, 2))


# -- check -------------------------------------------------------------------------------------------


def full_tier_configs():
    """The full tier's runs (claims and paper tables), planned for a GPU into an empty store."""
    from claimbench.cache import RunStore
    from claimbench.plan import plan_runs
    from claimbench.spec.claims import claim_files, load_claims
    from claimbench.spec.table_folder import load_tables, table_files

    specs = load_claims(claim_files(ROOT / "claims"))
    tables = load_tables(table_files(ROOT / "claims" / "tables"))
    with tempfile.TemporaryDirectory() as empty:
        plan = plan_runs(specs, "full", RunStore(Path(empty)), device="cuda", tables=tables)
    return plan


def chosen_kinds(cases, cpu: bool):
    """GPU: the K=16 all-optimizer CIFAR mix, CIFAR VGG-19, TinyImageNet VGG-16, ImageNet
    VGG-16 (float64's cost). CPU: the mix alone (quick size)."""
    def pick(dataset, arch, most=False):
        found = [c for c in cases if c.kind.dataset == dataset and c.kind.arch == arch]
        return max(found, key=lambda c: (len(c.kind.optimizers), len(c.configs))) if found else None

    wanted = [pick("cifar10", "basicnet", most=True)]
    if not cpu:
        # ImageNet last: the costliest (float64 at 224 px), so the budget cuts it before the others.
        wanted += [pick("cifar10", "vgg19"), pick("tinyimagenet", "vgg16"), pick("imagenet", "vgg16")]
    return [c for c in wanted if c is not None]


def check(s: Session) -> None:
    """``claimbench.gpu_check.check_kind`` per chosen kind: its features, worst ratio (the margin
    left), seconds, and the fast step's measured rate (real size on a GPU: the summary prices
    the tier from it)."""
    from claimbench.gpu_check import CPU_STEPS, GPU_STEPS, check_kind, kinds_of
    from claimbench.gpu_check.selftest import EagerGraphs
    from claimbench.plan.estimate import part_of

    device = device_of(s)
    plan = full_tier_configs()
    cases = kinds_of([r.config for r in plan.runs])
    chosen = chosen_kinds(cases, s.cpu)
    s.record(kinds_in_tier=len(cases), chosen=[c.kind.id for c in chosen], quick=s.cpu)
    with tempfile.TemporaryDirectory(prefix="gpu-session-check-") as tmp:
        for case in chosen:
            r = check_kind(case, device, steps=CPU_STEPS if s.cpu else GPU_STEPS, quick=s.cpu,
                           backend=EagerGraphs() if s.cpu else None, workdir=Path(tmp),
                           say=lambda line: print(line, flush=True),
                           # Within this part's budget: the throughput part measures K already.
                           sweep=False)
            rate = r.flops_per_step / r.fast_step_s if r.fast_step_s and not s.cpu else None
            s.record(kind=r.kind.id, tier_part=part_of(case.configs[0]), runs=r.runs, trained_as=r.trained_as,
                     features={f.feature: f.line() for f in r.features}, worst_ratio=r.worst, worst_at=r.worst_at,
                     flaky=r.flaky or None, fast_step_s=r.fast_step_s, plain_step_s=r.plain_step_s,
                     flops_per_step=r.flops_per_step, measured_flops=rate, kernels=r.kernels,
                     seconds=round(r.seconds, 2), quick=s.cpu)
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


# -- decode ------------------------------------------------------------------------------------------


def decode(s: Session) -> None:
    """Images/s of ``FolderImageData._decode_host`` (PIL in threads, shorter side 256, random
    224 crops) on synthetic 500x375 JPEGs in an ImageNet folder layout, per batch size, against
    the rate the b256 BasicNet ImageNet run needs at the modelled (or the session's measured)
    step time."""
    import numpy as np
    import torch

    try:
        from PIL import Image, features
    except ImportError as e:
        s.record(status="skipped", why=f"PIL cannot be imported ({e}): no JPEG encoder here")
        return
    if not features.check("jpg"):
        s.record(status="skipped", why="this PIL has no JPEG codec: no JPEG encoder here")
        return
    from claimbench.config import DataConfig
    from claimbench.data.folder import _workers, load_imagenet

    device = device_of(s)
    n, batches = (48, (8, 24)) if s.cpu else (384, (40, 256))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gpu-session-jpeg-") as tmp:
        root = Path(tmp)
        # Smooth colour fields plus noise: photo-like entropy, about 93 KiB at quality 90.
        yy, xx = np.mgrid[0:375, 0:500]
        sizes = []
        for split, count in (("train", n), ("val", 2)):
            for i in range(count):
                folder = root / "imagenet" / split / f"n{i % 4:08d}"
                folder.mkdir(parents=True, exist_ok=True)
                base = np.stack([(xx * (1 + i % 5) + yy) % 256, (yy * 2 + i) % 256, (xx + yy * (i % 3)) % 256], -1)
                noise = rng.normal(0, 24, base.shape)
                img = np.clip(base + noise, 0, 255).astype(np.uint8)
                path = folder / f"{i:05d}.JPEG"
                Image.fromarray(img).save(path, quality=90)
                sizes.append(path.stat().st_size)
        s.record(images=n, width=500, height=375, mean_kib=round(sum(sizes) / len(sizes) / 1024, 1),
                 threads=_workers())
        data = load_imagenet(DataConfig(dataset="imagenet"), root).to(device)
        for b in batches:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(b))
            chunks = [order[i : i + b] for i in range(0, n - b + 1, b)]
            data._decode_host(*data._train_crops(chunks[0]))  # the thread pool and the file cache warm
            t0 = time.perf_counter()
            done = 0
            for idx in chunks:
                data._decode_host(*data._train_crops(idx))
                done += len(idx)
            seconds = time.perf_counter() - t0
            s.record(batch=b, images_decoded=done, images_per_s=done / seconds, seconds=round(seconds, 3))
    need, how = needed_decode_rate(s)
    s.record(needed_images_per_s=need, needed_for="BasicNet ImageNet b256 K=1", from_=how)


def needed_decode_rate(s: Session) -> tuple[float | None, str]:
    """Images/s the b256 BasicNet ImageNet run consumes: at the session's measured step (GPU)
    or at the plan's modelled fp32 step on this GPU (an H100 SXM without one)."""
    from claimbench.machine.peaks import ACHIEVABLE_FRACTION, DEFAULT_GPU, match_gpu
    from claimbench.plan.estimate import run_cost

    for row in s.rows():
        if row.get("row") == "BasicNet ImageNet b256 K=1" and row.get("step_s"):
            return 256 / row["step_s"], "measured step (throughput part)"
    c = config(dataset="imagenet", batch=256)
    steps, flops = run_cost(c)
    name = DEFAULT_GPU
    if not s.cpu:
        import torch

        name = torch.cuda.get_device_name()
    peak = match_gpu(name) or match_gpu(DEFAULT_GPU)
    step_s = flops / steps / (ACHIEVABLE_FRACTION["fp32"] * peak.fp32_tflops * 1e12)
    return 256 / step_s, f"modelled fp32 step on {peak.name} ({ACHIEVABLE_FRACTION['fp32']:.0%} of peak)"


# -- summary -----------------------------------------------------------------------------------------


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        text = json.dumps(v, default=str)
        return text if len(text) <= 160 else text[:157] + "..."
    return str(v).replace("|", "/").replace("\n", " ")


def summary(s: Session) -> None:
    """``summary.md``: a row per part (its budget, exit status, seconds, whether it timed out or
    failed), every jsonl row part by part (one table per kind of row), then the full tier
    priced: per part of the tier, the plan's modelled hours next to the hours at the rates this
    session measured at real size (check kinds first, then throughput rows of the same kind), or
    the plan's numbers alone with a line saying which rates were measured."""
    from tabulate import tabulate

    rows = s.rows()
    lines = [f"# GPU session: {s.out.name}", "",
             f"{len(rows)} lines in `session.jsonl`{' (--cpu: toy sizes on the CPU)' if s.cpu else ''}.", ""]
    ends = {r["part"]: r for r in rows if "rc" in r}  # the shell's line per part
    table = []
    for part in PARTS:
        mine = [r for r in rows if r.get("part") == part]
        end = ends.get(part, {})
        errors = [r["error"] for r in mine if r.get("error") and "traceback" in r]
        status = ("writing" if part == "summary" else "not run" if not mine
                  else "timed out" if end.get("timed_out") else "failed" if errors or end.get("rc") not in (0, None)
                  else "ok")
        table.append((part, end.get("budget_s", "-"), status, end.get("rc", "-"), end.get("wall_s", "-"),
                      sum(1 for r in mine if not ({"done", "rc"} & set(r))), (errors or [""])[0][:120]))
    lines += [tabulate(table, headers=("part", "budget s", "status", "exit", "wall s", "measurements", "error"),
                       tablefmt="github", disable_numparse=True), ""]
    for part in PARTS[:-1]:
        mine = [r for r in rows if r.get("part") == part and not ({"done", "rc"} & set(r))]
        lines += [f"## {part}", ""]
        if not mine:
            lines += ["no measurement", ""]
            continue
        # Rows of one kind (the same fields) in one table, in the order they were taken.
        kinds: dict[tuple, list[dict]] = {}
        for r in mine:
            kinds.setdefault(tuple(k for k in r if k not in ("part", "t", "traceback")), []).append(r)
        for keys, group in kinds.items():
            lines += [tabulate([[_cell(r.get(k)) for k in keys] for r in group], headers=keys, tablefmt="github",
                               disable_numparse=True), ""]
    try:
        lines += priced(rows, s.cpu)
    except Exception as e:  # noqa: BLE001  (the rows above are worth writing without the prices)
        lines += ["## the full tier, priced", "", f"could not be priced: {type(e).__name__}: {e}", ""]
    path = s.out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    s.record(summary=path.name, rows=len(rows))


def priced(rows: list[dict], cpu: bool) -> list[str]:
    from tabulate import tabulate

    from claimbench.gpu_check.kinds import kind_of
    from claimbench.machine.target import estimate_target
    from claimbench.plan import parts_table
    from claimbench.plan.estimate import by_part, part_of
    from claimbench.plan.groups import default_group_size

    plan = full_tier_configs()
    plan.target = estimate_target("full", "cpu" if cpu else "cuda")
    # Real size only (a toy row's rate says nothing about the tier), trained the way the tier
    # trains; a check's rate (its real group) before a throughput row's, a larger K first.
    found = [(r["measured_flops"], r["kind"], r.get("tier_part"), "check", 99) for r in rows
             if r.get("part") == "check" and r.get("measured_flops") and not r.get("quick")]
    found += [(r["tflops"] * 1e12, r["kind"], r.get("tier_part"), f"throughput: {r['row']}", r.get("k") or 0)
              for r in rows if r.get("part") == "throughput" and r.get("kind") and r.get("tflops")
              and not r.get("toy") and r.get("setting") == "default"]
    by_kind: dict[str, tuple[float, str]] = {}
    by_part_rate: dict[str, tuple[float, str]] = {}
    for flops, kind, part, how, _k in sorted(found, key=lambda f: -f[4]):
        by_kind.setdefault(kind, (flops, how))
        by_part_rate.setdefault(part, (flops, f"{kind}, {how}"))

    def rate_of(configs) -> float | None:
        """The group's kind's measured rate, else its part's (the nearest measured kind)."""
        got = by_kind.get(kind_of(configs).id) or by_part_rate.get(part_of(configs[0]))
        return got[0] if got else None

    k = default_group_size("cuda", 1)
    modelled = by_part(plan.group_estimates(k, only_missing=False))
    lines = ["## the full tier, priced", "", f"Target: {plan.target.describe()}", ""]
    if found:
        measured = by_part(plan.group_estimates(k, only_missing=False, rate_of=rate_of))
        groups_of = {name: plan.groups(k, only_missing=False) for name in measured}
        table = []
        for name, groups in measured.items():
            m = sum(g.seconds or 0.0 for g in modelled[name])
            e = sum(g.seconds or 0.0 for g in groups)
            own = sum(1 for g in groups_of[name] if part_of(g[0].config) == name
                      and kind_of([r.config for r in g]).id in by_kind)
            table.append((name, sum(g.size for g in groups), f"{m / 3600:,.1f}", f"{e / 3600:,.1f}",
                          f"{own} of {len(groups)} groups at their kind's rate, "
                          f"{sum(g.measured for g in groups) - own} at the part's, the rest modelled"))
        every = [g for gs in measured.values() for g in gs]
        table.append(("total", sum(g.size for g in every),
                      f"{sum(g.seconds or 0.0 for gs in modelled.values() for g in gs) / 3600:,.1f}",
                      f"{sum(g.seconds or 0.0 for g in every) / 3600:,.1f}",
                      f"{sum(g.measured for g in every)} of {len(every)} groups at a measured rate"))
        lines += [tabulate(table, headers=("part", "runs", "modelled fp32 h", "at measured rates h", "source"),
                           tablefmt="github", disable_numparse=True), ""]
        lines += ["Rates measured (training FLOP/s of the fast step): by kind: "
                  + "; ".join(f"{kind} {v / 1e12:.1f} TFLOP/s ({how})" for kind, (v, how) in sorted(by_kind.items()))
                  + ". By part of the tier (for its other kinds): "
                  + "; ".join(f"{p} {v / 1e12:.1f} TFLOP/s ({how})" for p, (v, how) in sorted(by_part_rate.items()))
                  + ". Each group at the precision its runs train in.", ""]
        lines += ["The plan's model, `claimbench plan --tier full`:", ""]
    else:
        lines += ["Rates measured: none at real size (" + ("--cpu: every row is toy size on the CPU"
                  if cpu else "no row finished") + "), so these are `claimbench plan --tier full`'s numbers alone:", ""]
    lines += ["```", parts_table(plan, only_missing=False), "```", ""]
    return lines


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu", action="store_true", help="toy sizes on the CPU")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    s = Session(args.out, args.part, args.cpu)
    fn = globals()[args.part]
    t0 = time.perf_counter()
    try:
        result = fn(s)
    except Exception as e:  # noqa: BLE001  (written down; the session goes on)
        s.record(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2000:])
        # Only the canary's and the summary's failures stop or fail the session.
        return 1 if args.part in ("canary", "summary") else 0
    s.record(done=True, part_seconds=round(time.perf_counter() - t0, 2))
    return 1 if result is False else 0


if __name__ == "__main__":
    sys.exit(main())
