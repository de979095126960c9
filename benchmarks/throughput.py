"""Runs per hour: a plain PyTorch loop vs claimbench's loop one run at a time vs fused groups of K.

    .venv/bin/python benchmarks/throughput.py                 # CPU, smoke scale (digits 8x8, width 0.375)
    .venv/bin/python benchmarks/throughput.py --scale paper   # GPU: BasicNet width 1 on CIFAR-size data
    .venv/bin/python benchmarks/throughput.py --steps 100 --groups 4 16
    .venv/bin/python benchmarks/throughput.py --precision tf32                # GPU: TF32 instead of fp32

All ways train the same set of runs (Adam + L2, batch 40, different lambdas and seeds) for the
same number of steps, in one invocation, and the table gives runs/hour and the ratio to the plain
loop. The FLOP rate is training FLOPs (3x forward) per second against a measured fp32 matmul rate
on the same device (the practical peak; vendor peaks are higher).

On CUDA every way runs under each setting of ``--settings`` (default: plain, cuDNN autotuning,
autotuning + CUDA graphs; graphs apply to claimbench's loop only), one row per way and setting, with
the ratio to the plain loop under plain settings. On CPU there is one setting (neither applies).
"""

from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from claimbench.config import RunConfig
from claimbench.runconfig import run_config_from_dict
from claimbench.data.base import ImageData
from claimbench.plan.estimate import run_cost
from claimbench.train.device import resolve_device, set_precision
from claimbench.train.loop import train_models
from claimbench.train.models import build_model

# name -> (cudnn.benchmark, CUDA graphs)
SETTINGS = {"plain": (False, False), "benchmark": (True, False), "benchmark+graphs": (True, True)}


def make_configs(scale: str, n: int, steps: int, precision: str = "fp32") -> list[RunConfig]:
    base = {"unit": "steps", "phases": [steps], "batch_size": 40, "snapshots": 1, "precision": precision,
            "flush_denormals": scale == "smoke"}  # as the smoke tier trains
    model = {"width": 0.375} if scale == "smoke" else {}
    dataset = "digits" if scale == "smoke" else "cifar10"
    lams = [1e-2, 3e-3, 1e-3, 3e-4]
    return [run_config_from_dict({"model": model, "data": {"dataset": dataset},
                                  "optim": {"name": "adam", "regularizer": "l2", "lam": lams[i % 4]},
                                  "train": {**base, "seed": i}}) for i in range(n)]


def make_data(scale: str, device: torch.device) -> ImageData:
    """Digits for smoke scale; CIFAR-size random tensors for paper scale (speed does not depend on
    the pixels, and the benchmark must run where CIFAR is not downloaded)."""
    if scale == "smoke":
        from claimbench.data import load_dataset

        return load_dataset(make_configs("smoke", 1, 1)[0].data).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50_000, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (50_000,), generator=g)
    return ImageData("cifar-size", x, y, x[:1000], y[:1000], 10).to(device)


def plain_loop(configs: list[RunConfig], data: ImageData, device: torch.device, benchmark: bool = False) -> None:
    """What a user would write: a DataLoader over CPU tensors, one run at a time."""
    from torch.utils.data import DataLoader, TensorDataset

    set_precision(configs[0].train.precision, device, benchmark, configs[0].train.flush_denormals)
    dataset = TensorDataset(data.train_x.cpu(), data.train_y.cpu())
    for c in configs:
        torch.manual_seed(c.train.seed)
        model = build_model(c.model, data.in_channels, data.image_size, data.num_classes, c.data.dataset).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=c.optim.lam)
        loader = DataLoader(dataset, batch_size=c.train.batch_size, shuffle=True, drop_last=True)
        steps, total = 0, c.total_steps(data.train_size)
        while steps < total:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                flip = torch.rand(len(x), device=device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                if steps == total:
                    break
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(configs: list[RunConfig], data: ImageData, device: torch.device, group: int,
         benchmark: bool | None = None, graphs: bool | None = None) -> None:
    for i in range(0, len(configs), group):
        train_models(configs[i : i + group], data, device, cuda_graphs=graphs, cudnn_benchmark=benchmark)
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device) -> float:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    set_precision("fp32", device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps = 3 if device.type == "cpu" else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("smoke", "paper"), default=None, help="default: paper on CUDA, smoke on CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=int, default=None, help="runs per way (default: the largest group)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 150 smoke, 300 paper)")
    ap.add_argument("--groups", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--precision", choices=("fp32", "tf32"), default="fp32")
    ap.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=None,
                    help="CUDA only; default: all three")
    args = ap.parse_args()
    device = resolve_device(args.device)
    scale = args.scale or ("paper" if device.type == "cuda" else "smoke")
    steps = args.steps or (150 if scale == "smoke" else 300)
    n = args.runs or max(args.groups)
    configs = make_configs(scale, n, steps, args.precision)
    settings = (args.settings or list(SETTINGS)) if device.type == "cuda" else ["plain"]
    data = make_data(scale, device)
    _, flops_per_run = run_cost(configs[0])
    peak = matmul_rate(device)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"scale {scale}, {n} runs x {steps} steps, batch 40, {args.precision}; fp32 matmul rate {peak / 1e9:,.0f} GFLOP/s")
    ways = []
    for setting in settings:
        bench, graphs = SETTINGS[setting] if device.type == "cuda" else (None, None)
        label = f" [{setting}]" if device.type == "cuda" else ""
        if not args.skip_plain and not graphs:
            ways.append((f"plain PyTorch loop (DataLoader), one run at a time{label}",
                         lambda b=bench: plain_loop(configs, data, device, bool(b))))
        ways.append((f"claimbench loop, one run at a time{label}", lambda b=bench, g=graphs: ours(configs, data, device, 1, b, g)))
        for k in args.groups:
            if k <= n:
                ways.append((f"claimbench fused groups of {k}{label}", lambda k=k, b=bench, g=graphs: ours(configs, data, device, k, b, g)))
    rows, base = [], None
    for name, fn in ways:
        try:
            t = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t
        except torch.OutOfMemoryError:
            rows.append((name, "out of memory", "", "", ""))
            continue
        per_hour = n / seconds * 3600
        base = base or per_hour
        rate = n * flops_per_run / seconds
        rows.append((name, f"{seconds:.1f}", f"{per_hour:,.0f}", f"{per_hour / base:.2f}x", f"{rate / 1e9:,.1f} ({100 * rate / peak:.1f}%)"))
        print(f"  {name}: {seconds:.1f} s", flush=True)
    print(tabulate(rows, headers=("way", "seconds", "runs/hour", "vs first", "GFLOP/s (of matmul rate)")))


if __name__ == "__main__":
    main()
