"""matplotlib figures for claim pages, declared in a claim tier's ``plots:`` list.

In:  ClaimSpec tier, RunStore; each plot entry names a kind and the run groups it draws.
Out: PNG files next to the claim page; their file names.

Kinds: ``layers`` (per-layer sparsity bars, paper Table 2), ``axis`` (a metric along a run's axis:
sparsity vs lambda / batch size), ``bn_evolution`` (gamma and beta distributions of one layer over
training, paper Fig. 2), ``universality`` (per-layer histograms, paper Fig. 3), ``decay`` (the
low-gradient simulation, paper Fig. 4 / supplement Fig. 3).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from repro.cache import RunStore, run_key
from repro.spec.claims import ClaimSpec, RunGroup, TierSpec

log = logging.getLogger(__name__)


def _records(group: RunGroup, store: RunStore, axis_value=None):
    point = group.point(axis_value)
    return [r for c in point.configs if (r := store.get(run_key(c))) is not None and r.metrics.get("diverged_at") is None]


def _named_records(tier: TierSpec, name: str, store: RunStore):
    """Records of ``group`` or ``group@axis_value`` as a plot entry names them."""
    group_name, _, at = name.partition("@")
    return _records(tier.groups[group_name], store, float(at) if at else None)


def _trained_on(records) -> str:
    """" (runs on digits)": what the drawn runs were trained on, so a scaled analog's plot is
    never read as the paper's data set."""
    datasets = sorted({r.config.data.dataset for r in records})
    return f" (runs on {', '.join(datasets)})" if datasets else ""


def _std(values, axis=None):
    """The seed std every report shows (ddof=1, as mean ± std in the tables); 0 for one seed."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0] if axis == 0 else values.size
    return np.std(values, axis=axis, ddof=1) if n > 1 else np.zeros(values.shape[1:] if axis == 0 else ())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plots(spec: ClaimSpec, tier: TierSpec, store: RunStore, out: Path) -> list[str]:
    names = []
    for i, entry in enumerate(tier.plots):
        kind = entry.get("kind")
        fn = PLOTTERS.get(kind)
        if fn is None:
            log.warning("%s: unknown plot kind %r", spec.id, kind)
            continue
        name = f"{spec.id}-{i + 1}-{kind}.png"
        try:
            drawn = fn(entry, tier, store, out / name, f"{spec.id} ({tier.name} tier)")
        except (KeyError, IndexError, ValueError) as e:
            log.warning("%s: plot %s failed: %s", spec.id, kind, e)
            drawn = False
        if drawn:
            names.append(name)
    return names


def _save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    _plt().close(fig)
    return True


def plot_layers(entry, tier, store, path, title) -> bool:
    plt = _plt()
    metric = entry.get("metric", "layer_sparsity_gamma")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    runs = entry["runs"]
    width = 0.8 / len(runs)
    drawn = False
    drawn_recs = []
    for j, name in enumerate(runs):
        recs = _named_records(tier, name, store)
        if not recs:
            continue
        vals = np.array([r.metrics[metric] for r in recs], dtype=float)
        x = np.arange(vals.shape[1])
        ax.bar(x + j * width, vals.mean(0), width, yerr=_std(vals, 0) if len(recs) > 1 else None,
               label=f"{name} (mean ± std, n={len(recs)})")
        drawn = True
        drawn_recs += recs
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xticks(np.arange(vals.shape[1]) + 0.4 - width / 2, [f"C{i + 1}" for i in range(vals.shape[1])])
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title + _trained_on(drawn_recs), fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_axis(entry, tier, store, path, title) -> bool:
    plt = _plt()
    metric = entry.get("metric", "sparsity_gamma")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    drawn = False
    drawn_recs = []
    for name in entry.get("runs", [entry.get("run")]):
        group = tier.groups[name]
        xs, ms, ss = [], [], []
        for p in group.points:
            recs = _records(group, store, p.axis_value)
            if recs:
                vals = [r.metrics[metric] for r in recs]
                xs.append(p.axis_value)
                ms.append(np.mean(vals))
                ss.append(float(_std(vals)))
                drawn_recs += recs
        if xs:
            positions = np.arange(len(xs))
            ax.errorbar(positions, ms, yerr=ss, marker="o", capsize=3, label=name)
            ax.set_xticks(positions, [f"{x:g}" if isinstance(x, (int, float)) else str(x) for x in xs])
            ax.set_xlabel(group.axis)
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(title + _trained_on(drawn_recs), fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_bn_evolution(entry, tier, store, path, title) -> bool:
    plt = _plt()
    layer = int(entry.get("layer", 6))
    runs = entry["runs"]
    fig, axes = plt.subplots(2, len(runs), figsize=(3.2 * len(runs), 5), squeeze=False)
    drawn = False
    for j, name in enumerate(runs):
        recs = _named_records(tier, name, store)
        if not recs:
            continue
        hist = recs[0].history
        steps = hist["snapshot_steps"]
        for row, param in enumerate(("gamma", "beta")):
            ax = axes[row][j]
            for s, snap in zip(steps, hist["snapshots"]):
                vals = np.asarray(snap[param][layer - 1])
                ax.scatter(np.full(vals.shape, s), vals, s=2, alpha=0.3, color="C0" if row == 0 else "C3")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{name}: C{layer} {param}", fontsize=8)
            ax.set_xlabel("step", fontsize=7)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_universality(entry, tier, store, path, title) -> bool:
    plt = _plt()
    layers = entry.get("layers", [4, 5, 6, 7])
    runs = entry["runs"]
    fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3), squeeze=False)
    drawn = False
    for name in runs:
        recs = _named_records(tier, name, store)
        if not recs:
            continue
        for k, layer in enumerate(layers):
            vals = np.asarray(recs[0].metrics["universality"][layer - 1], dtype=float)
            weights = np.full(vals.shape, 1.0 / max(1, len(vals)))
            axes[0][k].hist(vals, bins=np.linspace(0, 100, 21), weights=weights, alpha=0.5, label=name)
            axes[0][k].set_title(f"C{layer}", fontsize=8)
            axes[0][k].set_xlabel("universality %", fontsize=7)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    axes[0][0].set_ylabel("fraction of features")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_decay(entry, tier, store, path, title) -> bool:
    from repro.cache.simulations import SimulationStore
    from repro.simulate.result import decay_result_of, plot_decay as draw

    sims = SimulationStore(store.root)
    records = [(name, sims.get(tier.groups[name].simulate)) for name in entry["runs"]]
    if any(record is None for _, record in records):
        return False  # not computed yet: the claim's page says so, as for missing runs
    draw([(name, decay_result_of(record)) for name, record in records], path, title)
    return path.exists()


PLOTTERS = {
    "layers": plot_layers,
    "axis": plot_axis,
    "bn_evolution": plot_bn_evolution,
    "universality": plot_universality,
    "decay": plot_decay,
}
