"""The default -j follows the machine: one group per core on a CPU as memory allows, one on a GPU."""

from __future__ import annotations

import os

from claimbench.machine import detect
from claimbench.plan.groups import CPU_JOB_BYTES, default_jobs


def test_one_job_per_core_as_memory_allows_and_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(detect, "available_memory", lambda: 64 * CPU_JOB_BYTES)
    assert default_jobs("cpu") == 4
    assert default_jobs("cuda") == default_jobs("cuda:1") == 1
    monkeypatch.setattr(detect, "available_memory", lambda: int(2.5 * CPU_JOB_BYTES))
    assert default_jobs("cpu") == 2
    monkeypatch.setattr(detect, "available_memory", lambda: CPU_JOB_BYTES // 2)
    assert default_jobs("cpu") == 1  # never none
    monkeypatch.setattr(detect, "available_memory", lambda: None)
    assert default_jobs("cpu") == 4


def test_available_memory_is_read_on_this_machine():
    memory = detect.available_memory()
    assert memory is None or memory > 0


def test_a_process_told_its_thread_share_keeps_to_it(monkeypatch):
    """A pytest worker or a batch job that sets OMP_NUM_THREADS gets no more torch threads than
    that; without it (or with a value that is no count) a job takes its share of the cores."""
    from claimbench.execute import LocalExecutor

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert LocalExecutor(jobs=1).thread_count("cpu", groups=3) == 8
    assert LocalExecutor(jobs=2).thread_count("cpu", groups=3) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert LocalExecutor(jobs=1).thread_count("cpu", groups=3) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert LocalExecutor(jobs=2).thread_count("cpu", groups=3) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert LocalExecutor(jobs=1).thread_count("cpu", groups=3) == 8
    # Asked for explicitly, threads are what was asked; a GPU job leaves torch's default.
    assert LocalExecutor(jobs=1, threads=3).thread_count("cpu", groups=3) == 3
    assert LocalExecutor(jobs=1).thread_count("cuda", groups=3) == 0
