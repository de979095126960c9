"""A dry run of a tier: every selected run trained a few steps through the real code path.

In:  selected ClaimSpecs (and their files), a tier, the real RunStore, a step count, an executor,
     the device and data root.
Out: the dry-run records in ``<cache>/dry-run/steps-N/`` (never in the real cache; trained as the
real cache's ``gpu-check.json`` allows on this machine, as real training is), the claims
checked on them (pytest with the plugin, then the report into ``reports/<tier>-dry-run/`` under
a banner saying these are not results), and a calibrated estimate of the real tier on this
machine: each kind of group's steady-state step time (the median after leaving out the first
step, the CUDA graph warm-ups and each capture: ``claimbench.plan.step_times.unsteady_steps``) x its real steps,
per group, per part of the tier and in total, stored in ``<cache>/step-times.json`` for ``claimbench
plan``. The tier is the one ``claimbench plan`` plans: at the full tier, the claims and the paper's
tables (``tables``).

Each record's provenance carries its group's step stamps (``claimbench.group.train_group``);
``measured_step_times`` turns them into each kind of group's steady-state step time, which
``claimbench plan`` uses. The records live in their own store (``dry_run_store``), under their real
keys, so checks and reports read them as they read real runs while the real cache never sees them.

Exit status: 0 when every run trained and every claim could be checked (whatever the verdicts: a
few steps reproduce nothing), 1 when a run failed or a verdict is an error (a run that does not
produce what the checks read, a diverged run), or pytest itself failed to run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from claimbench.cache import RunStore
from claimbench.execute import LocalExecutor, RayExecutor, train_plan
from claimbench.machine.detect import detected_device, machine_name
from claimbench.plan import Plan, format_duration, parts_table, plan_runs
from claimbench.plan.groups import group_id
from claimbench.plan.step_times import StepTime, StepTimes, steady_step_time
from claimbench.spec.claims import ClaimSpec

# Where a dry run's records go, under the real cache's root (``dry_run_store``).
DRY_RUN_DIR = "dry-run"

# Steps per run on a CPU: no graphs there, so only step 0 is left out of the timing.
DEFAULT_STEPS = 5
# Steps per run that leave a graphed GPU group steady-state steps to time: 3 warm-ups and one
# capture per learning-rate phase (2 in most paper schedules) are left out, 15 remain.
TIMING_STEPS = 20


def default_steps(device: str) -> int:
    """A dry run's steps per run on ``device``: on a GPU enough to time a graphed group's steady
    state (5 would be all warm-ups and captures), on a CPU few."""
    return TIMING_STEPS if str(device).startswith("cuda") else DEFAULT_STEPS


def dry_run_store(store: RunStore, steps: int) -> RunStore:
    """The namespace of N-step dry runs: records under their real keys, never in the real store."""
    return RunStore(store.root / DRY_RUN_DIR / f"steps-{steps}")


def measured_step_times(plan: Plan, store: RunStore) -> dict[str, StepTime]:
    """Steady-state step time per kind of group, from the dry-run records of ``plan`` in ``store``.

    Warm-up steps are left out here, where the times are used, from what the record says ran
    (``claimbench.plan.unsteady_steps``): the first step (allocation, optimizer state, cuDNN
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


BANNER = ("DRY RUN: every run below trained {steps} steps instead of its real schedule. These are not "
          "results: the verdicts only show that the pipeline runs end to end.")


def estimate_table(plan: Plan, machine: str) -> str:
    """The real tier's groups on this machine (size, steps, steady-state seconds per step,
    hours), then per part of the tier and in total, for fp32 and TF32."""
    from tabulate import tabulate

    def hours(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 3600:,.1f}"

    rows = []
    for g, e in zip(plan.groups(only_missing=False), plan.group_estimates(only_missing=False)):
        t = plan.step_times.get(group_id(g[0].config))
        per_step = f"{t.run_step_s * e.size:.4f}" if t else "-"
        rows.append((e.label, e.size, f"{e.steps:,}", per_step, hours(e.seconds),
                     "measured" if e.measured else "modelled"))
    total = plan.estimate(only_missing=False)
    groups = plan.group_estimates(only_missing=False)
    sizes = sorted((e.size for e in groups), reverse=True)
    said = "cannot be judged" if total.seconds is None else (
        f"{total.seconds / 3600:,.1f} hours ({format_duration(total.seconds)})")
    return (tabulate(rows, headers=("group", "runs", "steps", "s/step", "hours", "source")) +
            f"\n\n{parts_table(plan, only_missing=False)}" +
            f"\n\nestimate for the real tier on {machine}: {said} "
            f"for {len(plan.runs)} runs in {len(groups)} groups of sizes {sizes}, one group at a time "
            f"({total.source})")


def dry_run_plan(specs: list[ClaimSpec], tier: str, store: RunStore, device: str, tables: list | tuple = ()) -> Plan:
    """The real tier a dry run trains and estimates: what ``claimbench plan`` plans, tables included."""
    return plan_runs(specs, tier, store, device, tables=list(tables))


def dry_run(specs: list[ClaimSpec], claim_paths: list[Path], tier: str, store: RunStore, steps: int,
            executor: LocalExecutor | RayExecutor, device: str = "auto", data_root: Path | None = None,
            group_size: int | None = None, k: str | None = None, out: Path | None = None,
            progress: bool = True, tables: list | tuple = ()) -> int:
    """``tables``: the paper's tables (at the full tier their runs join the plan, as in ``claimbench plan``)."""
    target = detected_device() if device == "auto" else device
    plan = dry_run_plan(specs, tier, store, target, tables)
    dstore = dry_run_store(store, steps)
    # What gpu-check switched off on this machine is in the real cache's record, not the dry-run
    # store's: a dry run that used it would time (or crash on) a feature the check gave up.
    summary = train_plan(plan, dstore, device=device, data_root=data_root, progress=progress,
                         group_size=group_size, executor=executor, dry_run_steps=steps, check_root=store.root)
    from claimbench.runs import ensure_simulations

    ensure_simulations(specs, tier, dstore)  # exact and cheap: the whole simulation, not a shortened one
    print(f"dry run ({steps} steps per run, cache {dstore.root}): trained {len(summary.trained)}, "
          f"cached {len(summary.reused)}, failed {len(summary.failed)}")
    if summary.blocked:
        print(f"error: {summary.blocked}", file=sys.stderr)
    for key, msg in summary.failed.items():
        print(f"error: run {key[:12]} failed: {msg}", file=sys.stderr)

    machine = machine_name(target)
    times = measured_step_times(plan, dstore)
    if times:
        StepTimes(store.root).save(machine, times)
    plan.step_times = {**plan.step_times, **times}
    untimed = {group_id(g[0].config) for g in plan.groups(only_missing=False)} - set(plan.step_times)
    if untimed and not summary.failed:
        print(f"note: {len(untimed)} kinds of group had no steady-state step to time in {steps} steps per run "
              f"(left out: the first step, and on graphed GPU groups 3 warm-ups and one capture per phase); "
              f"their estimate stays modelled. --steps {TIMING_STEPS} leaves enough.")
    print(estimate_table(plan, machine))

    import pytest

    from claimbench.isolation import isolated_pytest_args

    print(f"\nchecking the claims on the dry runs (verdicts after {steps} steps mean nothing; only errors count):")
    pytest_args = [str(p) for p in claim_paths] + ["--tier", tier, "-p", "no:cacheprovider", "-q", "--no-train",
                                                  "--claimbench-cache", str(dstore.root), *isolated_pytest_args()]
    if k:
        pytest_args += ["-k", k]
    test_status = int(pytest.main(pytest_args))

    from claimbench.report import render_reports

    out = out or Path(f"reports/{tier}-dry-run")
    verdicts = render_reports(specs, tier, dstore, out, banner=BANNER.format(steps=steps))
    errors = [v.claim_id for v in verdicts if v.status == "error"]
    print(f"wrote {out}/index.md (DRY RUN, not results)")
    for cid in errors:
        print(f"error: claim {cid} could not be checked on its dry runs", file=sys.stderr)
    # pytest: 0 all reproduced, 1 some not (expected after a few steps); anything else is a failure.
    return 1 if summary.failed or errors or test_status not in (0, 1) else 0
