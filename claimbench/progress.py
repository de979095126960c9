"""Progress people see while runs train: the steps of all runs, with an ETA from the measured rate.

In:  the run-steps to train (each run's steps, summed) and updates (a group, its runs, its step)
     from wherever groups train: this process, worker processes (through a queue), pytest.
Out: on a terminal, a bar over run-steps with tqdm's rate and ETA; elsewhere (CI, logs, pytest's
     captured output) one line every ``every_s`` seconds (``$CLAIMBENCH_PROGRESS_EVERY_S``, default 30)
     with the run-steps done, the group training and its step, and the ETA.

A group of K stacked runs advances K run-steps per step, so a bar over run-steps moves at the rate
work is done, where a count of finished runs would sit still for hours and then jump.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None,
                 every_s: float | None = None):
        self.total, self.label, self.enabled = max(1, total), label, enabled
        self.stream = stream or sys.stderr
        self.every_s = float(os.environ.get("CLAIMBENCH_PROGRESS_EVERY_S", "30")) if every_s is None else every_s
        self.done = 0
        self._per_group: dict[int, int] = {}
        self._failed: set[int] = set()  # groups given up: a late step update of theirs is ignored
        self._lock = threading.Lock()
        self._started = self._last_line = time.monotonic()
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=label, unit="run-step", unit_scale=True, file=self.stream)

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self._started
        if self.done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) / (self.done / elapsed)

    def update(self, group: int, runs: int, step: int, total_steps: int, what: str) -> None:
        """Group ``group`` (``runs`` stacked runs, ``what`` it is) has done ``step`` of its
        ``total_steps`` steps."""
        with self._lock:
            if group in self._failed:
                return
            reached = min(step, total_steps) * runs
            delta = reached - self._per_group.get(group, 0)
            if delta <= 0:
                return
            self._per_group[group] = reached
            self.done += delta
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.set_postfix_str(what, refresh=False)
                self._bar.update(delta)
                return
            now = time.monotonic()
            if now - self._last_line >= self.every_s or self.done >= self.total:
                self._last_line = now
                self.stream.write(self.line(what, step, total_steps) + "\n")
                self.stream.flush()

    def give_up(self, group: int, runs: int, total_steps: int) -> None:
        """Group ``group`` failed: its steps are neither done nor still to do, so a failed run
        never counts towards 100%."""
        with self._lock:
            self._failed.add(group)
            self.done -= self._per_group.pop(group, 0)
            self.total = max(1, self.total - runs * total_steps)
            if self._bar is not None:
                self._bar.total, self._bar.n = self.total, self.done
                self._bar.refresh()
            elif self.enabled and self.done >= self.total:  # the last line, as update() writes it
                eta = self.eta_s()
                self.stream.write(f"{self.label}: {self.done:,}/{self.total:,} run-steps (100%); the rest failed; "
                                  f"elapsed {_duration(time.monotonic() - self._started)}, "
                                  f"ETA {_duration(eta) if eta is not None else 'unknown'}\n")
                self.stream.flush()

    def line(self, what: str, step: int, total_steps: int) -> str:
        eta = self.eta_s()
        return (f"{self.label}: {self.done:,}/{self.total:,} run-steps ({100 * self.done / self.total:.0f}%); "
                f"{what}: step {step:,}/{total_steps:,}; elapsed {_duration(time.monotonic() - self._started)}, "
                f"ETA {_duration(eta) if eta is not None else 'unknown'}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class QueueReader:
    """Drains (group, step, total) updates that worker processes put on ``queue`` into ``progress``."""

    def __init__(self, queue, progress: Progress, groups: list[tuple[int, str]]):
        self.queue, self.progress, self.groups = queue, progress, groups
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import queue as queue_module

        while not self._stop.is_set():
            try:
                group, step, total = self.queue.get(timeout=0.5)
            except queue_module.Empty:
                continue
            except (EOFError, OSError, BrokenPipeError):
                return  # the manager went away with the pool
            runs, what = self.groups[group]
            self.progress.update(group, runs, step, total, what)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
