"""Train the missing runs of a Plan: fused into groups, on an executor (local processes or Ray).

In:  Plan, RunStore, an ``Executor`` (``LocalExecutor``: this process or a pool of spawned
     processes; ``RayExecutor``: tasks on a Ray cluster), device, runs per group, and optionally
     a dry-run step count. On a GPU, runs per group come per kind from this machine's
     ``claimbench gpu-check`` record where it chose one (``measured_group_size``).
Out: ``TrainSummary``: every planned run in the cache, or its failure recorded.

Runs that can share one stacked network (``config.group_key``: same architecture, data, batch
size, schedule and precision; optimizers may differ) form a group. One path for every executor.
Each group goes through ``cache.ensure_runs`` (per-key file locks
taken in key order, a checkpoint file per group, the cache write, the checkpoint removed once the
records are stored): a run that another process or executor is already training is waited for
and reused, never trained twice. What differs is only where ``ensure_runs`` and the training
run: the local executor runs both in one process; the Ray executor holds the locks and writes
the cache on the driver (workers need no shared filesystem) and trains on a worker, which
resumes from and saves to the group's checkpoint path when that path is on its disk too. What
a worker does with its group (train, measure, record) is ``claimbench.group.train_group``,
imported inside the functions that run there: this module, which plans and hands out groups,
loads no torch.

Failures: a run fails for its input or its environment and the other groups go on. Its input:
a plug-in (``RunFailed``: an exception raised in a plug-in's own code, a plug-in's declaration or
network that claimbench cannot use, a trainer's result that cannot be recorded) or its data
(``DatasetError``); its environment: an unusable cache, an OS error, out of memory, a dead worker
or process (judged by ``claimbench.run_failures``). Such a group's runs store nothing; why they
failed is recorded beside the cache (``claimbench.cache.failures``), so a claim that needs them is
an error with the reason on its page. Anything else is a bug in claimbench and propagates with its
traceback.

Dry run (``dry_run_steps=N``): every run trains N steps (its schedule's phases shrunk to N steps in
all, ``claimbench.group.dry_run_config``) through the same code, into the store the caller gives
(``claimbench.dry_run.dry_run_store``: ``<cache>/dry-run/steps-N/``), honouring the real cache's
gpu-check record (``check_root``); each record's provenance carries the group's step stamps, which ``claimbench.dry_run.measured_step_times`` reads.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from claimbench.cache import RunStore, ensure_runs
from claimbench.cache.failures import forget_failure, record_failure
from claimbench.config import RunConfig
from claimbench.plan import Plan
from claimbench.plan.groups import PlannedRun, default_group_size, form_groups, group_label
from claimbench.progress import Progress, QueueReader
from claimbench.run_failures import environment_failure, failure_message

log = logging.getLogger(__name__)


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


# -- where a group is ensured and trained --------------------------------------------------------


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

    def train_many(configs: list[RunConfig], checkpoint: Path) -> list:
        # Imported here, when a group is trained at all: a group already cached loads no torch.
        from claimbench.group import train_group

        return train_group(configs, checkpoint, job.device, job.data_root, job.threads, job.dry_run_steps, report,
                           job.switched_off)

    return ensure_group(job, train_many)


def _ray_train(configs: list[RunConfig], checkpoint: str, device: str, data_root: str | None,
               dry_run_steps: int | None, switched_off: tuple[str, ...] = ()) -> list:
    """Runs on a Ray worker. The checkpoint path is the driver's: used where this worker can
    write there (a local instance, a shared filesystem), so a retried task resumes."""
    from claimbench.group import train_group

    if device.startswith("cuda"):
        device = "cuda"  # Ray gives the task its GPU through CUDA_VISIBLE_DEVICES: index 0 here
    path: Path | None = Path(checkpoint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = None
    return train_group(configs, path, device, data_root, 0, dry_run_steps, switched_off=switched_off)


# -- executors -----------------------------------------------------------------------------------


def _thread_limit() -> int | None:
    """The threads this process was told it may use (``OMP_NUM_THREADS``, as a pytest-xdist worker,
    a batch scheduler or a user sets it), else None. Honoured because a share of the cores taken
    twice over is slow, not just unfair: with two thread pools spinning on two cores, a 8-second
    run took 300 seconds."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n >= 1 else None


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
        share = max(1, (os.cpu_count() or 1) // max(1, min(self.jobs, groups)))
        return self.threads or min(share, _thread_limit() or share)

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
               dry_run_steps: int | None = None, progress_stream=None, progress_label: str = "",
               check_root: Path | None = None) -> TrainSummary:
    """Train what ``plan`` lacks in ``store`` on ``executor`` (default: ``LocalExecutor(jobs,
    threads)``). ``threads``: torch threads per job on CPU; a caller that is itself one of several
    processes (a pytest-xdist worker) passes its share, or the cores are oversubscribed. With
    ``dry_run_steps``, ``store`` should be a ``dry_run_store``, and ``check_root`` the real cache's
    root, whose ``claimbench gpu-check`` record it honours (default: the store's). ``progress``: show the run-steps of
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
    worker_device = device if device != "auto" else plan.device
    size = group_size or executor.group_size(plan.device)
    # On a GPU each kind groups by the K gpu-check measured there; an explicit group size wins.
    size_of = (measured_group_size(check_root or store.root, worker_device, size)
               if group_size is None and worker_device.startswith("cuda") else None)
    groups = form_groups(todo, size, size_of)
    groups, switched = honour_gpu_check(groups, check_root or store.root, worker_device)
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


def measured_group_size(cache_root: Path, device: str, default: int) -> Callable[[RunConfig], int]:
    """The runs per group for a run's kind as this machine's ``claimbench gpu-check`` record chose
    it (``ChosenGroupSizes``), said once per kind; ``default`` where the record has none (no check
    here, or one written by another machine, driver, torch or code, or not marked by this user)."""
    from claimbench.gpu_check import ChosenGroupSizes

    chosen = ChosenGroupSizes.load(cache_root, device)
    said: set[str] = set()

    def size_of(config: RunConfig) -> int:
        found = chosen.for_config(config)
        if found is None:
            return default
        k, why = found
        line = f"groups of {k} for {config.data.dataset} {config.model.arch} (batch {config.train.batch_size}): {why}"
        if line not in said:
            said.add(line)
            log.info("%s", line)
        return k

    return size_of


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
                   progress: bool = True, max_retries: int = 3, dry_run_steps: int | None = None,
                   check_root: Path | None = None) -> TrainSummary:
    """``train_plan`` on a Ray cluster (``address``; None starts a local instance)."""
    return train_plan(plan, store, device=device, data_root=data_root, progress=progress, group_size=group_size,
                      executor=RayExecutor(address, max_retries), dry_run_steps=dry_run_steps, check_root=check_root)


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
            summary.failed[run.key] = f"{run.config.summary()}: {failure_message(e)}"
            record_failure(cache_root, run.key, run.config.summary(), failure_message(e), run.config.to_dict(),
                           _plugins_of(run.config))
        # Said by the caller, one line per run (the CLI, the pytest plugin); here for a library user.
        log.info("group of %d runs (%s) failed: %s", len(group), group_label(group), failure_message(e))
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
