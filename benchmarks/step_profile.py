"""What one training step of the paper's BasicNet dispatches, on the ``meta`` device (runs anywhere).

    .venv/bin/python benchmarks/step_profile.py
    .venv/bin/python benchmarks/step_profile.py --runs 1 4 16 64 --optimizer sgd

For BasicNet (width 1) on CIFAR-size 32x32 images, batch 40, Adam + L2, groups of K runs: the
device operators one steady-state step dispatches (views excluded), per step and per run-step,
the host-device copies and host syncs per step, and, once per epoch, the copies of the epoch's
data order. On ``meta`` the step goes through the same Python and dispatcher path as on a GPU
without arithmetic; optimizers use their foreach kernels there (nothing is fused on ``meta``),
whose 0-dim step counters are host tensors ("host ops"; fused and capturable kernels keep them on
the GPU), and CUDA graphs are not traced. Then the full tier's training groups as
``claimbench train --tier full`` forms them on a GPU (groups of 16): the claims' runs and the paper
tables' runs, as ``claimbench plan --tier full`` plans them. Ends with the line
``host-device copies per step: K=1 0, K=4 0, K=16 0`` (the measured counts).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from claimbench.runconfig import run_config_from_dict

ROOT = Path(__file__).resolve().parent.parent


def basicnet_group(k: int, optimizer: str) -> list:
    return [run_config_from_dict({"data": {"dataset": "cifar10"},
                                  "optim": {"name": optimizer, "regularizer": "l2", "lam": 1e-4},
                                  "train": {"seed": i}}) for i in range(k)]


def full_tier_groups(group_size: int) -> list[list]:
    """The full tier's training groups, as ``claimbench train --tier full`` forms them (claims and
    paper tables; no torch needed)."""
    from claimbench.cache import RunStore
    from claimbench.plan import plan_runs
    from claimbench.plan.groups import form_groups
    from claimbench.spec.claims import claim_files, load_claims
    from claimbench.spec.table_folder import load_tables, table_files

    specs = load_claims(claim_files(ROOT / "claims"))
    tables = load_tables(table_files(ROOT / "claims" / "tables"))
    with tempfile.TemporaryDirectory() as empty:
        plan = plan_runs(specs, "full", RunStore(Path(empty)), device="cuda", tables=tables)
    return form_groups(plan.runs, group_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--group-size", type=int, default=16, help="for the full tier's groups")
    args = ap.parse_args()
    from claimbench.train.profile import meta_data, trace_step

    data = meta_data(n=50_000, channels=3, side=32, classes=10)
    rows, copies = [], {}
    for k in args.runs:
        configs = basicnet_group(k, args.optimizer)
        trace = trace_step(configs, data)
        epoch = trace_step(configs, data, epoch_start=True)
        copies[k] = len(trace.copies)
        top = ", ".join(f"{n.removeprefix('aten::')} {c}" for n, c in trace.ops.most_common(4))
        rows.append((k, trace.total_ops, f"{trace.total_ops / k:.1f}", len(trace.copies), len(trace.syncs),
                     len(trace.cpu_created), trace.host_ops, len(epoch.copies), top))
    print(f"BasicNet width 1, CIFAR 32x32, batch 40, {args.optimizer} + L2, one steady-state step on the meta device")
    print(tabulate(rows, headers=("K", "device ops/step", "per run-step", "H2D/D2H copies", "syncs",
                                  "CPU tensors made", "host ops", "copies per epoch", "most dispatched")))

    groups = full_tier_groups(args.group_size)
    sizes = Counter(len(g) for g in groups)
    mixed = sum(1 for g in groups if len({r.config.optim.name for r in g}) > 1)
    print(f"\nfull tier: {sum(len(g) for g in groups)} runs in {len(groups)} groups of at most {args.group_size} "
          f"(sizes: {', '.join(f'{n} x {s}' for s, n in sorted(sizes.items(), reverse=True))}); "
          f"{mixed} groups mix optimizers")
    print("host-device copies per step: " + ", ".join(f"K={k} {c}" for k, c in copies.items()))


if __name__ == "__main__":
    main()
