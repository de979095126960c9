"""A claim tier's ``plots:`` list -> validated plot entries, and the one list of plot kinds.

In:  the raw ``plots:`` value of a tier and the tier's run groups (``claimbench.spec.run_groups.RunGroup``),
     e.g. ``[{kind: layers, runs: [adam_l2, sgd_l2], metric: layer_sparsity_gamma}]``.
Out: the entries that name runs the kind can draw (as written: the report reads them), every other
     one a problem at its field. ``PLOT_KINDS`` is the one list of plot kinds, with what each takes;
     the plotters (``claimbench.report.plots.PLOTTERS``) register against it and fail to import
     when a kind here has none (``claimbench.spec.registry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claimbench.runconfig import unknown_name_message
from claimbench.spec.checks import split_run
from claimbench.spec.entries import entry_mapping
from claimbench.spec.metrics import metric_catalogue, missing_layers
from claimbench.spec.parsing import Problems
from claimbench.spec.run_groups import RunGroup


@dataclass(frozen=True)
class PlotKind:
    """What a plot entry of a kind takes (the drawing is claimbench.report.plots)."""

    keys: tuple[str, ...]
    groups: str  # "runs" (any), "axis" (groups with an axis), "simulation"
    # For kinds that draw chosen conv layers: the key naming them and what is drawn without it.
    layers: tuple[str, Any] | None = None

    def drawn_layers(self, entry: dict) -> Any:
        """The 1-based conv layer (``layer``) or layers (``layers``) an entry of this kind draws."""
        assert self.layers is not None
        key, default = self.layers
        return entry.get(key, default)


PLOT_KINDS: dict[str, PlotKind] = {
    "layers": PlotKind(("runs", "metric"), "runs"),
    "axis": PlotKind(("run", "runs", "metric"), "axis"),
    "bn_evolution": PlotKind(("runs", "layer"), "runs", ("layer", 6)),
    "universality": PlotKind(("runs", "layers"), "runs", ("layers", [4, 5, 6, 7])),
    "decay": PlotKind(("runs",), "simulation"),
}


def _plot_layers_exist(kind: PlotKind, entry: dict, names: list[str], groups: dict[str, RunGroup], pfld: str,
                       errs: Problems) -> bool:
    """The layers a plot draws are 1-based conv layers of every run it draws."""
    assert kind.layers is not None
    key = kind.layers[0]
    value = kind.drawn_layers(entry)
    layers = [value] if key == "layer" else value
    if not isinstance(layers, list) or not layers or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in layers):
        what = "a 1-based conv layer number" if key == "layer" else "a non-empty list of 1-based conv layer numbers"
        errs.add(f"{pfld}.{key}", f"expected {what}, got {value!r}")
        return False
    for name in names:
        group = groups[split_run(name)[0]]
        for point in group.points:
            why = missing_layers(layers, point.configs[0]) if point.configs else None
            if why:
                errs.add(f"{pfld}.{key}", f"run {group.name!r}: {why}")
                return False
    return True


def _group_problem(kind: PlotKind, group_name: str, at: Any, groups: dict[str, RunGroup]) -> str | None:
    """Why a plot of ``kind`` cannot draw the run group a name selects (None: it can)."""
    group = groups.get(group_name)
    if group is None:
        return unknown_name_message("run", group_name, groups)
    if kind.groups == "simulation" and group.simulate is None:
        return f"run {group_name!r} is not a simulation"
    if kind.groups == "axis" and group.axis is None:
        return f"run {group_name!r} has no axis to plot along"
    if kind.groups == "runs" and group.simulate is not None:
        return f"run {group_name!r} is a simulation; plot it with kind decay"
    if at is None and group.axis is not None and len(group.points) > 1 and kind.groups == "runs":
        return f"run {group_name!r} has an axis; name a point as {group_name}@<value>"
    return None


def parse_plots(raw: Any, fld: str, groups: dict[str, RunGroup], errs: Problems) -> list[dict]:
    """A tier's plot entries whose runs, layers and metric the kind can draw."""
    if not isinstance(raw, list):
        errs.add(fld, "expected a list of plots, e.g. [{kind: layers, runs: [a, b]}]")
        return []
    plots = []
    for i, entry in enumerate(raw):
        pfld = f"{fld}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str) or entry["kind"] not in PLOT_KINDS:
            kind = entry.get("kind") if isinstance(entry, dict) else None
            errs.add(f"{pfld}.kind", unknown_name_message("plot kind", kind, PLOT_KINDS))
            continue
        kind = PLOT_KINDS[entry["kind"]]
        # The kind chose the keys; the rest of the entry is read like any other list entry.
        entry_mapping({k: v for k, v in entry.items() if k != "kind"}, pfld, kind.keys,
                      f"key of a {entry['kind']} plot", errs)
        names = entry.get("runs", [entry["run"]] if "run" in entry else None)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            errs.add(f"{pfld}.runs", "expected a non-empty list of run names")
            continue
        ok = True
        for name in names:
            problem = _group_problem(kind, *split_run(name), groups)
            if problem:
                errs.add(f"{pfld}.runs", problem)
                ok = False
        if ok and kind.layers is not None:
            ok = _plot_layers_exist(kind, entry, names, groups, pfld, errs)
        metric = entry.get("metric")
        if metric is not None and (not isinstance(metric, str) or metric not in metric_catalogue(False)):
            errs.add(f"{pfld}.metric", unknown_name_message("metric", metric, metric_catalogue(False)))
            ok = False
        if ok:
            plots.append(entry)
    return plots
