"""How long `claimbench verify --tier smoke` takes when everything is cached: the target is at most 5 s.

    .venv/bin/python benchmarks/warm_verify.py                    # the default cache (trains it if cold)
    .venv/bin/python benchmarks/warm_verify.py --cache-dir DIR

A warm verify reads the claims and tables once, plans once, finds every run and simulation in the
cache, runs pytest on the claims and writes the report. Two ways, side by side in one invocation:
into a fresh report folder (every plot drawn) and again into the same folder (plots whose inputs
did not change are copied, as a user's second `make smoke` does). The table gives seconds, the
ratio between the two, and each against the 5 s target. A cold cache is trained first (minutes on
CPU; not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from claimbench.cli import main

TARGET_S = 5.0


def verify(cache: str | None, out: Path) -> tuple[int, float]:
    args = ["verify", "--tier", "smoke", "--out", str(out)] + (["--cache-dir", cache] if cache else [])
    sink = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        status = main(args)
    return status, time.perf_counter() - started


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="run cache (default: the documented default)")
    parser.add_argument("--repeats", type=int, default=2, help="timed verifies per way (the best counts)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("warming the cache (training what is missing; not timed) ...", flush=True)
        status, seconds = verify(a.cache_dir, Path(tmp) / "warm-up")
        print(f"  done in {seconds:.1f} s (exit {status})")
        fresh, reused = [], []
        for i in range(a.repeats):
            fresh.append(verify(a.cache_dir, Path(tmp) / f"fresh-{i}")[1])
            reused.append(verify(a.cache_dir, Path(tmp) / "warm-up")[1])
    best_fresh, best_reused = min(fresh), min(reused)
    print(tabulate([("into a fresh report folder (plots drawn)", f"{best_fresh:.2f}", "1.00", f"{best_fresh / TARGET_S:.2f}"),
                    ("into the previous report (unchanged plots copied)", f"{best_reused:.2f}",
                     f"{best_reused / best_fresh:.2f}", f"{best_reused / TARGET_S:.2f}")],
                   headers=("warm `claimbench verify --tier smoke`", "seconds", "vs fresh", f"vs {TARGET_S:g} s target")))
    print(f"\nwithin the {TARGET_S:g} s target: {'yes' if best_reused <= TARGET_S else 'NO'} "
          f"(best of {a.repeats}; exit status of the warm-up: {status})")


if __name__ == "__main__":
    main_benchmark()
