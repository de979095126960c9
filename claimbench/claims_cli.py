"""The claim commands of the CLI: validate, plan, train, verify, report.

Each parses its flags and calls the pipeline's stage functions in order:
load_claims -> plan_runs -> train_plan -> pytest (verdicts) -> render_reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from claimbench.spec.claims import TIERS, ClaimSpec, claim_files, load_claims
from claimbench.spec.folder import FOLDER_FILE
from claimbench.spec.paper import PAPER_FILE
from claimbench.spec.select import select_by_keyword
from claimbench.spec.source import SpecError, SpecProblem

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
    # A folder of paper tables alone is something to validate, plan and report; an empty one is not.
    only_tables = not getattr(args, "claims", None) and any((Path(args.claims_dir) / "tables").glob("*.yaml"))
    if not paths and not only_tables:
        where = ", ".join(getattr(args, "claims", None) or [str(args.claims_dir)])
        raise SpecError([_problem(where, "no claim files (*.yaml) here; nothing to do")])
    return paths


def open_store(args: argparse.Namespace, measure: bool = False):
    """The run cache every command uses: ``--cache-dir`` (or ``$CLAIMBENCH_CACHE``), else the default
    location for the claims folder in use (``claimbench.cache.location``), with the data root and the
    device, so a re-measurement reads the same data a training would. ``measure``: the command
    may measure (it trains or verifies), so stored metrics from other measurement code are
    recomputed from their weights; a reading command (report, plan, show) only marks them stale."""
    from claimbench.cache import RunStore, default_cache_root

    remeasure = None
    if measure:
        from claimbench.runs import remeasure
    root = Path(args.cache_dir) if args.cache_dir else default_cache_root(Path(getattr(args, "claims_dir", CLAIMS_DIR)))
    return RunStore(root, Path(args.data_root) if getattr(args, "data_root", None) else None,
                    getattr(args, "device", "auto"), remeasure=remeasure)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (jobs, group sizes, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _out_folder(args: argparse.Namespace) -> Path:
    """The report folder, checked before anything is trained or rendered."""
    from claimbench.report.output import prepare_output

    protected = [("the claims folder", Path(getattr(args, "claims_dir", None) or CLAIMS_DIR))]
    if hasattr(args, "cache_dir"):
        protected.append(("the run cache", open_store(args).root))
    return prepare_output(args.out if args.out is not None else f"reports/{args.tier}", protected)


def _problem(item: str, message: str) -> SpecProblem:
    return SpecProblem(item, None, "", message)


@dataclass(frozen=True)
class Selection:
    """What a command works on, read once: the claim files, their claims narrowed by ``-k``, and
    the paper tables (only when no claim selection narrows the run)."""

    paths: tuple[Path, ...]
    specs: tuple[ClaimSpec, ...]
    tables: tuple = ()


def narrow(args: argparse.Namespace, specs: list[ClaimSpec]) -> list[ClaimSpec]:
    """``specs`` narrowed by ``-k`` as pytest narrows them. A selection that matches nothing is
    an error (exit 2), so a typo never writes an empty report."""
    expr = getattr(args, "k", None)
    if expr:
        specs = select_by_keyword(specs, expr, getattr(args, "tier", "smoke"))
        if not specs:
            raise SpecError([_problem("-k", f"no claim matches {expr!r}; nothing was written")])
    if getattr(args, "gated_only", False):
        specs = gated(specs, getattr(args, "tier", "smoke"))
    return list(specs)


def gated(specs, tier: str) -> list[ClaimSpec]:
    """The claims whose checks at ``tier`` gate CI (``TierSpec.gates_ci``)."""
    return [s for s in specs if s.tier(tier).gates_ci]


def load_selection(args: argparse.Namespace) -> Selection:
    paths = _claim_paths(args)
    return Selection(tuple(paths), tuple(narrow(args, load_claims(paths))), tuple(select_tables(args)))


def select_claims(args: argparse.Namespace) -> list[ClaimSpec]:
    """The claims named on the command line, narrowed by ``-k``."""
    return list(load_selection(args).specs)


def select_tables(args: argparse.Namespace) -> list:
    """Paper-table specs (claims/tables/*.yaml), when no claim selection narrows the run."""
    from claimbench.spec.table_folder import load_tables, table_files

    if getattr(args, "claims", None) or getattr(args, "k", None) or getattr(args, "gated_only", False):
        return []
    return load_tables(table_files(Path(args.claims_dir) / "tables"))


def cmd_validate(args: argparse.Namespace) -> int:
    return validate(args)[0]


def validate(args: argparse.Namespace) -> tuple[int, Selection | None]:
    """Read and check every claim and table file once, printing each problem; the status (0 or 2)
    and, when valid, what was read (not yet narrowed by ``-k``)."""
    paths = _claim_paths(args)
    problems = []
    specs: list[ClaimSpec] = []
    tables: list = []
    try:
        specs = load_claims(paths)  # every file's problems, then duplicated ids across files
    except SpecError as e:
        problems = e.problems
    else:
        for warning in source_warnings(specs):
            print(f"warning: {warning}", file=sys.stderr)
    table_problems, n_tables = [], 0
    try:
        tables = select_tables(args)
        n_tables = len(tables)
    except SpecError as e:
        table_problems = e.problems
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    # A broken paper description or plug-in list (claimbench.yaml) invalidates every claim of its folder.
    bad_files = len(paths) if any(Path(p.file).name in (PAPER_FILE, FOLDER_FILE) for p in problems) \
        else len({p.file for p in problems})
    for folder in sorted({p.parent for p in paths if not (p.parent / PAPER_FILE).is_file()}):
        print(f"note: {folder} has no {PAPER_FILE}: pytest collects its claims only when the files are named, "
              f"`source.paper` is unchecked and reports are untitled (see claims/README.md, 'Your own claims')")
    print(f"{len(paths) - bad_files} of {len(paths)} claim files valid")
    for p in table_problems:
        print(f"error: {p}", file=sys.stderr)
    if n_tables or table_problems:
        print(f"{n_tables} table files valid" if n_tables else f"table files invalid ({len(table_problems)} problems)")
    if problems or table_problems:
        return 2, None
    selection = Selection(tuple(paths), tuple(specs), tuple(tables))
    if getattr(args, "against_paper", False):
        return _against_paper(specs), selection
    return 0, selection


def source_warnings(specs: list[ClaimSpec]) -> list[str]:
    """Where a cited document's text copy is on this machine, what `where:` names that it lacks."""
    from claimbench.spec.paper import find_paper
    from claimbench.spec.source import display_path

    papers = {folder: find_paper(folder) for folder in {s.path.parent for s in specs}}
    warnings = []
    for s in specs:
        paper = papers[s.path.parent]
        doc = paper.documents.get(s.source.get("paper", "")) if paper else None
        for citation in (doc.absent_citations(s.source.get("where", "")) or []) if doc else []:
            warnings.append(f"{display_path(s.path)}: source.where: no caption of {citation} in the text of "
                            f"{doc.id} ({doc.text_path()})")
    return warnings



def _against_paper(specs: list[ClaimSpec]) -> int:
    from claimbench.check.oracle import check_against_paper

    findings = [f for s in specs for f in check_against_paper(s)]
    for f in findings:
        print(f"{'error' if f.fatal else 'note'}: {f}", file=sys.stderr if f.fatal else sys.stdout)
    checks = sum(f.fatal for f in findings if f.about == "check")
    scope = sum(f.fatal for f in findings if f.about != "check")
    print(f"against the paper's numbers: {checks} check(s) the paper itself would not pass or that cannot fail; "
          f"{scope} scope problem(s) (rows against a statement or left out without a reason, stale exceptions, "
          "statements that cannot fail)")
    return 2 if checks or scope else 0


def _plan(args: argparse.Namespace, selection: Selection | None = None, device: str | None = None,
          measure: bool = False):
    """The plan of the selection (read now when not given) and the store it was planned against.
    ``device``: the device training will use (``machine.training_device``); without it the plan
    takes the one asked for, else the one nvidia-smi sees (planning needs no torch)."""
    from claimbench.plan import plan_runs

    selection = selection or load_selection(args)
    store = open_store(args, measure)
    device = device or (None if args.device == "auto" else args.device)
    return plan_runs(list(selection.specs), args.tier, store, device, tables=list(selection.tables)), store


def cmd_plan(args: argparse.Namespace) -> int:
    from claimbench.machine.peaks import parse_peak_tflops
    from claimbench.machine.target import estimate_target

    if args.peak_tflops is not None:
        try:
            parse_peak_tflops(args.peak_tflops)  # a typo stops here, before anything is planned
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    plan, _ = _plan(args)
    # The estimate's device: this machine's, a named GPU, or (full tier, no GPU here) an H100.
    plan.target = estimate_target(args.tier, plan.device, args.gpu, args.peak_tflops)
    print_plan(plan, as_json=args.json, group_size=args.group_size)
    return 0


def print_plan(plan, as_json: bool = False, group_size: int | None = None) -> None:
    from tabulate import tabulate

    from claimbench.plan import format_duration, parts_table

    if as_json:
        print(json.dumps(plan.to_dict(), indent=1))
        return

    def duration(seconds: float | None) -> str:
        return "-" if seconds is None else format_duration(seconds)

    rows = [(r.key[:12], r.config.summary(), "yes" if r.cached else "no", f"{r.steps:,}",
             f"{r.flops / 1e12:,.1f}", duration(plan.model_seconds(r.steps, r.flops, r.config.train.precision)),
             ", ".join(r.claims + ([f"{len(r.cells)} table cells"] if r.cells else []))) for r in plan.runs]
    print(tabulate(rows, headers=("key", "run", "cached", "steps", "TFLOP", "modelled", "claims")))
    for cid, why in sorted(plan.claims_not_run.items()):
        print(f"not run at tier {plan.tier}: {cid}: {why}")
    total_flops = sum(r.flops for r in plan.missing)
    groups = plan.group_estimates(group_size)
    print("\n" + tabulate([(e.label, e.size, f"{e.steps:,}", duration(e.seconds), "measured" if e.measured
                            else "modelled") for e in groups], headers=("group", "runs", "steps", "est.", "source")))
    print("\n" + parts_table(plan, group_size=group_size))
    total = plan.estimate(group_size=group_size)
    said = "no time estimate" if total.seconds is None else f"about {format_duration(total.seconds)}"
    print(f"\n{len(plan.runs)} runs, {len(plan.runs) - len(plan.missing)} cached; to train: {len(plan.missing)} runs "
          f"in {len(groups)} groups, {total_flops / 1e15:,.2f} PFLOP, {said} on {plan.target.name} "
          f"({total.source}, at each run's precision, one group at a time)")


def cmd_train(args: argparse.Namespace, planned=None, device: str | None = None,
              selection: Selection | None = None) -> int:
    """Train what the plan lacks and compute the simulations the claims name. ``planned``:
    (plan, store) and ``selection`` when the caller has read and planned already."""
    from claimbench.execute import train_plan
    from claimbench.machine.training import training_device
    from claimbench.runs import ensure_simulations

    device = device or training_device(args.device)
    default_jobs_for(args, device)
    selection = selection or load_selection(args)
    plan, store = planned or _plan(args, selection, device, measure=True)
    simulated = ensure_simulations(selection.specs, args.tier, store)
    if simulated:
        print(f"simulated {simulated} low-gradient configurations")
    refreshed = refresh_metrics(store, [r.key for r in plan.runs if r.cached])
    if refreshed:
        print(f"recomputed the metrics of {refreshed} cached runs measured by older code (from their weights)")
    data_root = Path(args.data_root) if args.data_root else None
    summary = train_plan(plan, store, args.jobs, device, data_root, group_size=args.group_size,
                         executor=_executor(args))
    print(f"trained {len(summary.trained)}, cached {len(summary.reused)}, failed {len(summary.failed)}")
    if summary.blocked:
        print(f"error: {summary.blocked}", file=sys.stderr)
    for key, msg in summary.failed.items():
        print(f"error: run {key[:12]} failed: {msg}", file=sys.stderr)
    return 1 if summary.failed else 0


def refresh_metrics(store, keys: list[str]) -> int:
    """Bring the metrics of cached runs up to date with the measurement code (a store that may
    measure does it on read); how many were recomputed."""
    return sum(1 for key in keys if (record := store.get(key)) is not None and record.metrics_recomputed)


def default_jobs_for(args: argparse.Namespace, device: str) -> None:
    """``args.jobs`` as given, else this machine's default (``claimbench.plan.groups.default_jobs``), said
    once so a user sees what ran in parallel and how to change it."""
    if args.jobs is None:
        from claimbench.plan.groups import default_jobs

        args.jobs = default_jobs(device)
        print(f"-j {args.jobs}: {'one job per core, as memory allows' if not device.startswith('cuda') else 'one GPU'} "
              f"(the default; -j N sets it)")


def _executor(args: argparse.Namespace):
    from claimbench.execute import LocalExecutor, RayExecutor

    return RayExecutor(args.address) if args.executor == "ray" else LocalExecutor(args.jobs)


def cmd_report(args: argparse.Namespace, selection: Selection | None = None) -> int:
    return report(args, selection)[0]


def report(args: argparse.Namespace, selection: Selection | None = None) -> tuple[int, list]:
    """Render the reports; (status, verdicts)."""
    from claimbench.report import render_reports
    from claimbench.report.output import OutputRefused

    try:
        out = _out_folder(args)
    except OutputRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2, []
    store = open_store(args)
    if selection is None:
        selection, store = _selection_for_reading(args, store)
    from claimbench.report.markdown import tally
    from claimbench.report.paper_numbers import paper_to_reproduce

    verdicts = render_reports(list(selection.specs), args.tier, store, out, tables=list(selection.tables))
    unverified = sum(1 for v in verdicts if v.unverified_note())
    # In the pages' words: claims about one's own experiment hold or do not, nothing is reproduced.
    print(f"wrote {out}/index.md: " + tally(verdicts, paper_to_reproduce(list(selection.specs), selection.tables))
          + (f" ({unverified} of them on unverified runs: numbers not measured here, marked ⚠️)" if unverified else ""))
    return 0, verdicts


def unverified_verdicts(verdicts: list) -> int:
    """The claims whose verdict rests on numbers not measured here and that are not already failing.
    ``verify`` does not succeed on them unless the user accepts unverified inputs."""
    from claimbench.check.verdict import REPRODUCED

    return sum(1 for v in verdicts if v.status == REPRODUCED and v.unverified_note())


def _selection_for_reading(args: argparse.Namespace, store) -> tuple[Selection, object]:  # noqa: ANN001
    """The selection, and the store to read it from. Where the claims name plug-ins that are not
    installed here but whose runs the cache holds, they are read from what the runs recorded
    (``claimbench.report.stored``): a report needs the numbers, not the plug-ins' code."""
    try:
        return load_selection(args), store
    except SpecError:
        from claimbench.report.stored import read_without_plugins

        reading = read_without_plugins(store)
        if reading is None:
            raise
    names = ", ".join(f"{p.kind} {p.name} ({p.entry_point}, {p.distribution} {p.version})" for p in reading.plugins)
    print(f"note: not installed here, read from the runs they trained: {names}", file=sys.stderr)
    if reading.several_versions:
        print(f"note: {reading.several_versions} configs were trained by more than one version of a plug-in's code; "
              "the newest run of each is read (install the plug-in to read the runs of its current code)",
              file=sys.stderr)
    return load_selection(args), reading.store


def cmd_verify(args: argparse.Namespace) -> int:
    """validate + plan + train + pytest + report."""
    from claimbench.report.output import OutputRefused

    try:
        if args.dry_run:
            args.out = str(_out_folder(argparse.Namespace(**{**vars(args), "tier": f"{args.tier}-dry-run"})))
        else:
            _out_folder(args)
    except OutputRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    requested_tier = args.tier
    from claimbench.machine.training import training_device

    device = training_device(args.device)  # a GPU torch cannot use stops here, before any work
    default_jobs_for(args, device)
    if args.tier == "full" and device == "cpu" and not args.force and not args.dry_run:
        print(NO_GPU_BANNER, file=sys.stderr)
        args.tier = "smoke"
    status, loaded = validate(args)
    if status:
        return status
    # Read once: the same claims and tables are planned, trained, checked and reported.
    selection = Selection(loaded.paths, tuple(narrow(args, list(loaded.specs))),
                          () if getattr(args, "claims", None) or args.k else loaded.tables)
    store = open_store(args, measure=True)
    if args.dry_run:
        from claimbench.dry_run import default_steps, dry_run

        return dry_run(list(selection.specs), list(selection.paths), args.tier, store,
                       args.steps or default_steps(device), _executor(args),
                       device, Path(args.data_root) if args.data_root else None, args.group_size, args.k,
                       Path(args.out) if args.out else None, tables=list(selection.tables))
    planned = _plan(args, selection, device, measure=True)
    if args.tier == "full" and not gpu_check_first(device, store.root, [r.config for r in planned[0].missing]):
        return 1
    print_plan(planned[0])
    if args.tier != requested_tier:
        print(f"note: running the SMOKE tier, not the {requested_tier} tier: no CUDA GPU on this machine "
              "(see above; --force runs it anyway)", file=sys.stderr)
    train_status = cmd_train(args, planned, device, selection)
    import pytest

    from claimbench.isolation import isolated_pytest_args

    # `-p claimbench.pytest_plugin`: a no-op where the entry point loaded it, needed where plugin autoload is off.
    pytest_args = [str(p) for p in selection.paths] + ["-p", "claimbench.pytest_plugin", "--tier", args.tier,
                                                      "-p", "no:cacheprovider", "-q",
                                                      "--no-train", *isolated_pytest_args()]
    # The cache this command planned and trained into, whatever pytest's root folder is.
    pytest_args += ["--claimbench-cache", str(store.root)]
    if args.k:
        pytest_args += ["-k", args.k]
    test_status = pytest.main(pytest_args)
    _, verdicts = report(args, selection)
    trusted = unverified_verdicts(verdicts)
    if trusted:
        from claimbench.report.paper_numbers import paper_to_reproduce

        passed = "reproduced" if paper_to_reproduce(list(selection.specs), selection.tables) else "holding"
        print(f"{'note' if args.allow_unverified else 'error'}: {trusted} claim(s) {passed} only on unverified runs "
              "(imported without re-measuring, or found in a cache this user did not train): "
              + ("accepted (--allow-unverified)" if args.allow_unverified else
                 "`claimbench cache verify` re-measures what has weights and data; --allow-unverified accepts them"),
              file=sys.stderr)
    return int(test_status) or train_status or (1 if trusted and not args.allow_unverified else 0)


def cmd_gpu_check(args: argparse.Namespace, device: str | None = None) -> int:
    """Train every kind of group the tier plans a few dozen steps, fast path against plain loop,
    switch off what disagrees on this machine, write the report (``claimbench.gpu_check``)."""
    from claimbench.gpu_check import run_gpu_check
    from claimbench.machine.training import training_device

    device = device or training_device(args.device)
    if getattr(args, "self_test", False):
        from claimbench.gpu_check.selftest import run_self_test

        return 0 if run_self_test(device).ok else 1
    # Every kind of the whole tier (claims and tables), whatever -k narrows elsewhere.
    whole = argparse.Namespace(**{**vars(args), "k": None, "claims": None, "tier": args.tier})
    plan, store = _plan(whole, device=device)
    quick = None if args.size == "auto" else args.size == "quick"
    run_gpu_check([r.config for r in plan.runs], store.root, device=device, steps=args.steps,
                  max_kinds=args.max_kinds, quick=quick, out=Path(args.out), tier=args.tier)
    return 0


def gpu_check_first(device: str, cache_root: Path, configs: list) -> bool:
    """Before the full tier: check the kinds of group ``configs`` (the runs it will train) form
    that the record under the cache root lacks for this machine, driver, torch and code (``claimbench
    gpu-check`` for those kinds only); False (say why) when the check could not run."""
    from claimbench import gpu_check

    kinds = [c.kind for c in gpu_check.kinds_of(gpu_check.own_loop(configs))]
    done, todo = gpu_check.split_by_record(kinds, cache_root, device)
    if done:
        print(f"gpu-check: {'' if todo else 'not run again: '}already checked on this machine, driver, torch and "
              f"code ({cache_root / gpu_check.RECORD_FILE}): {'; '.join(done)}")
    if not todo:
        return True
    print(f"gpu-check: checking first (minutes): {'; '.join(todo)}")
    try:
        gpu_check.run_gpu_check(configs, cache_root, device=device, kinds=todo, tier="full")
    except Exception as e:  # noqa: BLE001  (the long run does not start on a check that broke)
        print(f"error: gpu-check failed ({type(e).__name__}: {e}); the full tier was not started. "
              "Run `claimbench gpu-check` to see it.", file=sys.stderr)
        return False
    return True


NO_GPU_BANNER = ("=" * 78 + "\nNO CUDA GPU FOUND: the paper-scale tier would take CPU-months.\n"
                 "Running the SMOKE tier (small-scale analogs on embedded data) instead.\n"
                 "Use --force to run the full tier on this machine anyway.\n" + "=" * 78)


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    sel = argparse.ArgumentParser(add_help=False)
    sel.add_argument("claims", nargs="*", help="claim files, directories or ids (default: all of claims/)")
    sel.add_argument("--claims-dir", default=str(CLAIMS_DIR), help="where claim files live (default: claims/)")
    sel.add_argument("--allow-plugins", action="store_true",
                     help="import the plug-in modules the claims folder's claimbench.yaml names (runs their code; "
                          "env CLAIMBENCH_ALLOW_PLUGINS=1)")
    sel.add_argument("-k", metavar="EXPR", help="select claims as pytest -k does (substrings of id, file name, tier; not/and/or/parentheses)")
    tier = argparse.ArgumentParser(add_help=False)
    tier.add_argument("--tier", choices=TIERS, default="smoke")

    p = sub.add_parser("validate", parents=[sel], help="check claim files without running anything (exit 2 if invalid)")
    p.add_argument("--against-paper", action="store_true",
                   help="also evaluate every full-tier check on the claim's own paper numbers (noise model: "
                        "claims/README.md); exit 2 on a check the paper fails or one that cannot fail")
    p.set_defaults(func=cmd_validate)

    train_opts = argparse.ArgumentParser(add_help=False)
    train_opts.add_argument("-j", "--jobs", type=positive_int, default=None,
                            help="groups trained in parallel (default: 1 on a GPU; on a CPU one per core, as many as "
                                 "the available memory holds at 1 GiB each)")
    train_opts.add_argument("--group-size", type=positive_int, default=None,
                            help="runs fused into one stacked network (default: 16 on CUDA; on CPU 4 with -j 1, else 1)")
    train_opts.add_argument("--executor", choices=("local", "ray"), default="local",
                            help="local processes (default) or tasks on a Ray cluster")
    train_opts.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")

    p = sub.add_parser("plan", parents=[common, sel, tier], help="list the deduplicated runs the claims need")
    p.add_argument("--json", action="store_true")
    p.add_argument("--group-size", type=positive_int, default=None, help="runs per fused group (default: as train)")
    p.add_argument("--gpu", metavar="NAME", default=None,
                   help="estimate for this GPU (H100, H100 PCIe, H200, A100, L40S, A10, RTX 4090, V100, T4; "
                        "default: this machine's, or H100 SXM for the full tier on a machine without one)")
    p.add_argument("--peak-tflops", metavar="FP32[,TF32]", default=None,
                   help="the GPU's dense peak TFLOP/s, for one not in claimbench/machine/peaks.py (or to override it)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train", parents=[common, sel, tier, train_opts], help="train the missing runs of the plan")
    p.add_argument("--gated-only", action="store_true",
                   help="only the runs of the claims that gate CI at the tier (not those kept out of the gate with "
                        "gate: false): what make test trains; make smoke trains all")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", parents=[common, sel, tier], help="render reports/<tier>/ from the cache alone")
    p.add_argument("--out", help="output folder (default reports/<tier>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("verify", parents=[common, sel, tier, train_opts], help="validate + plan + train + pytest + report")
    p.add_argument("--dry-run", action="store_true",
                   help="train every run only --steps steps in a separate cache, check, report into "
                        "reports/<tier>-dry-run/ and estimate the real tier's time on this machine")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps per run of a dry run (default 20 on a GPU, leaving steady steps after the graph "
                        "warm-ups and captures; 5 on a CPU)")
    p.add_argument("--out", help="report folder (default reports/<tier>)")
    p.add_argument("--force", action="store_true", help="run the full tier even without a GPU")
    p.add_argument("--allow-unverified", action="store_true",
                   help="exit 0 even when a claim is reproduced only on runs not measured here (imported "
                        "unverified, or found in a cache this user did not train)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("gpu-check", parents=[common],
                       help="minutes: prove the fast training path (stacked groups, fused kernels, CUDA graphs, "
                            "resume) against the plain loop on this machine; switch off what disagrees")
    p.add_argument("--claims-dir", default=str(CLAIMS_DIR), help="where claim files live (default: claims/)")
    p.add_argument("--allow-plugins", action="store_true",
                   help="import the plug-in modules the claims folder's claimbench.yaml names (runs their code)")
    p.add_argument("--tier", choices=TIERS, default="full", help="whose kinds of group to check (default full)")
    p.add_argument("--max-kinds", type=positive_int, default=None,
                   help="check at most N kinds of group, one of each data family first (default: all)")
    p.add_argument("--steps", type=positive_int, default=None, help="steps per path (default 32 on a GPU, 10 on a CPU)")
    p.add_argument("--size", choices=("auto", "quick", "real"), default="auto",
                   help="quick: shrunk networks (the CPU default); real: the groups' real size (the GPU default)")
    p.add_argument("--out", default="reports/gpu-check.md", help="report file (default reports/gpu-check.md)")
    p.add_argument("--self-test", action="store_true",
                   help="instead: inject each kind of fault the check exists for into the fast path and show it "
                        "caught, a line per fault (exit 1 if one is missed; about a minute on a CPU)")
    p.set_defaults(func=cmd_gpu_check)
