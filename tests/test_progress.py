"""Progress people see: a count of run-steps (not of finished runs) with an ETA; outside a terminal
a line every few seconds naming the group and its step."""

import io
import re
import time
from dataclasses import replace

import pytest

from claimbench.progress import Progress


def test_outside_a_terminal_a_line_every_interval_with_steps_and_eta():
    out = io.StringIO()  # not a terminal
    p = Progress(total=4 * 100 + 1 * 50, label="training 5 runs in 2 groups", stream=out, every_s=0.0)
    p.update(0, 4, 10, 100, "group 1/2 (adam)")
    time.sleep(0.01)
    p.update(0, 4, 20, 100, "group 1/2 (adam)")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.search(r"80/450 run-steps \(18%\); group 1/2 \(adam\): step 20/100; elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d",
                     lines[-1]), lines[-1]
    assert p.done == 80 and p.eta_s() is not None and p.eta_s() > 0


def test_lines_are_spaced_by_the_interval_and_the_last_is_always_shown():
    out = io.StringIO()
    p = Progress(total=100, label="t", stream=out, every_s=3600.0)
    for step in range(1, 100):
        p.update(0, 1, step, 100, "g")
    assert out.getvalue() == ""  # within the interval: quiet
    p.update(0, 1, 100, 100, "g")
    assert out.getvalue().count("\n") == 1 and "100/100 run-steps (100%)" in out.getvalue()


def test_updates_never_count_twice_or_backwards():
    p = Progress(total=200, label="t", stream=io.StringIO(), every_s=3600.0)
    p.update(0, 2, 50, 100, "g")
    p.update(0, 2, 50, 100, "g")
    p.update(0, 2, 40, 100, "g")  # a late update from before
    assert p.done == 100


@pytest.mark.slow
def test_train_plan_reports_steps_of_all_runs_outside_a_terminal(tmp_path, monkeypatch, capsys):
    """A real plan trained without a terminal prints run-step lines with an ETA."""
    from claimbench.cache import RunStore
    from claimbench.execute import train_plan
    from claimbench.cache.keys import run_key
    from claimbench.plan import plan_runs
    from claimbench.plan.estimate import run_cost
    from claimbench.plan.groups import PlannedRun
    from claimbench.spec.claims import load_claims
    from tests.helpers import REPO

    monkeypatch.setenv("CLAIMBENCH_PROGRESS_EVERY_S", "0")
    spec = load_claims([REPO / "claims" / "beta_init.yaml"])[0]
    store = RunStore(tmp_path / "c")
    plan = plan_runs([spec], "smoke", store, "cpu")
    # One run of the claim, 400 steps instead of its 3,000, keeps the test short.
    c = plan.runs[0].config
    c = replace(c, train=replace(c.train, unit="steps", phases=(300, 100)))
    first = [PlannedRun(run_key(c), c, ["test"], False, *run_cost(c))]
    plan.runs[:] = first
    summary = train_plan(plan, store, device="cpu", group_size=1)
    assert summary.trained
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "run-steps" in line]
    total = first[0].steps
    assert lines and f"{total:,}/{total:,} run-steps (100%)" in lines[-1] and "ETA" in lines[-1]
