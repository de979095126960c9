"""Command line: ``repro run | show | validate | plan | train | verify | report``.

Thin by design: each command parses flags and calls one stage function. Errors the user can fix
(bad YAML, unknown names, missing data, unwritable cache) print one message per problem and exit
with status 2 (bad input) or 1 (a run or check failed), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from repro.cache import CacheError, RunStore, ensure_run, run_key
from repro.config import ConfigError
from repro.data.base import DatasetError
from repro.spec.source import SpecError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# Scalar metrics shown by `repro run`, in the paper's order (Table 1, Table 2).
SCALAR_METRICS = (
    ("train_loss", "train loss"),
    ("test_loss", "test loss"),
    ("test_error", "test error %"),
    ("test_error_top5", "test error top-5 %"),
    ("sparsity_act", "sparsity by activation (<=1e-12) %"),
    ("sparsity_act_1e-4", "sparsity by activation (<=1e-4) %"),
    ("sparsity_gamma", "sparsity by |gamma| (<1e-3) %"),
    ("sparsity_gamma_1e-2", "sparsity by |gamma| (<1e-2) %"),
    ("pruned_test_error", "test error after zeroing |gamma|<1e-3 %"),
    ("pruned_test_error_top5", "top-5 error after zeroing %"),
    ("pruned_features", "features pruned"),
    ("conv_params_pruned_pct", "conv parameters pruned %"),
    ("dense_params", "parameters (dense)"),
    ("slim_params", "parameters (slimmed)"),
    ("dense_flops", "FLOPs/image (dense)"),
    ("slim_flops", "FLOPs/image (slimmed)"),
    ("slim_matches_zeroed", "slimmed net == zeroed net"),
    ("steps", "training steps"),
    ("diverged_at", "diverged at step"),
)


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(Path(args.cache_dir) if args.cache_dir else None)


def _data_root(args: argparse.Namespace) -> Path | None:
    return Path(args.data_root) if args.data_root else None


def metrics_table(metrics: dict) -> str:
    from tabulate import tabulate

    rows = [(label, metrics[k]) for k, label in SCALAR_METRICS if k in metrics and metrics[k] is not None]
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
    from repro.spec.runfile import load_run_config
    from repro.train.run import run_and_measure

    config = load_run_config(Path(args.config) if args.config else None, args.set or [])
    store = _store(args)
    key = run_key(config)

    def train(cfg, checkpoint):
        from tqdm import tqdm

        bar = tqdm(total=None, desc=cfg.summary(), unit="step", disable=args.json or not sys.stderr.isatty())

        def on_step(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        try:
            return run_and_measure(cfg, args.device, _data_root(args), on_step=on_step, checkpoint=checkpoint)
        finally:
            bar.close()

    record, trained = ensure_run(config, store, train, key)
    if args.json:
        print(json.dumps({"key": key, "cached": not trained, "config": record.config.to_dict(),
                          "metrics": record.metrics, "provenance": record.provenance}, indent=1, sort_keys=True))
    else:
        print(f"run {key[:12]}  {config.summary()}  ({'trained now' if trained else 'from cache'})")
        print(metrics_table(record.metrics))
    return EXIT_FAILED if record.diverged else 0


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    matches = [k for k in store.keys() if k.startswith(args.key)]
    if len(matches) != 1:
        print(f"error: {'no' if not matches else 'ambiguous'} cached run matches {args.key!r} in {store.root}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    record = store.get(matches[0])
    if record is None:
        print(f"error: cached run {matches[0]} was damaged and has been moved aside", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"key": matches[0], "config": record.config.to_dict(), "metrics": record.metrics,
                          "provenance": record.provenance}, indent=1, sort_keys=True))
    else:
        print(f"run {matches[0]}\n{record.config.summary()}\n")
        print(json.dumps(record.config.to_dict(), indent=1, sort_keys=True))
        print(metrics_table(record.metrics))
        print("\nprovenance: " + ", ".join(f"{k}={v}" for k, v in sorted(record.provenance.items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repro", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=os.environ.get("REPRO_CACHE"), help="cache root (env REPRO_CACHE)")
    common.add_argument("--data-root", default=os.environ.get("REPRO_DATA"), help="dataset root (env REPRO_DATA)")
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

    from repro import claims_cli

    claims_cli.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SpecError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept in the cache and unfinished ones resume from their "
              "checkpoints when asked again", file=sys.stderr)
        return 130
    except MemoryError as e:
        print(f"error: out of memory ({e}); try a smaller --group-size or fewer --jobs", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as e:
        # torch.OutOfMemoryError is a RuntimeError; anything else is a bug and keeps its traceback.
        if type(e).__name__ != "OutOfMemoryError":
            raise
        print(f"error: device out of memory ({str(e).splitlines()[0]}); try a smaller --group-size or "
              "fewer --jobs; finished runs are kept", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
