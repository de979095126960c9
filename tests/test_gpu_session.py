"""benchmarks/gpu_session.sh --cpu runs every part of the GPU session end to end at toy size: it
exits 0, writes summary.md with a row per part, and session.jsonl holds one JSON object a line,
each naming its part, with a line from every part. The script is what a GPU user runs first, and
CI runs it the same way: a part that stops working shows here, not on the first GPU."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
PARTS = ("canary", "throughput", "profile", "check", "decode", "summary")


@pytest.mark.slow
def test_the_cpu_session_runs_every_part_and_writes_its_summary(tmp_path):
    out = tmp_path / "session"
    # This interpreter, whichever virtualenv runs the tests.
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT), "--cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    lines = (out / "session.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and r.get("part") in PARTS for r in rows)
    assert {r["part"] for r in rows} == set(PARTS)
    # The shell's line per part: each ran to its end inside its budget.
    ends = {r["part"]: r for r in rows if "rc" in r}
    assert set(ends) == set(PARTS) and all(r["rc"] == 0 and not r.get("timed_out") for r in ends.values())
    assert not [r for r in rows if "traceback" in r], [r["error"] for r in rows if "traceback" in r]
    assert any(r.get("verdict") == "go" for r in rows if r["part"] == "canary")
    assert any(r.get("status") == "not applicable on CPU" for r in rows if r["part"] == "canary")

    summary = (out / "summary.md").read_text()
    for part in PARTS:
        assert any(line.startswith(f"| {part} ") for line in summary.splitlines()), part
    assert "claimbench plan --tier full" in summary
