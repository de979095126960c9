"""What a low-gradient simulation produced, read without torch: checks, reports and plots use
this, the simulation itself (``claimbench.simulate.low_gradient``, torch) only writes it.

In:  a simulation record (``low_gradient.simulation_record``: JSON, as the cache stores it).
Out: ``metrics_of`` (per lambda, per seed metrics), ``decay_result_of`` (a ``DecayResult``: the
     mean |theta| curves), ``check_record`` (a record is whole and belongs to its config),
     ``plot_decay`` (the paper's figure), ``steps_to_level``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from claimbench.spec.simulation import DecayConfig

# Version of the record layout; part of every simulation key.
SIMULATION_FORMAT = 1
_METRIC_NAMES = ("final_abs", "log10_final_abs", "steps_to_1e-2", "steps_to_1e-3")


def steps_to_level(steps: Sequence[int], curve: Sequence[float], level: float) -> int:
    """The first recorded iteration at which ``curve`` (numbers, or a 1-d tensor) is at or below
    ``level``; a curve that never gets there counts as the run's full length (a censored value:
    the one answer everywhere a "steps to" number is reported or checked)."""
    for s, x in zip(steps, curve):
        if float(x) <= level:
            return int(s)
    return int(steps[-1])


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

    def steps_to_fraction(self, fraction: float = 1e-3) -> dict[float, int]:
        """Per lambda: ``steps_to_level`` of the mean |theta| (theta starts at 1, so ``fraction``
        is also the fraction of the start); the full length if it never gets there."""
        return {lam: steps_to_level(self.steps_recorded, v, fraction) for lam, v in self.values.items()}

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


def metrics_of(record: Mapping[str, Any]) -> dict[float, list[dict]]:
    """Per lambda (as a float), per seed, the metrics a claim checks."""
    return {float(lam): [dict(m) for m in per_seed] for lam, per_seed in record["metrics"].items()}


def decay_result_of(record: Mapping[str, Any]) -> DecayResult:
    return DecayResult(config=DecayConfig(**record["config"]), steps_recorded=[int(s) for s in record["steps_recorded"]],
                       values={float(lam): [float(x) for x in v] for lam, v in record["mean_abs"].items()},
                       seconds=float(record.get("seconds", 0.0)))


def check_record(record: Any, cfg: DecayConfig) -> None:
    """Raise ValueError unless ``record`` is a whole record of ``cfg`` in this format."""
    if not isinstance(record, dict) or record.get("format") != SIMULATION_FORMAT:
        raise ValueError("not a simulation record of this format")
    if record.get("config") != cfg.to_dict():
        raise ValueError("the record is of another configuration")
    steps = record.get("steps_recorded")
    if not isinstance(steps, list) or steps != cfg.recorded_steps():
        raise ValueError("recorded iterations do not match the configuration")
    lams = [repr(lam) for lam in cfg.lams]
    curves, metrics = record.get("mean_abs"), record.get("metrics")
    if not isinstance(curves, dict) or sorted(curves) != sorted(lams) or not isinstance(metrics, dict) \
            or sorted(metrics) != sorted(lams):
        raise ValueError("lambdas do not match the configuration")
    for lam in lams:
        if not isinstance(curves[lam], list) or len(curves[lam]) != len(steps) \
                or not all(isinstance(x, (int, float)) for x in curves[lam]):
            raise ValueError(f"curve of lambda {lam} is malformed")
        per_seed = metrics[lam]
        if not isinstance(per_seed, list) or len(per_seed) != len(cfg.seeds):
            raise ValueError(f"metrics of lambda {lam}: one per seed expected")
        for m in per_seed:
            if not isinstance(m, dict) or any(not isinstance(m.get(k), (int, float)) for k in _METRIC_NAMES):
                raise ValueError(f"metrics of lambda {lam} are malformed")


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


