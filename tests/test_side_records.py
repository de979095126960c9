"""The JSON records beside the runs in the cache root (step times, gpu-check's findings, stored
simulations) are written one way: whole or not at all, merged under a lock, with the mode the
umask allows, and without touching the umask to learn it."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from claimbench.cache import permissions, side_records
from claimbench.cache.side_records import update_json, write_json
from claimbench.plan.step_times import StepTime, StepTimes

UPDATES = 20


def add_entries(path: str, who: str, n: int = UPDATES) -> None:
    """``n`` merges into the record at ``path``, each adding one entry. The pause between the read
    and the write leaves another writer time to slip in, as a slow disk or a busy machine would."""
    for i in range(n):
        def change(raw, i=i):
            raw = raw if isinstance(raw, dict) else {}
            time.sleep(0.002)
            raw[f"{who}-{i}"] = i
            return raw

        update_json(Path(path), change, indent=1, sort_keys=True)


def test_threads_merging_at_once_lose_no_update(tmp_path):
    path = tmp_path / "record.json"
    threads = [threading.Thread(target=add_entries, args=(str(path), f"t{k}")) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(json.loads(path.read_text())) == 4 * UPDATES


def test_processes_merging_at_once_lose_no_update(tmp_path):
    path = tmp_path / "record.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=add_entries, args=(str(path), f"p{k}")) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert len(json.loads(path.read_text())) == 3 * UPDATES


def test_step_times_of_two_dry_runs_at_once_both_land(tmp_path):
    """Two dry runs saving different kinds of group at the same time keep each other's times."""
    times = StepTimes(tmp_path)

    def save(prefix: str) -> None:
        for i in range(10):
            times.save("cpu test x2", {f"{prefix}{i}": StepTime(0.1, 4, 3, "now")})

    threads = [threading.Thread(target=save, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times.load("cpu test x2")) == 20


def test_a_record_gets_the_umask_mode_and_the_umask_is_never_set(tmp_path, monkeypatch):
    """Reading the umask with os.umask sets it for a moment, for every thread: a file another
    thread creates then gets the wrong mode. The writer reads it from /proc instead."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status here")

    def never(mask):
        raise AssertionError("os.umask was called")

    monkeypatch.setattr(permissions, "_UMASK", None)
    monkeypatch.setattr(os, "umask", never)
    mask = permissions.umask()
    path = write_json(tmp_path / "sub" / "record.json", {"a": 1})
    update_json(path, lambda raw: {**raw, "b": 2})
    monkeypatch.undo()
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask
    assert (tmp_path / "sub" / ".record.json.lock").stat().st_mode & 0o777 == 0o666 & ~mask
    assert json.loads(path.read_text()) == {"a": 1, "b": 2}
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left


def test_a_failed_write_leaves_the_old_record_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "record.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not JSON: fails half-way through
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_an_unreadable_record_is_replaced_by_a_merge(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("{not json")
    assert update_json(path, lambda raw: {"seen": raw}) == {"seen": None}
    assert side_records.read_json_or_none(path) == {"seen": None}
