"""matplotlib figures for claim pages, declared in a claim tier's ``plots:`` list.

In:  ClaimSpec tier, RunStore; each plot entry names a kind and the run groups it draws.
Out: PNG files next to the claim page; their file names. A plot whose inputs (entry, stored runs,
     plotting code) are those of the report being replaced is copied from it, not drawn again.

Kinds: ``layers`` (per-layer sparsity bars, paper Table 2), ``axis`` (a metric along a run's axis:
sparsity vs lambda / batch size), ``bn_evolution`` (gamma and beta distributions of one layer over
training, paper Fig. 2), ``universality`` (per-layer histograms, paper Fig. 3), ``decay`` (the
low-gradient simulation, paper Fig. 4 / supplement Fig. 3). The kinds, and what each entry takes, are
``claimbench.spec.plots.PLOT_KINDS``; ``PLOTTERS`` registers a plotter against each of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from claimbench.cache import RunStore, run_key
from claimbench.cache.keys import fingerprint, import_closure
from claimbench.spec.claims import ClaimSpec, TierSpec
from claimbench.spec.plots import PLOT_KINDS
from claimbench.spec.registry import registered
from claimbench.spec.run_groups import RunGroup

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


# Beside the PNGs of a report: the digest of each plot's inputs, so that the next report copies a
# plot whose inputs did not change instead of drawing it again.
DIGESTS_FILE = ".plot-inputs.json"


def read_plot_digests(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / DIGESTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_plot_digests(folder: Path, digests: dict[str, str]) -> None:
    (folder / DIGESTS_FILE).write_text(json.dumps(digests, indent=1, sort_keys=True))


@functools.lru_cache(maxsize=1)
def _plot_code() -> str:
    """The behaviour of the code that draws (this module and what it imports)."""
    return fingerprint(import_closure((__name__,)))


def plot_digest(spec: ClaimSpec, tier: TierSpec, entry: dict, store: RunStore, title: str) -> str:
    """What a plot is drawn from: its entry, its title, the stored runs and simulations of the tier
    (each entry's manifest, which holds the checksums of its metrics and histories) and the
    plotting code. Equal digests draw equal plots."""
    from claimbench.cache.keys import simulation_key
    from claimbench.cache.simulations import SimulationStore

    sims = SimulationStore(store.root)
    parts = [json.dumps(entry, sort_keys=True, default=str), title, tier.name, _plot_code()]
    for group in tier.groups.values():
        if group.simulate is not None:
            parts.append(f"sim {simulation_key(group.simulate)} {sims.path(group.simulate).is_file()}")
            continue
        for point in group.points:
            for config in point.configs:
                key = run_key(config)
                try:
                    manifest = (store.entry_dir(key) / "manifest.json").read_bytes()
                except OSError:
                    manifest = b"absent"
                parts.append(key + " " + hashlib.sha256(manifest).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def render_plots(spec: ClaimSpec, tier: TierSpec, store: RunStore, out: Path,
                 previous: Path | None = None, digests: dict[str, str] | None = None) -> list[str]:
    """Draw the tier's plots into ``out``; the PNG names. A plot of ``previous`` (the report being
    replaced) whose inputs are unchanged is copied instead of drawn again; ``digests`` collects
    each plot's input digest for the next report."""
    old = read_plot_digests(previous) if previous is not None else {}
    names = []
    for i, entry in enumerate(tier.plots):
        kind = entry.get("kind")
        fn = PLOTTERS.get(kind)
        if fn is None:
            log.warning("%s: unknown plot kind %r", spec.id, kind)
            continue
        name = f"{spec.id}-{i + 1}-{kind}.png"
        title = f"{spec.id} ({tier.name} tier)"
        digest = plot_digest(spec, tier, entry, store, title)
        if previous is not None and old.get(name) == digest and (previous / name).is_file():
            shutil.copyfile(previous / name, out / name)
            drawn = True
        else:
            try:
                drawn = fn(entry, tier, store, out / name, title)
            except (KeyError, IndexError, ValueError) as e:
                log.warning("%s: plot %s failed: %s", spec.id, kind, e)
                drawn = False
        if drawn:
            names.append(name)
            if digests is not None:
                digests[name] = digest
    return names


def _finish(fig, ax, drawn: bool, ylabel: str, title: str, path: Path) -> bool:
    """Label and save a one-axes figure; close it unsaved when nothing was drawn (False)."""
    if not drawn:
        _plt().close(fig)
        return False
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


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
    if drawn:
        ax.set_xticks(np.arange(vals.shape[1]) + 0.4 - width / 2, [f"C{i + 1}" for i in range(vals.shape[1])])
    return _finish(fig, ax, drawn, f"{metric} (%)", title + _trained_on(drawn_recs), path)


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
    return _finish(fig, ax, drawn, f"{metric} (mean ± std over seeds)", title + _trained_on(drawn_recs), path)


def plot_bn_evolution(entry, tier, store, path, title) -> bool:
    plt = _plt()
    layer = int(PLOT_KINDS["bn_evolution"].drawn_layers(entry))
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
    layers = PLOT_KINDS["universality"].drawn_layers(entry)
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
    from claimbench.cache.simulations import SimulationStore
    from claimbench.simulate.result import decay_result_of, plot_decay as draw

    sims = SimulationStore(store.root)
    records = [(name, sims.get(tier.groups[name].simulate)) for name in entry["runs"]]
    if any(record is None for _, record in records):
        return False  # not computed yet: the claim's page says so, as for missing runs
    draw([(name, decay_result_of(record)) for name, record in records], path, title)
    return path.exists()


# One plotter per kind the parser accepts (claimbench.spec.plots.PLOT_KINDS), checked against its
# list as this module loads.
PLOTTERS = registered(PLOT_KINDS, {
    "layers": plot_layers,
    "axis": plot_axis,
    "bn_evolution": plot_bn_evolution,
    "universality": plot_universality,
    "decay": plot_decay,
}, "plot kind", "claimbench.report.plots")
