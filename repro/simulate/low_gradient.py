"""The regulariser acting on one scalar in a low-gradient regime (paper Fig. 4, supplement Fig. 3).

In:  a ``DecayConfig``: optimizer name, regulariser (``'l2'`` or ``'wd'``), the lambdas to try,
     the number of iterations, the gradient noise of the "main objective", the seeds.
Out: a ``DecayResult``: the recorded iterations and, per lambda, the mean over seeds of |theta|
     at each recorded iteration (``values``), plus ``final``, ``steps_to_fraction()`` and a
     JSON-ready ``to_dict()``. ``plot_decay`` draws results as log-y curves like the paper's figure.

The experiment (paper Sec. 2.3 / Fig. 4): a scalar theta starts at 1. Its gradient from the main
objective is pure noise, N(0, 1e-3) for the first 100 iterations and N(0, 1e-5) afterwards (the
low-gradient regime a selective, rarely-active feature's BN scale lives in). The regulariser acts
on it on every iteration:

* ``'l2'``: lambda * theta is added to the gradient *before* the optimizer computes its update,
  so adaptive methods rescale it (Adam normalises it by sqrt(v), which is tiny here);
* ``'wd'``: theta is multiplied by (1 - lambda) *after* the optimizer's update (decoupled).

Optimizers are the real ``torch.optim`` classes with the paper's settings (``repro.train.optim``).
Many lambdas and seeds run at once: theta is a vector of K independent scalars. Every optimizer
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

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from repro.config import BASE_LR
from repro.train.optim import make_optimizer as make_training_optimizer

REGULARIZERS = ("l2", "wd")

# The optimizers and their hyperparameters are the training loop's own (repro.train.optim), so the
# simulation and the networks can never disagree on them.
OPTIMIZERS = tuple(BASE_LR)

# The noise is drawn in fixed-size blocks so a longer run extends a shorter one with the same seed
# (torch.randn(n) for different n does not give a common prefix).
_NOISE_BLOCK = 1024


def paper_lr(optimizer: str) -> float:
    """The paper's learning rate for ``optimizer``."""
    return float(BASE_LR[optimizer])


def make_optimizer(name: str, params: Sequence[torch.Tensor], lr: float | None = None) -> torch.optim.Optimizer:
    """``torch.optim`` optimizer ``name`` with the paper's settings; ``lr`` overrides the rate."""
    if name not in BASE_LR:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return make_training_optimizer(name, list(params), paper_lr(name) if lr is None else lr)


@dataclass(frozen=True)
class DecayConfig:
    """One optimizer/regulariser pair over a set of lambdas and seeds.

    ``steps`` defaults to 10,000 iterations: long enough that Adam+L2 at lambda=1e-4 has taken the
    scalar from 1 to its noise floor (mean |theta| <= 1e-2 from iteration ~1,800; ~6e-3 on
    average after) while Adam+WD and SGD+L2 at the same lambda end near exp(-1) ~ 0.37-0.5, the
    paper's contrast.
    ``lr=None`` uses the paper's rate for the optimizer. ``record_every`` thins the recorded curve;
    iteration 0 (theta=1) and the last iteration are always recorded.
    """

    optimizer: str
    regularizer: str
    lams: tuple[float, ...]
    steps: int = 10000
    high_grad_steps: int = 100
    high_grad_std: float = 1e-3
    low_grad_std: float = 1e-5
    lr: float | None = None
    seeds: tuple[int, ...] = (0,)
    record_every: int = 10

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.optimizer not in BASE_LR:
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer: unknown {self.regularizer!r}; known: {', '.join(REGULARIZERS)}")
        if not self.lams:
            raise ValueError("lams: need at least one lambda")
        if len(set(self.lams)) != len(self.lams):
            raise ValueError(f"lams: duplicates in {self.lams}")
        for lam in self.lams:
            if not (0.0 <= lam < 1.0):
                raise ValueError(f"lams: {lam} outside [0, 1)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need at least one, no duplicates; got {self.seeds}")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if self.high_grad_steps < 0:
            raise ValueError(f"high_grad_steps: must be >= 0, got {self.high_grad_steps}")
        if self.high_grad_std < 0 or self.low_grad_std < 0:
            raise ValueError("high_grad_std / low_grad_std: must be >= 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.record_every < 1:
            raise ValueError(f"record_every: must be >= 1, got {self.record_every}")

    @property
    def effective_lr(self) -> float:
        return paper_lr(self.optimizer) if self.lr is None else float(self.lr)

    def recorded_steps(self) -> list[int]:
        steps = list(range(0, self.steps + 1, self.record_every))
        if steps[-1] != self.steps:
            steps.append(self.steps)
        return steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lams"] = list(self.lams)
        d["seeds"] = list(self.seeds)
        return d


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
    """Run the simulation; return the recorded iterations and |theta|, shape (n_rec, n_lams, n_seeds)."""
    n_lams, n_seeds = len(cfg.lams), len(cfg.seeds)
    # Element k = i_lam * n_seeds + i_seed is one independent scalar (see module docstring).
    lam = torch.tensor(cfg.lams, dtype=torch.float64).repeat_interleave(n_seeds)
    keep = 1.0 - lam
    theta = torch.ones(n_lams * n_seeds, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(cfg.optimizer, [theta], cfg.lr)
    grads = main_gradients(cfg)
    rec_steps = cfg.recorded_steps()
    out = torch.empty(len(rec_steps), n_lams * n_seeds, dtype=torch.float64)
    out[0] = 1.0
    i_rec = 1
    l2 = cfg.regularizer == "l2"
    block = grads[:0]
    with torch.no_grad():
        for t in range(1, cfg.steps + 1):
            i = (t - 1) % _NOISE_BLOCK
            if i == 0:  # lay out the next block of noise over all K scalars at once
                block = grads[t - 1 : t - 1 + _NOISE_BLOCK].repeat(1, n_lams)
            g = block[i]
            g = torch.addcmul(g, lam, theta) if l2 else g.clone()
            theta.grad = g
            opt.step()
            if not l2:
                theta.mul_(keep)
            if i_rec < len(rec_steps) and rec_steps[i_rec] == t:
                out[i_rec] = theta.abs()
                i_rec += 1
    return rec_steps, out.view(len(rec_steps), n_lams, n_seeds)


@dataclass(frozen=True)
class DecayResult:
    """``values[lam][i]`` is the mean over seeds of |theta| after iteration ``steps_recorded[i]``."""

    config: DecayConfig
    steps_recorded: list[int]
    values: dict[float, list[float]]
    seconds: float = field(default=0.0, compare=False)

    @property
    def final(self) -> dict[float, float]:
        """Mean |theta| over seeds after the last iteration, per lambda."""
        return {lam: v[-1] for lam, v in self.values.items()}

    def steps_to_fraction(self, fraction: float = 1e-3) -> dict[float, int | None]:
        """Per lambda: first recorded iteration with mean |theta| <= ``fraction`` (theta starts
        at 1, so this is also the fraction of the start), or None if it never gets there."""
        out: dict[float, int | None] = {}
        for lam, v in self.values.items():
            out[lam] = next((s for s, x in zip(self.steps_recorded, v) if x <= fraction), None)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lambdas as ``repr(float)`` keys, in ``config.lams`` order."""
        return {
            "config": self.config.to_dict(),
            "steps_recorded": list(self.steps_recorded),
            "values": {repr(lam): list(v) for lam, v in self.values.items()},
            "final": {repr(lam): v for lam, v in self.final.items()},
            "steps_to_1e-3": {repr(lam): s for lam, s in self.steps_to_fraction(1e-3).items()},
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecayResult":
        cfg = DecayConfig(**d["config"])
        return cls(
            config=cfg,
            steps_recorded=[int(s) for s in d["steps_recorded"]],
            values={float(k): [float(x) for x in v] for k, v in d["values"].items()},
            seconds=float(d.get("seconds", 0.0)),
        )


def simulate_decay(cfg: DecayConfig) -> DecayResult:
    """Simulate ``cfg``; see the module docstring."""
    import time

    t0 = time.perf_counter()
    steps, abs_theta = simulate_abs_theta(cfg)
    mean = abs_theta.mean(dim=2)  # over seeds
    values = {lam: mean[:, i].tolist() for i, lam in enumerate(cfg.lams)}
    return DecayResult(config=cfg, steps_recorded=steps, values=values, seconds=time.perf_counter() - t0)


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


_LABEL_NAMES = {
    "sgd": "SGD", "adam": "Adam", "amsgrad": "AMSGrad", "adagrad": "Adagrad",
    "adadelta": "Adadelta", "rmsprop": "RMSProp", "adamax": "Adamax", "l2": "L2", "wd": "WD",
}


def default_label(result: DecayResult) -> str:
    c = result.config
    return f"{_LABEL_NAMES[c.optimizer]} {_LABEL_NAMES[c.regularizer]}"


def plot_decay(
    results: Sequence[tuple[str, DecayResult]],
    path: Path | str,
    title: str,
    layout: str = "panels",
    ncols: int | None = None,
    ymin: float = 1e-6,
) -> Path:
    """Draw |theta| (log y) against iteration, one line per (label, lambda); write a PNG at ``path``.

    ``layout='panels'`` (default, like the paper's figure): one panel per label (``ncols`` per
    row, default up to 4), lines coloured by lambda, shared axes, one legend. ``layout='single'``:
    everything on one axes, line style per label. Values below ``ymin`` are drawn at ``ymin``.
    Sets matplotlib's Agg backend on call. Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_decay: no results")
    if layout not in ("panels", "single"):
        raise ValueError(f"layout: {layout!r} not in ('panels', 'single')")
    path = Path(path)
    all_lams = sorted({lam for _, r in results for lam in r.values}, reverse=True)
    cmap = plt.get_cmap("viridis")
    colour = {lam: cmap(0.9 * i / max(1, len(all_lams) - 1)) for i, lam in enumerate(all_lams)}
    styles = ["-", "--", ":", "-."]

    def curve(res: DecayResult, lam: float) -> list[float]:
        return [max(x, ymin) for x in res.values[lam]]

    if layout == "panels":
        n = len(results)
        ncols = min(n, 4) if ncols is None else max(1, min(ncols, n))
        nrows = -(-n // ncols)
        height = 2.6 * nrows + 0.9
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height), sharex=True, sharey=True,
                                 squeeze=False)
        flat = list(axes.ravel())
        for ax, (label, res) in zip(flat, results):
            for lam in res.values:
                ax.plot(res.steps_recorded, curve(res, lam), color=colour[lam], lw=1.1, label=f"λ = {lam:g}")
            ax.set_title(label, fontsize=10)
            ax.grid(True, alpha=0.3)
        for k, ax in enumerate(flat):
            if k >= n:
                ax.set_visible(False)
            elif k + ncols >= n:  # lowest visible panel of its column: label the x axis
                ax.xaxis.set_tick_params(labelbottom=True)
                ax.set_xlabel("iteration")
        for ax in axes[:, 0]:
            ax.set_ylabel("|θ|")
        legend = {}
        for ax in flat[:n]:
            for h, l in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(l, h)
        fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=len(legend),
                   fontsize=9, frameon=False)
        rect = (0, 0.45 / height, 1, 1)
        first = flat[0]
    else:
        fig, first = plt.subplots(figsize=(7.5, 4.8))
        for j, (label, res) in enumerate(results):
            for lam in res.values:
                first.plot(res.steps_recorded, curve(res, lam), color=colour[lam], ls=styles[j % len(styles)],
                           lw=1.1, label=f"{label}, λ = {lam:g}")
        first.set_xlabel("iteration")
        first.set_ylabel("|θ|")
        first.grid(True, alpha=0.3)
        first.legend(fontsize=7, ncol=2)
        rect = (0, 0, 1, 1)
    first.set_yscale("log")
    first.set_ylim(ymin / 2, 2.0)
    fig.suptitle(title)
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repro.simulate.low_gradient OUT_DIR``: all optimizers x {L2, WD} x 4 lambdas,
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
