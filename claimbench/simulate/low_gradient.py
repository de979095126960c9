"""The regulariser acting on one scalar in a low-gradient regime (paper Fig. 4, supplement Fig. 3).

In:  a ``DecayConfig``: optimizer name, regulariser (``'l2'`` or ``'wd'``), the lambdas to try,
     the number of iterations, the gradient noise of the "main objective", the seeds.
Out: ``simulation_record``: JSON-ready per-seed metrics for claims and the mean |theta| curve
     per lambda, which the cache stores; ``simulate_decay``: the same as a ``DecayResult``
     (``claimbench.simulate.result``, with ``plot_decay``, which draws results like the paper's figure).

The experiment (paper Sec. 2.3 / Fig. 4): a scalar theta starts at 1. Its gradient from the main
objective is pure noise, N(0, 1e-3) for the first 100 iterations and N(0, 1e-5) afterwards (the
low-gradient regime a selective, rarely-active feature's BN scale lives in). The regulariser acts
on it on every iteration:

* ``'l2'``: lambda * theta is added to the gradient *before* the optimizer computes its update,
  so adaptive methods rescale it (Adam normalises it by sqrt(v), which is tiny here);
* ``'wd'``: theta is multiplied by (1 - lambda) *after* the optimizer's update (decoupled).

Optimizers and regularizers are the training loop's own (``claimbench.train.optim``: the paper's
settings, ``Regularizer``), so the simulation and the networks cannot disagree on them.
Many lambdas and seeds run at once: each lambda's theta is a vector of independent scalars, one
per seed, and one optimizer holds them all. Every optimizer
used here (SGD+momentum, Adam, AMSGrad, Adamax, RMSprop, Adagrad, Adadelta) updates each element
from that element's own gradient and state only, and both regularisers are elementwise, so one
optimizer over a K-vector is exactly K separate one-scalar simulations (checked by a test).
All lambdas with the same seed see the same main-objective noise (common random numbers), so the
curves differ only by lambda. Runs are in float64 and deterministic for fixed seeds.

What to expect (default settings): with Adam/RMSProp + L2 the L2 term dominates the 1e-5 noise,
Adam normalises it, and theta falls by ~lr per iteration, then decays at rate lr*lambda/sigma per
iteration; it settles on a noise floor with E|theta| ~ sqrt(2/pi) * sqrt(lr*sigma / (2*lambda))
(5.6e-3 at lambda=1e-4, 1.8e-3 at 1e-3; measured 5.7e-3 and 1.8e-3). SGD+L2 and any optimizer
with WD shrink theta by only ~lambda (SGD+L2: lr*lambda/(1-momentum) = lambda) per iteration.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from claimbench.simulate.result import (
    SIMULATION_FORMAT,
    DecayResult,
    decay_result_of,
    default_label,
    metrics_of,
    plot_decay,
    steps_to_level,
)
from claimbench.spec.simulation import OPTIMIZERS, REGULARIZERS, DecayConfig, paper_lr
from claimbench.train.optim import Regularizer, make_torch_optimizer

__all__ = ["OPTIMIZERS", "REGULARIZERS", "DecayConfig", "DecayResult", "main_gradients", "paper_lr",
           "plot_decay", "simulate_abs_theta", "simulate_decay", "simulate_grid", "simulation_metrics",
           "simulation_record", "steps_to_level"]

# The noise is drawn in fixed-size blocks so a longer run extends a shorter one with the same seed
# (torch.randn(n) for different n does not give a common prefix).
_NOISE_BLOCK = 1024


def main_gradients(cfg: DecayConfig) -> torch.Tensor:
    """The main objective's gradient, shape ``(steps, len(seeds))``, float64.

    Row ``t`` is the gradient at iteration ``t + 1``: N(0, high_grad_std) for the first
    ``high_grad_steps`` iterations, N(0, low_grad_std) afterwards; column ``j`` comes from
    ``torch.Generator().manual_seed(seeds[j])`` alone, so it does not depend on the other seeds,
    on the lambdas, or (beyond its length) on ``steps``.
    """
    n_blocks = -(-cfg.steps // _NOISE_BLOCK)
    cols = []
    for seed in cfg.seeds:
        gen = torch.Generator().manual_seed(seed)
        z = torch.cat([torch.randn(_NOISE_BLOCK, generator=gen, dtype=torch.float64) for _ in range(n_blocks)])
        cols.append(z[: cfg.steps])
    z = torch.stack(cols, dim=1)
    std = torch.full((cfg.steps, 1), cfg.low_grad_std, dtype=torch.float64)
    std[: cfg.high_grad_steps] = cfg.high_grad_std
    return z * std


def simulate_abs_theta(cfg: DecayConfig) -> tuple[list[int], torch.Tensor]:
    """Run the simulation; return the recorded iterations and |theta|, shape (n_rec, n_lams, n_seeds).

    The optimizer and the regularizer are the training loop's own (``claimbench.train.optim``): one
    optimizer over one (n_seeds,) tensor per lambda, one ``Regularizer`` per lambda."""
    n_lams, n_seeds = len(cfg.lams), len(cfg.seeds)
    thetas = [torch.ones(n_seeds, dtype=torch.float64, requires_grad=True) for _ in cfg.lams]
    opt = make_torch_optimizer(cfg.optimizer, thetas, cfg.effective_lr)
    regularizers = [Regularizer(cfg.regularizer, lam, [theta]) for lam, theta in zip(cfg.lams, thetas)]
    grads = main_gradients(cfg)
    rec_steps = cfg.recorded_steps()
    out = torch.empty(len(rec_steps), n_lams, n_seeds, dtype=torch.float64)
    out[0] = 1.0
    i_rec = 1
    with torch.no_grad():
        for t in range(1, cfg.steps + 1):
            g = grads[t - 1]
            for theta in thetas:
                theta.grad = g.clone()
            for r in regularizers:
                r.before_step()
            opt.step()
            for r in regularizers:
                r.after_step(1.0)
            if i_rec < len(rec_steps) and rec_steps[i_rec] == t:
                out[i_rec] = torch.stack([theta.abs() for theta in thetas])
                i_rec += 1
    return rec_steps, out


def simulation_record(cfg: DecayConfig) -> dict[str, Any]:
    """Everything checks, reports and plots read of ``cfg``, from one simulation, JSON-ready:
    per lambda, per seed, the metrics claims check (|theta| at the end and its log10, the
    iterations to reach 1e-2 and 1e-3 of the start), and per lambda the mean |theta| curve over
    seeds. Stored by the cache (``claimbench.cache.simulations``) and read back with
    ``claimbench.simulate.result``, so a simulation runs once per configuration and code."""
    import time

    t0 = time.perf_counter()
    steps, values = simulate_abs_theta(cfg)
    metrics: dict[str, list[dict]] = {}
    for i, lam in enumerate(cfg.lams):
        per_seed = []
        for j in range(len(cfg.seeds)):
            curve = values[:, i, j].tolist()
            final = curve[-1]
            per_seed.append({
                "final_abs": final,
                "log10_final_abs": math.log10(max(final, 1e-300)),
                "steps_to_1e-2": float(steps_to_level(steps, curve, 1e-2)),
                "steps_to_1e-3": float(steps_to_level(steps, curve, 1e-3)),
                "diverged_at": None,
            })
        metrics[repr(lam)] = per_seed
    mean = values.mean(dim=2)  # over seeds
    return {
        "format": SIMULATION_FORMAT,
        "config": cfg.to_dict(),
        "steps_recorded": list(steps),
        "mean_abs": {repr(lam): mean[:, i].tolist() for i, lam in enumerate(cfg.lams)},
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def simulation_metrics(cfg: DecayConfig) -> dict[float, list[dict]]:
    """Per lambda, per seed metrics of ``cfg`` (computed now; checks read the stored record)."""
    return metrics_of(simulation_record(cfg))


def simulate_decay(cfg: DecayConfig) -> DecayResult:
    """Simulate ``cfg``; see the module docstring."""
    return decay_result_of(simulation_record(cfg))


def simulate_grid(
    optimizers: Sequence[str] = OPTIMIZERS,
    regularizers: Sequence[str] = REGULARIZERS,
    lams: Sequence[float] = (1e-3, 1e-4, 1e-5, 1e-6),
    **overrides: Any,
) -> dict[tuple[str, str], DecayResult]:
    """``simulate_decay`` for every (optimizer, regulariser); ``overrides`` go to ``DecayConfig``."""
    return {
        (o, r): simulate_decay(DecayConfig(optimizer=o, regularizer=r, lams=tuple(lams), **overrides))
        for o in optimizers
        for r in regularizers
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m claimbench.simulate.low_gradient OUT_DIR``: all optimizers x {L2, WD} x 4 lambdas,
    written as ``decay.json``, ``fig4_sgd_adam.png`` (paper Fig. 4) and ``supp_fig3_all.png``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=DecayConfig.steps)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args(argv)
    grid = simulate_grid(steps=a.steps, seeds=tuple(a.seeds))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "decay.json").write_text(json.dumps({f"{o}/{r}": res.to_dict() for (o, r), res in grid.items()}))
    fig4 = [(default_label(grid[k]), grid[k]) for k in [("sgd", "l2"), ("sgd", "wd"), ("adam", "l2"), ("adam", "wd")]]
    plot_decay(fig4, a.out / "fig4_sgd_adam.png", "Regularisation of a scalar in a low-gradient regime")
    plot_decay([(default_label(r), r) for r in grid.values()], a.out / "supp_fig3_all.png",
               "Regularisation of a scalar in a low-gradient regime (all optimizers)")
    for (o, r), res in grid.items():
        print(f"{o:9s} {r}: steps to |θ|<=1e-3 {res.steps_to_fraction(1e-3)}  final "
              + " ".join(f"{lam:g}:{v:.3g}" for lam, v in res.final.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
