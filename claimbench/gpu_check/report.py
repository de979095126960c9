"""gpu-check's markdown report.

In:  a ``CheckResult`` and the tier's runs.
Out: the report's text: features per kind of group (with the worst ratio and where), flaky
     findings, the tolerance, steady step times, the group size chosen per kind and why, and the
     tier's estimate at measured rates.
"""

from __future__ import annotations

import math

from claimbench.config import RunConfig
from claimbench.gpu_check.judge import FLOOR_ULPS, SAFETY, UNIT_ROUNDOFF
from claimbench.gpu_check.kinds import FEATURE_TEXT, kind_of
from claimbench.machine.peaks import DEFAULT_GPU, match_gpu
from claimbench.machine.target import Target
from claimbench.plan import Plan
from claimbench.plan.estimate import by_part, run_cost
from claimbench.plan.groups import PlannedRun, default_group_size

# The groups the tier trains in on a GPU, wherever the check ran.
GPU_GROUP_SIZE = default_group_size("cuda", 1)


def format_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def estimate_rows(result, configs: list[RunConfig]) -> tuple[list[tuple], str]:
    """Per part of the tier: its hours with the measured rate of each kind of group where the
    check measured it at real scale (FLOPs of each group over the measured FLOP/s of its kind),
    else modelled (the plan's share of the peak for an H100 SXM, or this GPU). The sums are the
    plan's (``Plan.group_estimates`` given the measured rates, ``by_part``); the wording of the
    source column is this report's: how many of a part's groups were measured."""
    peak = match_gpu(result.device["device"]) if result.device["device"] != result.device["machine"] else None
    device = peak or match_gpu(DEFAULT_GPU)
    rate = {}
    if not result.quick:
        for r in result.results:
            if r.fast_step_s and r.fast_step_s > 0:
                rate[r.kind] = r.flops_per_step / r.fast_step_s
    runs = [PlannedRun("", c, steps=run_cost(c)[0], flops=run_cost(c)[1]) for c in configs]
    plan = Plan("", runs, "cuda", target=Target("cuda", device.name, device, peak is not None))
    modelled = by_part(plan.group_estimates(GPU_GROUP_SIZE, only_missing=False))
    estimated = by_part(plan.group_estimates(GPU_GROUP_SIZE, only_missing=False,
                                             rate_of=lambda group: rate.get(kind_of(group))))
    parts = {name: (sum(g.size for g in groups), sum(g.flops for g in groups),
                    sum(g.seconds or 0.0 for g in modelled[name]), sum(g.seconds or 0.0 for g in groups),
                    sum(int(g.measured) for g in groups), len(groups))
             for name, groups in estimated.items()}
    rows = []
    for name in [*parts, "total"]:
        sel = list(parts.values()) if name == "total" else [parts[name]]
        n, flops, model, est, measured, groups = (sum(x[i] for x in sel) for i in range(6))
        source = ("measured" if measured == groups else "modelled" if measured == 0
                  else f"{measured} of {groups} groups measured")
        rows.append((name, int(n), f"{flops / 1e15:,.0f}", f"{model / 3600:,.1f}", f"{est / 3600:,.1f}", source))
    where = (f"{device.name} (this machine)" if peak else f"{device.name} (modelled: not this machine)")
    if result.quick:
        where += "; this run's step times are of shrunk networks and are not used"
    return rows, where


def render(result, configs: list[RunConfig]) -> str:
    """The report of ``result`` (a ``CheckResult``)."""
    from tabulate import tabulate

    from claimbench.gpu_check.kinds import CPU_BATCH, CPU_FC, CPU_RUNS, CPU_SIDE, CPU_WIDTH

    d = result.device
    lines = ["# gpu-check: the fast training path on this machine", ""]
    if result.quick:
        lines += ["> **CPU run** (no CUDA device): networks shrunk (width "
                  f"{CPU_WIDTH:g}, fc layers at most {CPU_FC} wide, images at most {CPU_SIDE}x{CPU_SIDE}, batch {CPU_BATCH}, at most {CPU_RUNS} runs per group); graphs: not applicable. "
                  "Nothing here says how a GPU behaves.", ""]
    lines += [f"- device: {d['device']}", f"- driver: {d['driver']}", f"- CUDA: {d['cuda']}", f"- cuDNN: {d['cudnn']}",
              f"- torch: {d['torch']} ({d['threads']} threads)", f"- check took {format_s(result.seconds)}",
              f"- record (what training consults): `{result.record}`", "",
              "Each kind of group trained a window of steps twice on fabricated data of its dataset's shape "
              "and classes (no dataset is read; a folder dataset's images are fabricated JPEG files read through the "
              "real image-folder loader): the fast path (stacked, fastest kernels, "
              "CUDA graph with a capture per learning-rate phase, checkpoint and resume mid-phase) and the "
              "plain path (each run alone, eager, per-parameter optimizer steps). A feature that disagrees "
              "or raises is switched off for its kind on this machine.", "",
              "## Features per kind of group", ""]
    rows = []
    for r in result.results:
        f = {x.feature: x.line() for x in r.features}
        rows.append((r.kind.id, r.runs, f["stacked"], f["kernels"], f["graphs"], f["resume"],
                     f"{r.worst:.2g} ({r.worst_at})" if math.isfinite(r.worst) else "-"))
    lines.append(tabulate(rows, headers=("kind", "runs", "stacked", "kernels", "graphs", "resume",
                                         "worst distance / tolerance"), tablefmt="github", disable_numparse=True))
    flaky = [r for r in result.results if r.flaky]
    if flaky:
        lines += ["", "Flaky (a disagreement that did not recur when trained again; nothing switched off):", ""]
        lines += [f"- {r.kind.id}: {r.flaky}" for r in flaky]
    if result.skipped:
        lines += ["", f"Not checked in this run ({len(result.skipped)} kinds, --max-kinds): "
                  + "; ".join(c.kind.id for c in result.skipped) + "."]
    lines += ["", "## Tolerance", "",
              f"Per tensor: {SAFETY:g} x the spread, each plain run's distance from the same run trained in "
              f"float64 from the same initial weights (exact arithmetic for a few dozen steps), at least "
              f"{FLOOR_ULPS:g} u (fp32 {FLOOR_ULPS * UNIT_ROUNDOFF['fp32']:.2g}, tf32 "
              f"{FLOOR_ULPS * UNIT_ROUNDOFF['tf32']:.2g}). Distances: relative L2 per tensor (weights, BatchNorm "
              "running statistics) without each tensor's largest 5% of differences, integer tensors equal, loss curve "
              "by the median relative difference over its points; a run agrees when every one of its tensors and its loss "
              "curve is within its own tolerance. A float32 disagreement is trained again in "
              "float64 and excused only when every tensor of every run is within there (a rounding-triggered discrete "
              "event, not a fault) and, in a group of several runs, some run agreed in float32 (lost precision "
              "strikes every run). A disagreement is trained again before any feature is isolated: one that does not recur "
              "is reported flaky and switches nothing off. Derivation: `claimbench/gpu_check/judge.py`.", ""]
    lines.append(tabulate([(r.kind.id, r.kind.precision, r.tolerance) for r in result.results],
                          headers=("kind", "precision", "tolerance"), tablefmt="github", disable_numparse=True))
    lines += ["", "## Step times (steady state: warm-ups, captures and each process's first step left out)", ""]
    rows = []
    for r in result.results:
        speed = (f"{r.plain_step_s / r.fast_step_s:.2f}x" if r.fast_step_s and r.plain_step_s else "-")
        rows.append((r.kind.id, r.batch_size, r.trained_as, _ms(r.fast_step_s), _ms(r.plain_step_s), speed, r.kernels))
    lines.append(tabulate(rows, headers=("kind", "batch", "trained", "fast ms/step (whole group)",
                                         "plain ms (every run one step)", "fast vs plain", "kernels (fast)"),
                          tablefmt="github", disable_numparse=True))
    lines += ["", "## Group size per kind (runs per group training uses on this machine)", "",
              "On a GPU: each K of the sweep trains K runs stacked on the kept fast path, measuring its peak "
              "memory and steady step; the cap is the largest K whose predicted peak (a line through the "
              "measurements, plus the real dataset) fits in the stated share of the device's memory; the most "
              "run-steps per second wins, a smaller K within a few percent preferred. Training on this GPU groups "
              "each kind by its K (`--group-size` overrides it).", ""]
    lines.append(tabulate([(r.kind.id, r.group_size.k, "-" if r.group_size.cap is None else r.group_size.cap,
                            r.group_size.why) for r in result.results if r.group_size is not None],
                          headers=("kind", "K", "memory cap", "why"), tablefmt="github", disable_numparse=True))
    est, where = estimate_rows(result, configs)
    lines += ["", f"## The tier's estimate ({where})", "",
              "FLOPs of each group over the measured FLOP/s of its kind's fast path where measured at real "
              "scale, else claimbench plan's model (a share of the peak).", ""]
    lines.append(tabulate(est, headers=("part", "runs", "PFLOP", "modelled h", "estimate h", "source"),
                          tablefmt="github", disable_numparse=True))
    off = result.switched_off
    lines += ["", "## Switched off", ""]
    lines += ([f"- {k}: {f} ({FEATURE_TEXT[f]}): {why}" for k, v in off.items() for f, why in v.items()]
              or ["Nothing: every feature agrees with the plain loop."])
    return "\n".join(lines) + "\n"
