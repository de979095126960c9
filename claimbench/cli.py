"""Command line: ``claimbench run | show | cache | validate | plan | train | verify | report``.

Thin by design: each command parses flags and calls one stage function. Errors the user can fix
(bad YAML, unknown names, missing data, unwritable or read-only cache, out of memory) print one
message per problem and exit with status 2 (bad input) or 1 (a run or check failed), never a
traceback. Output cut short by the reader (``claimbench show KEY | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from claimbench.cache import CACHE_RULE, CacheError, RunStore, ensure_run, run_key, training_identity
from claimbench.config import ConfigError
from claimbench.data.catalog import DatasetError
from claimbench.machine.training import DeviceError, training_device
from claimbench.spec.claims import TIERS
from claimbench.spec.metrics import PRINTED_METRICS
from claimbench.spec.source import SpecError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _store(args: argparse.Namespace, measure: bool = False) -> RunStore:
    from claimbench.claims_cli import open_store

    return open_store(args, measure)


def _data_root(args: argparse.Namespace) -> Path | None:
    return Path(args.data_root) if args.data_root else None


def metrics_table(metrics: dict, trainer_metrics: list[str] | tuple[str, ...] = ()) -> str:
    """claimbench's printed metrics, then those a registered trainer reported (``trainer_metrics``)."""
    from tabulate import tabulate

    rows = [(label, metrics[k]) for k, label in PRINTED_METRICS if k in metrics and metrics[k] is not None]
    rows += [(f"{k} (trainer)", metrics[k]) for k in trainer_metrics if metrics.get(k) is not None]
    table = tabulate(rows, headers=("metric", "value"), floatfmt=".4g")
    layers = metrics.get("layer_sparsity_gamma")
    if layers:
        names = [f"C{i + 1} ({n})" for i, n in enumerate(metrics.get("layer_sizes", [""] * len(layers)))]
        per_layer = [["|gamma|<1e-3 %", *layers]]
        if metrics.get("layer_sparsity_act"):
            per_layer.append(["activation %", *metrics["layer_sparsity_act"]])
        table += "\n\nper conv layer:\n" + tabulate(per_layer, headers=["", *names], floatfmt=".1f")
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from claimbench.cache.failures import forget_failure, record_failure
    from claimbench.data.catalog import data_shape
    from claimbench.run_failures import RunFailed, plugin_failure
    from claimbench.progress import Progress
    from claimbench.group import run_and_measure
    from claimbench.spec.runfile import load_run_config

    config = load_run_config(Path(args.config) if args.config else None, args.set or [])
    store = _store(args, measure=True)
    key = run_key(config)

    def train(cfg, checkpoint):
        # The progress `claimbench train` shows: a bar on a terminal, else a line every 30 s
        # ($CLAIMBENCH_PROGRESS_EVERY_S), so a long run is never silent.
        total = cfg.total_steps(data_shape(cfg.data)[0])
        shown = Progress(total, f"training run {key[:12]}", enabled=not args.json)

        def on_step(step: int, steps: int) -> None:
            shown.update(0, 1, step, steps, cfg.summary())

        try:
            return run_and_measure(cfg, training_device(args.device), _data_root(args), on_step=on_step,
                                   checkpoint=checkpoint)
        except Exception as e:
            reason = plugin_failure(e, [cfg])
            if reason is None:
                raise
            raise RunFailed(reason) from None
        finally:
            shown.close()

    try:
        record, trained = ensure_run(config, store, train, key)
    except RunFailed as e:
        # A plug-in's fault: one line, and the reason kept for the reports of claims that need it.
        from claimbench.cache.provenance import plugin_provenance

        record_failure(store.root, key, config.summary(), str(e), config.to_dict(), plugin_provenance(config))
        print(f"error: run {key[:12]} failed: {config.summary()}: {e}", file=sys.stderr)
        return EXIT_FAILED
    forget_failure(store.root, key)
    if args.json:
        print(json.dumps({"key": key, "cached": not trained, "metrics_recomputed": record.metrics_recomputed,
                          "config": record.config.to_dict(), "metrics": record.metrics,
                          "provenance": record.provenance, **_origin_fields(record)}, indent=1, sort_keys=True))
    else:
        how = "trained now" if trained else "from cache" + (
            ", metrics recomputed: the measurement code changed" if record.metrics_recomputed else "") + (
            f"; ⚠️ {record.provenance_label}: its numbers were not measured here" if record.provenance_label else "")
        print(f"run {key[:12]}  {config.summary()}  ({how})")
        print(metrics_table(record.metrics, record.trainer_metric_names))
    return EXIT_FAILED if record.diverged else 0


def _origin_fields(record) -> dict:  # noqa: ANN001  (a RunRecord)
    """Where a run's numbers come from, for --json: "local" (trained by this user), "imported" or
    "found" (in a cache this user did not fill), and whether they were measured here."""
    return {"origin": record.origin, "verified": record.verified}


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    matches = [k for k in store.keys() if k.startswith(args.key)]
    if len(matches) != 1:
        print(f"error: {'no' if not matches else 'ambiguous'} cached run matches {args.key!r} in {store.root}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    record = store.get(matches[0])
    if record is None:
        print(f"error: cached run {matches[0][:12]} is damaged (see the warning above) and was not shown",
              file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"key": matches[0], "config": record.config.to_dict(), "metrics": record.metrics,
                          "provenance": record.provenance, **_origin_fields(record)}, indent=1, sort_keys=True))
    else:
        print(f"run {matches[0]}\n{record.config.summary()}\n")
        if record.provenance_label:
            print(f"⚠️ {record.provenance_label}: its numbers were not measured here\n")
        print(json.dumps(record.config.to_dict(), indent=1, sort_keys=True))
        print(metrics_table(record.metrics, record.trainer_metric_names))
        print("\nprovenance: " + ", ".join(f"{k}={v}" for k, v in sorted(record.provenance.items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claimbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=os.environ.get("CLAIMBENCH_CACHE") or None,
                        help=f"run cache root (default: {CACHE_RULE})")
    common.add_argument("--data-root", default=os.environ.get("CLAIMBENCH_DATA"), help="dataset root (env CLAIMBENCH_DATA)")
    common.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", parents=[common], help="train (or load from cache) one run and print its metrics")
    p.add_argument("config", nargs="?", help="run config YAML (sections model/data/optim/train)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.lam=1e-3")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("show", parents=[common], help="print a cached run (key or key prefix)")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    from claimbench import claims_cli

    _add_cache_commands(sub, common)
    claims_cli.add_commands(sub, common)
    return parser


# -- claimbench cache ls | verify | export | import | fingerprint -----------------------------------------

def _selected_keys(args: argparse.Namespace, store: RunStore) -> list[str] | None:
    """Keys of the runs the claim selection (-k, --tier, claim files) needs; None: no selection.
    The one place that couples the cache commands to claim selection."""
    if not (args.k or args.tier or args.claims):
        return None
    from claimbench.claims_cli import select_claims
    from claimbench.plan import plan_runs

    specs = select_claims(args)
    keys: list[str] = []
    for tier in [args.tier] if args.tier else TIERS:
        keys += [r.key for r in plan_runs(specs, tier, store, "cpu").runs]
    return list(dict.fromkeys(keys))


def _origin_label(origin: str, verified: bool) -> str:
    if origin == "found":
        return "not here, unverified"
    return "here" if origin == "local" else "imported" + ("" if verified else ", unverified")


def cmd_cache_ls(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from claimbench.cache.archive import entry_infos

    store = _store(args)
    infos = entry_infos(store)
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=1))
        return 0
    from claimbench.cache import metrics_fingerprint

    rows = [(i.key[:12], i.summary, "yes" if i.weights else "no", f"{i.bytes / 1e6:,.2f}",
             _training_label(i) + " / " + ("this" if i.metrics_fingerprint == metrics_fingerprint() else "other"),
             _origin_label(i.origin, i.verified), i.finished_at, i.problem or "") for i in infos]
    print(tabulate(rows, headers=("key", "run", "weights", "MB", "training / metrics", "trained", "finished",
                                  "problem")))
    other = sum(not i.current for i in infos if i.problem is None)
    other_code = sum(i.current and not i.same_code for i in infos)
    unverified = sum(not i.verified for i in infos)
    print(f"\n{len(infos)} entries in {store.root}"
          + (f"; {other} trained under an older training identity (kept, never served: claimbench cache prune "
             "removes them)" if other else "")
          + (f"; {other_code} trained by other code with this training's semantics (served)" if other_code else "")
          + (f"; {unverified} imported or not trained here, unverified (their numbers are someone else's word; "
             "`claimbench cache verify` re-measures what has weights)" if unverified else ""))
    return 0


def _training_label(info) -> str:  # noqa: ANN001  (an archive.EntryInfo)
    if not info.current:
        return "older identity: " + info.training_fingerprint[:16]
    return "this" if info.same_code else "same semantics, other code"


def cmd_cache_prune(args: argparse.Namespace) -> int:
    from claimbench.cache.archive import entry_infos, prunable, prune_entries

    store = _store(args)
    doomed = prunable(entry_infos(store))
    for info in doomed:
        print(f"{'removing' if args.yes else 'would remove'}: {info.key[:12]} {info.summary} (trained under "
              f"{info.training_fingerprint[:16]}, this claimbench: {training_identity()})")
    if not doomed:
        print(f"nothing to prune in {store.root}: every readable entry is of this claimbench's training identity")
        return 0
    if not args.yes:
        print(f"{len(doomed)} entries would be removed; run again with --yes to remove them")
        return 0
    if not store.writable():
        raise store.read_only_error("pruning")
    removed = prune_entries(store, doomed)
    print(f"removed {len(removed)} entries from {store.root}")
    return 0


def _remeasure():
    """The measurement the cache commands hand to the store to prove imported numbers."""
    from claimbench.runs import remeasure

    return remeasure


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from claimbench.cache.archive import verify_store

    store = _store(args, measure=True)
    result = verify_store(store, _remeasure(), repair=args.repair)
    for key in result.refreshed:
        print(f"recomputed: {key[:12]}: metrics measured by older code, recomputed from its weights")
    for path in result.removed_temporaries:
        print(f"removed {path}: a temporary entry folder left by a writer that did not finish")
    for key, problem in sorted(result.damaged.items()):
        where = f"; moved to {result.moved[key]}" if key in result.moved else ""
        print(f"damaged: {key[:12]}: {problem}{where}", file=sys.stderr)
    for key in result.verified_now:
        print(f"verified: {key[:12]}: imported numbers re-measured from its weights and confirmed")
    for key, why in sorted(result.unverified.items()):
        print(f"unverified: {key[:12]}: imported, {why}")
    print(f"{result.checked - len(result.damaged)} of {result.checked} entries in {store.root} verified (every "
          "checksum, weights loaded)" + (f"; {len(result.unverified)} imported and unverified" if result.unverified
                                         else ""))
    if result.damaged and not args.repair:
        print("claimbench cache verify --repair moves the damaged entries aside (they are trained again when next needed)",
              file=sys.stderr)
    return EXIT_FAILED if result.damaged else 0


def cmd_cache_export(args: argparse.Namespace) -> int:
    from claimbench.cache.archive import export_entries

    out = Path(args.file)
    if not args.file.strip() or out.name in ("", ".", "..") or out.is_dir():
        print(f"error: cache export {args.file!r}: name the archive file to write (e.g. runs.tar.gz), not a folder",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    store = _store(args)
    keys = _selected_keys(args, store)
    try:
        result = export_entries(store, out, keys, weights=not args.no_weights)
    except OSError as e:
        print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    for key, problem in sorted(result.damaged.items()):
        print(f"error: {key[:12]} is damaged and was left out: {problem}", file=sys.stderr)
    if result.missing:
        print(f"warning: {len(result.missing)} of the selected runs are not in the cache and are not in the "
              "archive (train them first: claimbench train)", file=sys.stderr)
    print(f"wrote {out}: {len(result.exported)} runs" + ("" if not args.no_weights else " (without weights)"))
    return EXIT_FAILED if result.damaged or result.missing else 0


def cmd_cache_import(args: argparse.Namespace) -> int:
    from claimbench.cache.archive import import_archive, shown

    store = _store(args)
    try:
        result = import_archive(store, Path(args.file), _remeasure())
    except MemoryError:
        print(f"error: out of memory while importing {args.file}; import it on a machine with more memory",
              file=sys.stderr)
        return EXIT_FAILED
    for what, why in sorted(result.rejected.items()):
        print(f"error: rejected {shown(what)}: {why}", file=sys.stderr)
    for key in result.present:
        print(f"skipped {key[:12]}: the cache already holds this run (an import never replaces an entry)")
    for key, why in sorted(result.unverified.items()):
        print(f"unverified: {key[:12]}: {why}")
    if result.other_code:
        print(f"warning: {len(result.other_code)} runs were trained by other training code (fingerprint "
              f"{shown(str(result.archive_fingerprint))}, this code: {training_identity()}); they are stored but "
              "runs keyed under this code will not use them", file=sys.stderr)
    print(f"imported {len(result.added)} runs into {store.root} ({len(result.verified)} re-measured from their "
          f"weights and confirmed, {len(result.unverified)} unverified; {len(result.present)} already there, "
          f"{len(result.rejected)} rejected)")
    return EXIT_FAILED if result.rejected else 0


def cmd_cache_fingerprint(args: argparse.Namespace) -> int:
    from claimbench.cache import metrics_fingerprint, training_code_fingerprint
    from claimbench.cache.keys import metrics_modules, training_modules

    if args.modules:
        print("\n".join(metrics_modules() if args.metrics else training_modules()))
    elif args.metrics:
        print(metrics_fingerprint())
    else:
        print(training_code_fingerprint() if args.code else training_identity())
    return 0


def _add_cache_commands(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cache", help="list, check, export and import the run cache")
    cache = p.add_subparsers(dest="cache_command", required=True)

    c = cache.add_parser("ls", parents=[common], help="list the cached runs")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cache_ls)

    c = cache.add_parser("verify", parents=[common], help="check every entry in full (checksums, weights); "
                         "re-measure imported entries not yet verified")
    c.add_argument("--repair", action="store_true", help="move damaged entries aside and remove temporary folders "
                   "left by writers that were killed")
    c.set_defaults(func=cmd_cache_verify)

    c = cache.add_parser("prune", parents=[common], help="remove entries trained under an older training "
                         "identity (never served); lists them first")
    c.add_argument("--yes", action="store_true", help="remove them (without it: only list what would go)")
    c.set_defaults(func=cmd_cache_prune)

    c = cache.add_parser("export", parents=[common], help="write cached runs into one archive (.tar or .tar.gz)")
    c.add_argument("file", help="archive to write; compressed when it ends in .gz or .tgz")
    c.add_argument("claims", nargs="*", help="claim files, directories or ids whose runs to export")
    c.add_argument("--claims-dir", default="claims", help="where claim files live (default: claims/)")
    c.add_argument("--allow-plugins", action="store_true",
                   help="import the plug-in modules the claims folder's claimbench.yaml names (runs their code)")
    c.add_argument("-k", metavar="EXPR", help="only the runs of claims matching EXPR")
    c.add_argument("--tier", choices=TIERS, default=None,
                   help="only the runs of this tier (default with a selection: both)")
    c.add_argument("--no-weights", action="store_true",
                   help="leave the weights out (metrics then cannot be recomputed after import)")
    c.set_defaults(func=cmd_cache_export)

    c = cache.add_parser("import", parents=[common], help="check and add the runs of an archive")
    c.add_argument("file")
    c.set_defaults(func=cmd_cache_import)

    c = cache.add_parser("fingerprint", help="print the training identity (claimbench's part of every cache key)")
    c.add_argument("--code", action="store_true", help="print the fingerprint of the training code's text instead "
                   "(provenance: not in keys)")
    c.add_argument("--metrics", action="store_true", help="print the measurement-code fingerprint instead")
    c.add_argument("--modules", action="store_true", help="list the modules the fingerprint covers (derived "
                   "from the import graph of the training loop and the dataset loaders, or of the measurement code)")
    c.set_defaults(func=cmd_cache_fingerprint)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, `kill`): handled like Ctrl-C, so worker processes are
    ended and finished runs kept, instead of the process vanishing and its workers training on."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        status = _run_command(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (`claimbench show KEY | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run_command(args: argparse.Namespace) -> int:
    if getattr(args, "allow_plugins", False):
        from claimbench.spec.folder import ALLOW_ENV

        os.environ[ALLOW_ENV] = "1"  # in the environment, so workers and pytest see the same choice
    try:
        return args.func(args)
    except SpecError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            print("terminated (SIGTERM); worker processes were ended; finished runs are kept in the cache and "
                  "unfinished ones resume from their checkpoints when asked again", file=sys.stderr)
            return 143  # 128 + SIGTERM, what a shell reports for a process ended by it
        print("interrupted; finished runs are kept in the cache and unfinished ones resume from their "
              "checkpoints when asked again", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        from claimbench.run_failures import out_of_memory

        where = out_of_memory(e)
        if where is None:
            raise  # anything else is a bug and keeps its traceback
        print(f"error: {where} out of memory ({(str(e) or type(e).__name__).splitlines()[0]}); "
              f"{_memory_advice(args)}; finished runs are kept", file=sys.stderr)
        return EXIT_FAILED


def _memory_advice(args: argparse.Namespace) -> str:
    """What this command can change to need less memory: only options it has."""
    if hasattr(args, "jobs"):
        return "try a smaller --group-size, fewer --jobs or a smaller batch"
    if args.command == "run":
        return "try a smaller batch (--set train.batch_size=N) or a narrower model (--set model.width=W)"
    return "try it on a machine with more memory"


if __name__ == "__main__":
    sys.exit(main())
