"""The claim commands of the CLI: validate, plan, train, verify, report.

Each parses its flags and calls the pipeline's stage functions in order:
load_claims -> plan_runs -> train_plan -> pytest (verdicts) -> render_reports.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

from repro.check.kinds import KINDS
from repro.spec.claims import ClaimSpec, claim_files, load_claims
from repro.spec.source import SpecError

CLAIMS_DIR = Path("claims")


def _claim_paths(args: argparse.Namespace) -> list[Path]:
    paths: list[Path] = []
    for item in getattr(args, "claims", None) or [str(Path(args.claims_dir))]:
        p = Path(item)
        if p.is_dir():
            paths += claim_files(p)
        elif p.exists():
            paths.append(p)
        else:
            # A claim id or file stem.
            matches = [f for f in claim_files(Path(args.claims_dir)) if f.stem == item or f.stem.replace("_", "-") == item]
            if not matches:
                raise SpecError([_problem(item, "no such claim file or id")])
            paths += matches
    return paths


def _problem(item: str, message: str):
    from repro.spec.source import SpecProblem

    return SpecProblem(item, None, "", message)


def select_claims(args: argparse.Namespace) -> list[ClaimSpec]:
    specs = load_claims(_claim_paths(args), KINDS)
    expr = getattr(args, "k", None)
    if expr:
        specs = [s for s in specs if _matches(expr, s)]
    return specs


def _matches(expr: str, spec: ClaimSpec) -> bool:
    """A small subset of pytest's -k: substrings, 'not', 'and', 'or' (left to right)."""
    haystack = f"{spec.id} {spec.path.stem}".lower()
    tokens = expr.lower().split()
    result, op, negate = None, "or", False
    for tok in tokens:
        if tok in ("and", "or"):
            op = tok
        elif tok == "not":
            negate = True
        else:
            hit = (tok in haystack or fnmatch.fnmatch(haystack, tok)) != negate
            negate = False
            result = hit if result is None else (result and hit if op == "and" else result or hit)
    return bool(result)


def cmd_validate(args: argparse.Namespace) -> int:
    paths = _claim_paths(args)
    problems = []
    try:
        load_claims(paths, KINDS)  # every file's problems, then duplicated ids across files
    except SpecError as e:
        problems = e.problems
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    bad_files = len({p.file for p in problems})
    print(f"{len(paths) - bad_files} of {len(paths)} claim files valid")
    return 2 if problems else 0


def _plan(args: argparse.Namespace):
    from repro.cache import RunStore
    from repro.plan import plan_runs

    store = RunStore(Path(args.cache_dir) if args.cache_dir else None)
    device = None if args.device == "auto" else args.device
    return plan_runs(select_claims(args), args.tier, store, device), store


def cmd_plan(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from repro.plan import estimate_seconds, format_duration

    plan, _ = _plan(args)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
        return 0
    rows = [(r.key[:12], r.config.summary(), "yes" if r.cached else "no", f"{r.steps:,}",
             f"{r.flops / 1e12:,.1f}", format_duration(estimate_seconds(r.steps, r.flops, plan.device)),
             ", ".join(r.claims)) for r in plan.runs]
    print(tabulate(rows, headers=("key", "run", "cached", "steps", "TFLOP", "est.", "claims")))
    for cid, why in sorted(plan.claims_not_run.items()):
        print(f"not run at tier {plan.tier}: {cid}: {why}")
    total_flops = sum(r.flops for r in plan.missing)
    groups = plan.group_estimates(args.group_size)
    print("\n" + tabulate([(e.label, e.size, f"{e.steps:,}", format_duration(e.seconds), "measured" if e.measured
                            else "modelled") for e in groups], headers=("group", "runs", "steps", "est.", "source")))
    print(f"\n{len(plan.runs)} runs, {len(plan.runs) - len(plan.missing)} cached; to train: {len(plan.missing)} runs "
          f"in {len(groups)} groups, {total_flops / 1e15:,.2f} PFLOP, about {format_duration(plan.estimate_seconds())} "
          f"on {plan.device} ({plan.estimate_source()}, one group at a time)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from repro.execute import train_plan

    plan, store = _plan(args)
    data_root = Path(args.data_root) if args.data_root else None
    summary = train_plan(plan, store, args.jobs, args.device, data_root, group_size=args.group_size,
                         executor=_executor(args))
    print(f"trained {len(summary.trained)}, cached {len(summary.reused)}, failed {len(summary.failed)}")
    for key, msg in summary.failed.items():
        print(f"error: run {key[:12]} failed: {msg}", file=sys.stderr)
    return 1 if summary.failed else 0


def _executor(args: argparse.Namespace):
    from repro.execute import LocalExecutor, RayExecutor

    return RayExecutor(args.address) if args.executor == "ray" else LocalExecutor(args.jobs)


def cmd_report(args: argparse.Namespace) -> int:
    from repro.cache import RunStore
    from repro.report import render_reports

    store = RunStore(Path(args.cache_dir) if args.cache_dir else None)
    specs = select_claims(args)
    out = Path(args.out or f"reports/{args.tier}")
    verdicts = render_reports(specs, args.tier, store, out)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    print(f"wrote {out}/index.md: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """validate + plan + train + pytest + report."""
    if args.dry_run:
        from repro.cache import RunStore

        if args.steps < 1:
            print(f"error: --steps must be at least 1, got {args.steps}", file=sys.stderr)
            return 2
        from repro.dry_run import dry_run

        status = cmd_validate(args)
        if status:
            return status
        return dry_run(select_claims(args), _claim_paths(args), args.tier, RunStore(Path(args.cache_dir) if args.cache_dir
                       else None), args.steps, _executor(args), args.device, Path(args.data_root) if args.data_root
                       else None, args.group_size, args.k, Path(args.out) if args.out else None)
    import torch

    if args.tier == "full" and not torch.cuda.is_available() and not args.force:
        print("=" * 78 + "\nNO CUDA GPU FOUND: the paper-scale tier would take CPU-months.\n"
              "Running the SMOKE tier (small-scale analogs on embedded data) instead.\n"
              "Use --force to run the full tier on this machine anyway.\n" + "=" * 78, file=sys.stderr)
        args.tier = "smoke"
    status = cmd_validate(args)
    if status:
        return status
    cmd_plan(args)
    train_status = cmd_train(args)
    import pytest

    pytest_args = [str(p) for p in _claim_paths(args)] + ["--tier", args.tier, "-p", "no:cacheprovider", "-q",
                                                       "--no-train", "-o", "addopts="]
    if args.cache_dir:
        pytest_args += ["--repro-cache", args.cache_dir]
    if args.k:
        pytest_args += ["-k", args.k]
    test_status = pytest.main(pytest_args)
    cmd_report(args)
    return int(test_status) or train_status


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    sel = argparse.ArgumentParser(add_help=False)
    sel.add_argument("claims", nargs="*", help="claim files, directories or ids (default: all of claims/)")
    sel.add_argument("--claims-dir", default=str(CLAIMS_DIR), help="where claim files live (default: claims/)")
    sel.add_argument("-k", metavar="EXPR", help="select claims whose id/file matches (substring, not/and/or)")
    tier = argparse.ArgumentParser(add_help=False)
    tier.add_argument("--tier", choices=("smoke", "full"), default="smoke")

    p = sub.add_parser("validate", parents=[sel], help="check claim files without running anything (exit 2 if invalid)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", parents=[common, sel, tier], help="list the deduplicated runs the claims need")
    p.add_argument("--json", action="store_true")
    p.add_argument("--group-size", type=int, default=None, help="runs per fused group (default: as train)")
    p.set_defaults(func=cmd_plan)

    execution = argparse.ArgumentParser(add_help=False)
    execution.add_argument("--executor", choices=("local", "ray"), default="local",
                           help="local processes (default) or tasks on a Ray cluster")
    execution.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")

    p = sub.add_parser("train", parents=[common, sel, tier, execution], help="train the missing runs of the plan")
    p.add_argument("-j", "--jobs", type=int, default=1, help="groups trained in parallel (default 1)")
    p.add_argument("--group-size", type=int, default=None,
                   help="runs fused into one stacked network (default: 16 on CUDA; on CPU 4 with -j 1, else 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", parents=[common, sel, tier], help="render reports/<tier>/ from the cache alone")
    p.add_argument("--out", help="output folder (default reports/<tier>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("verify", parents=[common, sel, tier, execution], help="validate + plan + train + pytest + report")
    p.add_argument("--dry-run", action="store_true",
                   help="train every run only --steps steps in a separate cache, check, report into "
                        "reports/<tier>-dry-run/ and estimate the real tier's time on this machine")
    p.add_argument("--steps", type=int, default=5, help="steps per run of a dry run (default 5)")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--group-size", type=int, default=None, help="runs fused into one stacked network")
    p.add_argument("--out", help="report folder (default reports/<tier>)")
    p.add_argument("--force", action="store_true", help="run the full tier even without a GPU")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_verify)
