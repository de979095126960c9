"""Train the missing runs of a Plan: fused into groups, on an executor (local processes or Ray).

In:  Plan, RunStore, an ``Executor`` (``LocalExecutor``: this process or a pool of spawned
     processes; ``RayExecutor``: tasks on a Ray cluster), device, runs per group, and optionally
     a dry-run step count.
Out: ``TrainSummary``: every planned run in the cache, or its failure recorded.

Runs that can share one stacked network (``loop.group_key``: same architecture, data, batch
size, schedule and precision; optimizers may differ) form a group. One path for every executor. Each group goes through ``cache.ensure_runs`` (per-key file locks
taken in key order, a checkpoint file per group, the cache write, the checkpoint removed once the
records are stored): a run that another process or executor is already training is waited for
and reused, never trained twice. What differs is only where ``ensure_runs`` and the training
run: the local executor runs both in one process; the Ray executor holds the locks and writes
the cache on the driver (workers need no shared filesystem) and trains on a worker, which
resumes from and saves to the group's checkpoint path when that path is on its disk too.

Failures: a run fails for its input or its environment and the other groups go on. Its input:
a plug-in (``RunFailed``: an exception raised in a plug-in's own code, a plug-in's declaration or
network that claimbench cannot use, a trainer's result that cannot be recorded) or its data
(``DatasetError``); its environment: an unusable cache, an OS error, out of memory, a dead worker
or process. Such a group's runs store nothing; why they failed is recorded beside the cache
(``claimbench.cache.failures``), so a claim that needs them is an error with the reason on its page.
Anything else is a bug in claimbench and propagates with its traceback.

Dry run (``dry_run_steps=N``): every run trains N steps (its schedule's phases shrunk to N steps in
all, ``dry_run_config``) through the same code, stored under its real key in a separate store
(``dry_run_store``: ``<cache>/dry-run/steps-N/``), so checks and reports read it as they read a
real run while the real cache never sees it. Each record's provenance carries the group's step
stamps, from which ``measured_step_times`` derives the steady-state step time (warm-up and CUDA
graph capture steps left out) that ``claimbench plan`` uses.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from claimbench.cache import CacheError, RunStore, ensure_runs
from claimbench.cache.failures import forget_failure, record_failure
from claimbench.config import RunConfig
from claimbench.plan import Plan
from claimbench.plan.groups import PlannedRun, default_group_size, form_groups, group_id, group_label
from claimbench.plan.step_times import StepTime, now, steady_step_time
from claimbench.progress import Progress, QueueReader

log = logging.getLogger(__name__)

DRY_RUN_DIR = "dry-run"


@dataclass
class TrainSummary:
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> message
    # Why nothing was trained at all (a read-only cache), said once rather than per run.
    blocked: str | None = None


@dataclass(frozen=True)
class GroupJob:
    """One group to make present in the cache: what is trained under which keys, and where."""

    configs: tuple[RunConfig, ...]  # what is trained (a dry run's shortened configs)
    keys: tuple[str, ...]  # cache keys: always the real configs' keys
    cache_root: str
    data_root: str | None
    device: str
    threads: int  # torch threads on CPU (0: leave torch's default)
    dry_run_steps: int | None = None
    index: int = 0  # the group's place in the plan (progress updates name it)
    # Where step updates go: a callable in this process, a queue from a worker process, or None.
    progress: Any = field(default=None, compare=False)
    # Fast features `claimbench gpu-check` switched off for this kind of group on this machine.
    switched_off: tuple[str, ...] = ()


# -- dry runs ------------------------------------------------------------------------------------


def dry_run_config(config: RunConfig, steps: int) -> RunConfig:
    """``config`` with its schedule shrunk to ``steps`` steps in all, keeping every LR phase (at
    least one step each) in proportion, so phase changes are exercised too."""
    from claimbench.config import phase_steps
    from claimbench.data.catalog import data_shape

    real = phase_steps(config.train, data_shape(config.data)[0])
    total = sum(real)
    steps = max(steps, len(real))
    phases = [max(1, round(steps * p / total)) for p in real]
    phases[0] = max(1, phases[0] + steps - sum(phases))
    return replace(config, train=replace(config.train, unit="steps", phases=tuple(phases)))


def dry_run_store(store: RunStore, steps: int) -> RunStore:
    """The namespace of N-step dry runs: records under their real keys, never in the real store."""
    return RunStore(store.root / DRY_RUN_DIR / f"steps-{steps}")


def measured_step_times(plan: Plan, store: RunStore) -> dict[str, StepTime]:
    """Steady-state step time per kind of group, from the dry-run records of ``plan`` in ``store``.

    Warm-up steps are left out here, where the times are used, from what the record says ran
    (``claimbench.plan.step_times.unsteady_steps``): the first step (allocation, optimizer state, cuDNN
    autotuning), the loop's eager warm-ups before a CUDA graph capture (3) and each capture step
    (one per learning-rate phase). A record without per-step stamps (written before they were
    kept) or without the loop's phase records is not judged: its kind of group stays modelled."""
    times: dict[str, StepTime] = {}
    for run in plan.runs:
        record = store.get(run.key)
        info = record.provenance.get("dry_run") if record is not None else None
        if not info:
            continue
        t = steady_step_time(info, record.provenance.get("cuda_graph_phases"), int(record.provenance["group_size"]))
        if t is None:
            continue
        gid = group_id(run.config)
        # Several groups of one kind: keep the largest (the real tier's size), then the slowest.
        old = times.get(gid)
        if old is None or (t.group_size, t.step_s) > (old.group_size, old.step_s):
            times[gid] = t
    return times


# -- where training happens ----------------------------------------------------------------------


def train_group(configs: list[RunConfig], checkpoint: Path | None, device: str, data_root: str | None,
                threads: int, dry_run_steps: int | None = None,
                on_progress: Callable[[int, int], None] | None = None, switched_off: tuple[str, ...] = ()) -> list:
    """Train and measure one group in this process; with ``dry_run_steps``, time its steps;
    ``on_progress(step, total)`` as training goes. ``switched_off``: fast features this group's
    kind gave up in ``claimbench gpu-check`` ("graphs": eager steps, "kernels": plain optimizer
    kernels, "resume": no checkpoint), handed to the loop as arguments, never through the
    process environment that other groups' threads share."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    stamps: list[tuple[int, float]] = []

    def on_step(step: int, total: int) -> None:
        if dry_run_steps:
            stamps.append((step, time.perf_counter()))
        if on_progress is not None:
            on_progress(step, total)

    trained = [dry_run_config(c, dry_run_steps) for c in configs] if dry_run_steps else configs
    try:
        records = _train_fitting(trained, device, Path(data_root) if data_root else None, on_step,
                                 None if "resume" in switched_off else checkpoint, switched_off,
                                 device_free_bytes(device))
    except Exception as e:
        reason = plugin_failure(e, configs)
        if reason is None:
            raise
        # Judged here, where the traceback still exists (a worker process's exception reaches the
        # parent without it), and raised as one line that crosses any process boundary.
        raise RunFailed(reason) from None
    if dry_run_steps:
        # Stored under the real run's key (in the dry-run store only): the record carries the real
        # config, which its key was computed from, and says in provenance what was trained instead.
        records = [replace(r, config=c, provenance={**r.provenance, "dry_run_config": t.to_dict()})
                   for r, c, t in zip(records, configs, trained)]
        # Raw stamps (steps done, seconds): which steps are warm-up is decided where they are
        # used (measured_step_times), from the phases the loop recorded.
        info = {"steps": dry_run_steps, "step_ends": [[n, round(t - stamps[0][1], 6)] for n, t in stamps],
                "measured_at": now()}
        for r in records:
            r.provenance["dry_run"] = info
    return records


def device_free_bytes(device: str) -> int | None:
    """Free memory of the CUDA device this process trains on (None on a CPU: no cap there). Asked
    in the process that trains, which holds a CUDA context anyway; the process that plans never
    opens one."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def split_by_memory(configs: list[RunConfig], free_bytes: int | None) -> tuple[list[list[RunConfig]], str]:
    """``configs`` in groups that each fit ``free_bytes`` of device memory by
    ``memory_group_cap`` (VGG at 224 px, 16 runs, needs more than an 80 GB GPU has), and the
    line that says so ("" when nothing is split)."""
    from claimbench.plan.estimate import memory_group_cap, run_memory_bytes

    cap = memory_group_cap(configs[0], free_bytes) if free_bytes is not None else None
    if cap is None or len(configs) <= cap:
        return [list(configs)], ""
    need = len(configs) * run_memory_bytes(configs[0]) / 2**30
    return ([list(configs[i:i + cap]) for i in range(0, len(configs), cap)],
            f"{len(configs)} runs of {configs[0].summary()} need about {need:.0f} GiB, {free_bytes / 2**30:.0f} GiB "
            f"free on the GPU: trained in groups of at most {cap}")


def _part_checkpoint(checkpoint: Path | None, i: int) -> Path | None:
    # A checkpoint of the whole group does not fit a part of it: each part keeps its own.
    return checkpoint.with_name(f"{checkpoint.stem}-part{i}{checkpoint.suffix}") if checkpoint else None


def _train_parts(parts: list[list[RunConfig]], device: str, data_root: Path | None, on_step,
                 checkpoint: Path | None, switched_off: tuple[str, ...]) -> list:
    records = []
    for i, part in enumerate(parts):
        path = _part_checkpoint(checkpoint, i)
        records += _train_fitting(part, device, data_root, on_step, path, switched_off)
        if path is not None:
            path.unlink(missing_ok=True)
    return records


def _train_fitting(configs: list[RunConfig], device: str, data_root: Path | None, on_step,
                   checkpoint: Path | None, switched_off: tuple[str, ...], free_bytes: int | None = None) -> list:
    """``run_and_measure_group`` in groups that fit the device (``split_by_memory`` of
    ``free_bytes``); a group that runs out of device memory anyway is trained again as two
    halves (each halved again if need be), said in one line: the cap is an estimate."""
    from claimbench.runs import run_and_measure_group

    parts, line = split_by_memory(configs, free_bytes)
    if len(parts) > 1:
        log.warning("%s", line)
        return _train_parts(parts, device, data_root, on_step, checkpoint, switched_off)
    try:
        return run_and_measure_group(configs, device, data_root, on_step=on_step, checkpoint=checkpoint,
                                     cuda_graphs=False if "graphs" in switched_off else None,
                                     kernels="plain" if "kernels" in switched_off else None)
    except Exception as e:  # noqa: BLE001  (only an out-of-memory error is handled; the rest re-raised)
        if out_of_memory(e) != "device" or len(configs) < 2:
            raise
        half = (len(configs) + 1) // 2
        log.warning("out of GPU memory with %d runs in one group (%s): retrying as groups of %d and %d",
                    len(configs), configs[0].summary(), half, len(configs) - half)
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return _train_parts([configs[:half], configs[half:]], device, data_root, on_step, checkpoint, switched_off)


def ensure_group(job: GroupJob, train_many: Callable[[list[RunConfig], Path], list]) -> list[tuple[str, bool]]:
    """The contract every executor keeps: ``ensure_runs`` (locks, checkpoint, cache write)."""
    store = RunStore(Path(job.cache_root))
    results = ensure_runs(list(job.configs), store, train_many, list(job.keys))
    return [(k, trained) for k, (_, trained) in zip(job.keys, results)]


def _local_group(job: GroupJob) -> list[tuple[str, bool]]:
    """One group, locks and training in this process (the local executor's unit of work)."""
    report = job.progress
    if report is not None and hasattr(report, "put"):  # a queue from the process that plans
        queue, report = report, (lambda step, total: queue.put((job.index, step, total)))
    return ensure_group(job, lambda cs, ckpt: train_group(cs, ckpt, job.device, job.data_root, job.threads,
                                                          job.dry_run_steps, report, job.switched_off))


def _ray_train(configs: list[RunConfig], checkpoint: str, device: str, data_root: str | None,
               dry_run_steps: int | None, switched_off: tuple[str, ...] = ()) -> list:
    """Runs on a Ray worker. The checkpoint path is the driver's: used where this worker can
    write there (a local instance, a shared filesystem), so a retried task resumes."""
    if device.startswith("cuda"):
        device = "cuda"  # Ray gives the task its GPU through CUDA_VISIBLE_DEVICES: index 0 here
    path: Path | None = Path(checkpoint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = None
    return train_group(configs, path, device, data_root, 0, dry_run_steps, switched_off=switched_off)


# -- failures ------------------------------------------------------------------------------------


class RunFailed(Exception):
    """A run that failed because of a plug-in, not of claimbench. The message is one line that names
    the plug-in and says what went wrong (and where in the plug-in's own code, when it raised):
    all a user needs, so no traceback of claimbench's code is shown."""


# Where claimbench judges a plug-in's network (claimbench.train.models): a ValueError or TypeError raised
# right there is a verdict on the plug-in (no BatchNorm, a BatchNorm without its own ReLU, a
# build that returns no module, a stack that is not its runs), not a bug of claimbench's.
_NETWORK_CHECKS = ("PluginNet.__init__", "PluginNet.blocks", "_stack_plugin")


def plugin_failure(error: BaseException, configs: list[RunConfig]) -> str | None:
    """Why the runs of ``configs`` failed, in one line naming the plug-in at fault, when a
    plug-in is: an error claimbench raised about one (``claimbench.plugins.PluginError``, which a trainer's
    unusable result is), an exception raised inside a plug-in's own code, or a network claimbench
    cannot measure. None: the error is not a plug-in's (a bug in claimbench, or the environment's)."""
    from claimbench.config import plugins_used
    from claimbench.plugins import PluginError

    used = list(dict.fromkeys(p for c in configs for p in plugins_used(c)))
    if not used or out_of_memory(error) is not None:
        return None  # memory is the machine's to answer for, whoever asked for it
    sources = _plugin_sources(used)
    frame = _last_plugin_frame(error, sources)
    where = f" (at {frame})" if frame else ""
    if isinstance(error, PluginError):  # its message already names the plug-in
        return _one_line(f"{error}{where}")
    if frame is not None:
        kind, name, entry = frame.plugin
        return _one_line(f"{kind} plug-in {name} ({entry}): {type(error).__name__}: {error}{where}")
    model = next((s for s in sources if s.kind == "model"), None)
    if model is not None and isinstance(error, (ValueError, TypeError)) and _raised_in(error, _NETWORK_CHECKS):
        return _one_line(f"model plug-in {model.name} ({model.entry_point}): {error}")
    return None


class _Frame:
    """A frame of a plug-in's code, shown as its file (from the plug-in's package) and line."""

    def __init__(self, plugin: tuple[str, str, str], file: str, line: int, function: str):
        self.plugin, self.file, self.line, self.function = plugin, file, line, function

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclass(frozen=True)
class _Source:
    """Where a plug-in's code lives (its top-level package folder or module file) and the
    functions claimbench calls in it (build, load, train...), which say whose code a frame entered."""

    kind: str
    name: str
    entry_point: str
    path: Path
    entered_by: tuple[Any, ...]  # code objects

    def holds(self, file: Path) -> bool:
        return file == self.path or self.path in file.parents


def _plugin_sources(used: list[tuple[str, str]]) -> list[_Source]:
    """The sources of the plug-ins ``used`` that resolve (one that does not failed by name)."""
    from claimbench.plugins import PluginError, resolve

    found = []
    for kind, name in used:
        try:
            r = resolve(kind, name)
        except PluginError:
            continue
        calls = [getattr(r.plugin, a, None) for a in ("build", "flops_per_image", "load", "train")]
        found.append(_Source(kind, name, r.entry_point, r.source,
                             tuple(c.__code__ for c in calls if hasattr(c, "__code__"))))
    return found


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (``raise ... from``), outermost first. Not
    those it was merely raised while handling: a bug of claimbench's in an ``except`` block that
    handled a plug-in's exception is still claimbench's."""
    out: list[BaseException] = []
    while error is not None and error not in out:
        out.append(error)
        error = error.__cause__
    return out


def _last_plugin_frame(error: BaseException, sources: list[_Source]) -> _Frame | None:
    """The innermost frame of a plug-in's own code in ``error``'s traceback or those of its
    causes (innermost cause first): the line of the researcher's code where it went wrong. Whose
    code it is: the plug-in whose function claimbench called to get there; a frame entered otherwise
    (a network's ``forward``, called by torch) is the model's. Several plug-ins often share one
    module, so the file alone cannot say."""
    import traceback

    for e in reversed(_chain(error)):
        owner, last = None, None
        for frame, line in traceback.walk_tb(e.__traceback__):
            file = Path(frame.f_code.co_filename).resolve()
            inside = [s for s in sources if s.holds(file)]
            if not inside:
                continue
            if owner is None:
                owner = next((s for s in inside if frame.f_code in s.entered_by), None) \
                    or next((s for s in inside if s.kind == "model"), inside[0])
            last = _Frame((owner.kind, owner.name, owner.entry_point), str(file.relative_to(owner.path.parent)),
                          line or 0, frame.f_code.co_name)
        if last is not None:
            return last
    return None


def _raised_in(error: BaseException, functions: tuple[str, ...]) -> bool:
    """Whether ``error`` was raised directly in one of claimbench's ``functions`` of
    claimbench/train/models.py (qualified names: ``Class.method`` or ``function``)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if Path(code.co_filename).resolve() != Path(__file__).resolve().parent / "train" / "models.py":
        return False
    owner = tb.tb_frame.f_locals.get("self")
    qualified = f"{type(owner).__name__}.{code.co_name}" if owner is not None else code.co_name
    return qualified in functions


def _one_line(text: str) -> str:
    """A message on one line: torch's multi-line errors (size mismatches) joined."""
    return " ".join(text.split())


def environment_failure(error: BaseException) -> bool:
    """A plug-in's failure, missing data, an unusable cache, the OS, memory, a dead worker:
    recorded as a failed run. Everything else is a bug and must not be mistaken for one."""
    from claimbench.data.base import DatasetError

    try:
        import ray.exceptions as rex
    except ImportError:
        rex = None
    if rex is not None and isinstance(error, rex.RayTaskError):
        cause = getattr(error, "cause", None)
        return cause is not None and environment_failure(cause)
    if rex is not None and isinstance(error, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError,
                                              rex.RaySystemError, rex.ObjectLostError, rex.TaskUnschedulableError,
                                              rex.RuntimeEnvSetupError, rex.ActorDiedError)):
        return True
    if isinstance(error, (RunFailed, DatasetError, CacheError, OSError, BrokenProcessPool)):
        return True
    return out_of_memory(error) is not None


def out_of_memory(error: BaseException) -> str | None:
    """Where ``error`` ran out of memory ("device" or "CPU"), or None when it is something else.
    The one place that knows how torch says so: CUDA raises ``torch.OutOfMemoryError`` (a
    RuntimeError, matched by name so this module needs no torch); the CPU allocator raises a plain
    RuntimeError ("DefaultCPUAllocator: can't allocate memory", "not enough memory"); Python
    raises MemoryError."""
    if type(error).__name__ == "OutOfMemoryError":
        return "device"
    if isinstance(error, MemoryError):
        return "CPU"
    text = str(error) if isinstance(error, RuntimeError) else ""
    if "DefaultCPUAllocator" in text or "can't allocate memory" in text or "not enough memory" in text:
        return "CPU"
    return None


# -- executors -----------------------------------------------------------------------------------


class LocalExecutor:
    """Groups in this process (``jobs=1``) or in ``jobs`` spawned processes; on CPU each gets
    ``threads`` torch threads (default: cores // jobs)."""

    name = "local"

    def __init__(self, jobs: int = 1, threads: int | None = None):
        self.jobs, self.threads = max(1, jobs), threads
        self._manager = None

    def group_size(self, device: str) -> int:
        return default_group_size(device, self.jobs)

    def thread_count(self, device: str, groups: int) -> int:
        if device.startswith("cuda"):
            return 0
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, min(self.jobs, groups)))

    def processes(self, n_jobs: int) -> bool:
        """Whether ``n_jobs`` groups train in worker processes (else in this one)."""
        return not (self.jobs == 1 or n_jobs == 1)

    def progress_queue(self):
        """A queue worker processes can put step updates on (a manager's, shared by pickling).
        The manager's process ends with this one, like the workers."""
        if self._manager is None:
            from multiprocessing.managers import SyncManager

            self._manager = SyncManager(ctx=get_context("spawn"))
            self._manager.start(initializer=end_with_parent, initargs=(os.getpid(),))
        return self._manager.Queue()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None

    def run(self, jobs: list[GroupJob]) -> Iterable[tuple[int, Callable[[], list[tuple[str, bool]]]]]:
        """Yields (job index, a call that returns its results or raises its error) as jobs end."""
        if not self.processes(len(jobs)):
            for i, job in enumerate(jobs):
                yield i, (lambda job=job: _local_group(job))
            return
        pool = ProcessPoolExecutor(min(self.jobs, len(jobs)), mp_context=get_context("spawn"),
                                   initializer=end_with_parent, initargs=(os.getpid(),))
        finished = False
        try:
            # Not cancelled one by one: ending the workers fails every pending future at once, and
            # the pool's own thread cannot fail a future already cancelled (it raises, in 3.11).
            yield from _as_completed(pool, _local_group, jobs, cancel_on_stop=False)
            finished = True
        finally:
            if not finished:
                # Stopped early (an error, Ctrl-C, SIGTERM from a job scheduler, the caller gone):
                # leaving the pool would wait for every running group, maybe for hours. The
                # workers are ended instead; a killed worker's file locks are released by the
                # system and its last checkpoint stays, so the run resumes when asked again.
                _end_workers(pool)
            pool.shutdown(wait=finished)


class RayExecutor:
    """Each group's training is a Ray task (a GPU per task on CUDA plans, else a CPU); the
    driver holds the group's locks and writes the cache. ``address=None`` starts a local
    instance. A task whose worker dies is retried ``max_retries`` times by Ray; an exception
    raised by the task itself is not retried."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3, max_in_flight: int = 64):
        self.address, self.max_retries, self.max_in_flight = address, max_retries, max_in_flight

    def group_size(self, device: str) -> int:
        return default_group_size(device, 1)

    def thread_count(self, device: str, groups: int) -> int:
        return 0

    def run(self, jobs: list[GroupJob]) -> Iterable[tuple[int, Callable[[], list[tuple[str, bool]]]]]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if self.address is None else None)
        on_gpu = any(job.device.startswith("cuda") for job in jobs)
        resources = {"num_gpus": 1} if on_gpu else {"num_cpus": 1}
        task = ray.remote(max_retries=self.max_retries, retry_exceptions=False, **resources)(_ray_train)

        def one(job: GroupJob) -> list[tuple[str, bool]]:
            def train_many(configs, ckpt):
                return ray.get(task.remote(configs, str(ckpt), job.device, job.data_root, job.dry_run_steps,
                                           job.switched_off))

            return ensure_group(job, train_many)

        # Driver threads only wait: on locks and on ray.get.
        with ThreadPoolExecutor(max(1, min(self.max_in_flight, len(jobs)))) as pool:
            yield from _as_completed(pool, one, jobs)


def end_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Run in each worker process: end it when the process that started it is gone (killed by a
    signal it could not handle, SIGKILL included), instead of training on with nobody to store
    the result. A worker whose parent died is adopted by another process: its parent id changes."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)  # SIGTERM was handled or ignored by someone: leave anyway

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _end_workers(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    processes = list(getattr(pool, "_processes", {}).values())
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def _as_completed(pool: Executor, fn: Callable[[GroupJob], list[tuple[str, bool]]], jobs: list[GroupJob],
                  cancel_on_stop: bool = True) -> Iterable[tuple[int, Callable[[], list[tuple[str, bool]]]]]:
    """Submit ``fn(job)`` for every job; yield (job index, its result call) as each ends. Jobs not
    started when the caller stops (an error, Ctrl-C) are cancelled (``cancel_on_stop``), or left
    to the caller, who ends the pool."""
    pending = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result
    finally:
        if cancel_on_stop:
            for fut in pending:
                fut.cancel()


# -- the one entry point -------------------------------------------------------------------------


def train_plan(plan: Plan, store: RunStore, jobs: int = 1, device: str = "auto",
               data_root: Path | None = None, progress: bool = True, group_size: int | None = None,
               threads: int | None = None, executor: LocalExecutor | RayExecutor | None = None,
               dry_run_steps: int | None = None, progress_stream=None, progress_label: str = "") -> TrainSummary:
    """Train what ``plan`` lacks in ``store`` on ``executor`` (default: ``LocalExecutor(jobs,
    threads)``). ``threads``: torch threads per job on CPU; a caller that is itself one of several
    processes (a pytest-xdist worker) passes its share, or the cores are oversubscribed. With
    ``dry_run_steps``, ``store`` should be a ``dry_run_store``. ``progress``: show the run-steps of
    all runs with an ETA (``claimbench.progress``) on ``progress_stream`` (default stderr), each line
    starting with ``progress_label``."""
    executor = executor or LocalExecutor(jobs, threads)
    summary, todo = _start(plan, store)
    if not todo:
        return summary
    if not store.writable():
        # Checked before training: hours of runs that could not be stored would be lost.
        summary.blocked = str(store.read_only_error(f"the {len(todo)} runs it lacks"))
        for run in todo:
            summary.failed[run.key] = f"{run.config.summary()}: not trained (read-only cache)"
        return summary
    groups = form_groups(todo, group_size or executor.group_size(plan.device))
    worker_device = device if device != "auto" else plan.device
    groups, switched = honour_gpu_check(groups, store.root, worker_device)
    n_threads = executor.thread_count(plan.device, len(groups))
    jobs_ = [GroupJob(tuple(r.config for r in g),
                      tuple(r.key for r in g), str(store.root), str(data_root) if data_root else None,
                      worker_device, n_threads, dry_run_steps, index=i, switched_off=switched[i])
             for i, g in enumerate(groups)]
    what = f"dry-running ({dry_run_steps} steps)" if dry_run_steps else "training"
    steps = [dry_run_steps or g[0].steps for g in groups]  # the runs of a group share their schedule
    shown = Progress(sum(n * len(g) for n, g in zip(steps, groups)),
                     f"{progress_label}{what} {_count(len(todo), 'run')} in {_count(len(groups), 'group')} "
                     f"on {executor.name}",
                     enabled=progress, stream=progress_stream)
    names = [(len(g), f"group {i + 1}/{len(groups)} ({group_label(g)})") for i, g in enumerate(groups)]
    reader = None
    if isinstance(executor, LocalExecutor) and executor.processes(len(jobs_)):
        # Worker processes report steps through a queue; a thread here turns them into progress.
        queue = executor.progress_queue()
        reader = QueueReader(queue, shown, names)
        jobs_ = [replace(j, progress=queue) for j in jobs_]
    elif isinstance(executor, LocalExecutor):
        jobs_ = [replace(j, progress=(lambda step, total, i=i: shown.update(i, names[i][0], step, total, names[i][1])))
                 for i, j in enumerate(jobs_)]
    try:
        for i, call in executor.run(jobs_):
            if _collect(summary, groups[i], call, store.root):
                shown.update(i, len(groups[i]), steps[i], steps[i], names[i][1])
            else:
                shown.give_up(i, len(groups[i]), steps[i])
    finally:
        if reader is not None:
            reader.stop()
            executor.close()
        shown.close()
    return summary


def honour_gpu_check(groups: list[list[PlannedRun]], cache_root: Path,
                     device: str) -> tuple[list[list[PlannedRun]], list[tuple[str, ...]]]:
    """The groups as this machine's ``claimbench gpu-check`` record allows them (a kind whose stacking
    failed trains its runs one by one) and the features each gives up, with one warning per
    feature and kind saying what and why. No record for this machine: nothing is switched off."""
    from claimbench.gpu_check import SwitchedOff, announce, kind_of

    record = SwitchedOff.load(cache_root, device)
    out: list[list[PlannedRun]] = []
    switched: list[tuple[str, ...]] = []
    said: set[str] = set()
    for g in groups:
        off = record.for_group([r.config for r in g])
        for line in announce(kind_of([r.config for r in g]).id, off, record.path):
            if line not in said:
                said.add(line)
                log.warning("%s", line)
        parts = [[r] for r in g] if "stacked" in off else [g]
        out += parts
        switched += [tuple(sorted(off))] * len(parts)
    return out, switched


def train_plan_ray(plan: Plan, store: RunStore, address: str | None = None, device: str = "auto",
                   data_root: Path | None = None, group_size: int | None = None,
                   progress: bool = True, max_retries: int = 3, dry_run_steps: int | None = None) -> TrainSummary:
    """``train_plan`` on a Ray cluster (``address``; None starts a local instance)."""
    return train_plan(plan, store, device=device, data_root=data_root, progress=progress, group_size=group_size,
                      executor=RayExecutor(address, max_retries), dry_run_steps=dry_run_steps)


def _collect(summary: TrainSummary, group: list[PlannedRun], call: Callable[[], list[tuple[str, bool]]],
             cache_root: Path) -> bool:
    """Count one group's outcome into ``summary``; False when it failed. A failure is recorded
    beside the cache per run, so checks and reports say why; a success forgets an older one."""
    try:
        results = call()
    except Exception as e:
        if not environment_failure(e):
            raise
        # One group's failure (a plug-in's, missing data, out of memory, a dead worker) must not
        # lose the others.
        for run in group:
            summary.failed[run.key] = f"{run.config.summary()}: {_message(e)}"
            record_failure(cache_root, run.key, run.config.summary(), _message(e), run.config.to_dict(),
                           _plugins_of(run.config))
        # Said by the caller, one line per run (the CLI, the pytest plugin); here for a library user.
        log.info("group of %d runs (%s) failed: %s", len(group), group_label(group), _message(e))
        return False
    for key, trained in results:
        (summary.trained if trained else summary.reused).append(key)
        forget_failure(cache_root, key)
    return True


def _plugins_of(config: RunConfig) -> list[dict] | None:
    """What the run's plug-ins declared, for its failure record; None when one of them cannot be
    loaded (then that is what failed, and the record says so in its reason)."""
    from claimbench.cache.provenance import plugin_provenance
    from claimbench.plugins import PluginError

    try:
        return plugin_provenance(config)
    except PluginError:
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _message(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # a RayTaskError's original exception
    if isinstance(cause, RunFailed):  # already one line naming the plug-in
        return str(cause)
    return _one_line(f"{type(cause).__name__}: {cause}")


def _start(plan: Plan, store: RunStore) -> tuple[TrainSummary, list[PlannedRun]]:
    """The summary with the already cached runs counted, and the runs still to train."""
    summary = TrainSummary()
    todo = []
    for r in plan.runs:
        if store.contains(r.key):
            summary.reused.append(r.key)
        else:
            todo.append(r)
    return summary, todo
