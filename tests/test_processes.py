"""Processes end with their parent: a job scheduler's SIGTERM to `claimbench train -j 2`, or a SIGKILL
that no handler sees, leaves no worker training on with nobody to store its result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _workers(pid: int) -> list[int]:
    """The pool's spawned workers (not the resource tracker)."""
    found = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _start_training(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "CLAIMBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "claimbench.cli", "train", "--tier", "smoke", "-k", "amsgrad", "-j", "2",
                             "--group-size", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Two pool workers, and the process that carries their progress updates.
    assert _wait(lambda: len(_workers(proc.pid)) >= 3 or proc.poll() is not None, 120), "workers never started"
    assert proc.poll() is None, proc.communicate()
    workers = _workers(proc.pid)
    time.sleep(2)  # into training
    return proc, workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_sigterm_to_the_parent_ends_its_workers(tmp_path):
    proc, workers = _start_training(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert _wait(lambda: not any(_alive(w) for w in workers), 30), "workers outlived their parent"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_workers_end_when_the_parent_is_killed_outright(tmp_path):
    proc, workers = _start_training(tmp_path)
    proc.kill()  # SIGKILL: no handler in the parent runs
    proc.communicate(timeout=60)
    assert _wait(lambda: not any(_alive(w) for w in workers), 30), "workers outlived their parent"
