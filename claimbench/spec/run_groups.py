"""A claim tier's ``runs:`` -> ``RunGroup`` records: what to train (or simulate) and the paper's numbers for it.

In:  one entry of a tier's ``runs:`` mapping (claims/README.md is the reference), the tier's base run
     config and seeds, and the ``Problems`` of the claim file:

    adam_l2: {set: {optim.regularizer: l2}, paper: {sparsity_gamma: 70}}
    lam_sweep: {axis: {optim.lam: [0, 1e-4, 1e-3]}, paper: {sparsity_gamma: [0, 70, 83]}}
    c10_adam: {cell: "table01/Adam L2 1e-04/CIFAR10"}   # a paper-table cell: its config and numbers
    decay: {simulate: {...}, paper: {...}}             # the low-gradient simulation

Out: ``RunGroup`` with one ``RunPoint`` per axis value (one without an axis), each its RunConfig per
     seed and the paper's numbers there, validated against the metric catalogue and against what
     a run of that config records; or None (a group whose configs are broken is kept, marked
     ``broken``, so checks naming it are not reported twice). Every problem at file:line:field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claimbench.config import ConfigError, RunConfig
from claimbench.runconfig import deep_merge, dotted_to_nested, parse_number, parse_run_config, unknown_name_message
from claimbench.spec.checks import same_value
from claimbench.spec.metrics import (PER_FEATURE, PER_LAYER, conv_layers, metric_catalogue, trainer_metric_clash,
                                     unrecorded)
from claimbench.spec.parsing import TABLES_FOLDER, Problems, config_error_field, expand_seeds, flatten, parse_seeds
from claimbench.spec.simulation import DecayConfig, parse_simulation
from claimbench.spec.table_folder import folder_tables
from claimbench.spec.tables import cell_paper, cell_prints

RUN_KEYS = ("set", "axis", "paper", "seeds", "simulate", "cell", "analog")
SIMULATION_RUN_KEYS = ("simulate", "paper", "seeds")
CELL_RUN_KEYS = ("cell", "axis", "paper", "seeds")  # a run that is a paper-table cell (tables/*.yaml)


@dataclass(frozen=True)
class RunPoint:
    """One point of a run group (one axis value), expanded over seeds."""

    group: str
    axis_value: Any  # None for groups without an axis
    configs: tuple[RunConfig, ...]  # one per seed
    paper: dict[str, Any]  # metric -> the paper's value at this point
    cell: str | None = None  # the table cell this point is ("table01/Adam L2 1e-04/CIFAR10"), if any


@dataclass(frozen=True)
class RunGroup:
    name: str
    axis: str | None
    points: tuple[RunPoint, ...]
    line: int | None
    simulate: DecayConfig | None = None  # the low-gradient simulation instead of training
    seeds: tuple[int, ...] = ()
    broken: bool = False  # its configs are invalid (reported already): it has none
    analog: Analog | None = None  # the base's scaling rule its configs went through, if any

    def point(self, axis_value: Any = None) -> RunPoint:
        for p in self.points:
            if axis_value is None or p.axis_value == axis_value:
                return p
        raise KeyError(axis_value)


@dataclass(frozen=True)
class Analog:
    """A tier's rule for scaling a setting of the paper to the tier's shorter runs: the fields it
    multiplies (``scale``: dotted field -> factor) and the measured reason (``why``). Declared
    once in a tier's base (``analogs:``), named by the runs that use it (``analog: name``)."""

    name: str
    why: str
    scale: dict[str, float]


def parse_analogs(raw: Any, fld: str, errs: Problems) -> dict[str, Analog]:
    """A base's ``analogs:`` mapping: name -> {why: text, scale: {dotted field: positive factor}}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping of rule names to {why, scale}")
        return {}
    out = {}
    for name, rule in raw.items():
        rfld = f"{fld}.{name}"
        if not isinstance(rule, dict):
            errs.add(rfld, "expected {why: the measured reason, scale: {field: factor}}")
            continue
        errs.unknown_keys(rule, ("why", "scale"), rfld)
        why, scale = rule.get("why"), rule.get("scale")
        if not isinstance(why, str) or not why.strip():
            errs.add(f"{rfld}.why", "a scaling rule must say why, with what was measured")
        if not isinstance(scale, dict) or not scale:
            errs.add(f"{rfld}.scale", "expected a mapping of dotted fields to factors, e.g. {optim.lr: 10}")
            continue
        factors = {}
        for path, factor in scale.items():
            try:
                factors[str(path)] = parse_number(factor, text=False)
            except ValueError as e:
                errs.add(f"{rfld}.scale.{path}", f"expected a number: {e}")
                continue
            if not factors[str(path)] > 0:
                errs.add(f"{rfld}.scale.{path}", f"expected a factor > 0, got {factor!r}")
        out[str(name)] = Analog(str(name), " ".join(str(why).split()), factors)
    return out


def _scaled(raw_cfg: dict, analog: Analog, fld: str, errs: Problems) -> dict:
    """``raw_cfg`` with the analog's fields multiplied, each from the value the run would have
    (an unset learning rate is the optimizer's base rate). Rounded to 12 significant digits, so
    1e-2 x 0.3 is the 3e-3 a reader expects, in the key and the label."""
    cfg, problems = parse_run_config(deep_merge(raw_cfg, {"train": {"seed": 0}}))
    if problems:
        return raw_cfg  # reported where the configs are expanded, at the field that has it
    for path, factor in analog.scale.items():
        obj: Any = cfg
        try:
            for part in path.split("."):
                obj = obj.base_lr if (part == "lr" and obj is cfg.optim) else getattr(obj, part)
        except AttributeError:
            errs.add(f"{fld}.analog", f"rule {analog.name!r} scales {path!r}, which is no run-config field")
            continue
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            errs.add(f"{fld}.analog", f"rule {analog.name!r} scales {path}, which is {obj!r} here, not a number")
            continue
        raw_cfg = deep_merge(raw_cfg, dotted_to_nested({path: float(f"{obj * factor:.12g}")}))
    return raw_cfg


def seeds_or_default(seeds: Any, default: list[int], fld: str, errs: Problems) -> list[int]:
    """A tier's or a run group's seeds (``default`` where they are invalid, which is reported)."""
    parsed = parse_seeds(seeds, fld, errs)
    return default if parsed is None else parsed


def parse_group(name: str, raw: Any, fld: str, base: dict, tier_seeds: list[int], errs: Problems,
                 base_fld: str, analogs: dict[str, Analog] | None = None) -> RunGroup | None:
    """The run group ``name`` of a tier (``raw``: its entry of ``runs:``; ``base``: the tier's base
    run config, written at ``base_fld``; ``tier_seeds``: the seeds it runs unless it names its own;
    ``analogs``: the scaling rules its base declares, which ``analog:`` names)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping with optional set, axis, paper, seeds (or a cell, or simulate)")
        return None
    if "simulate" in raw:
        errs.unknown_keys(raw, SIMULATION_RUN_KEYS, fld, "key of a simulation group")
    elif "cell" in raw:
        if "set" in raw:
            errs.add(f"{fld}.set", "a run with `cell` has the cell's configuration; a variation of it is a run "
                                   "of its own, written with set/axis and without cell")
        errs.unknown_keys({k: v for k, v in raw.items() if k != "set"}, CELL_RUN_KEYS, fld, "key of a run with cell")
    else:
        errs.unknown_keys(raw, RUN_KEYS, fld)
    seeds = seeds_or_default(raw.get("seeds", tier_seeds), tier_seeds, f"{fld}.seeds", errs)
    paper = raw.get("paper") or {}
    if not isinstance(paper, dict):
        errs.add(f"{fld}.paper", "expected a mapping metric -> value (a list for a run with an axis)")
        paper = {}
    if "cell" in raw and "simulate" not in raw:
        return _parse_cell_group(name, raw, fld, seeds if "seeds" in raw else None, paper, errs)
    if "simulate" in raw:
        return _parse_simulation_group(name, raw["simulate"], fld, seeds, paper, errs)
    analog = None
    if "analog" in raw:
        analog = (analogs or {}).get(raw["analog"]) if isinstance(raw["analog"], str) else None
        if analog is None:
            errs.add(f"{fld}.analog", unknown_name_message("scaling rule of this tier's base", raw["analog"], analogs or {}))
    overrides = _parse_overrides(raw.get("set"), f"{fld}.set", errs)
    axis, values = _parse_axis(raw.get("axis"), f"{fld}.axis", errs)
    paper_at = _parse_paper(paper, axis, values, f"{fld}.paper", errs, simulation=False)
    try:
        nested_set = dotted_to_nested(overrides)
    except ConfigError as e:
        errs.add(f"{fld}.set.{e.path}", e.message)
        return _broken_group(name, axis, values, errs.source.line(fld))
    points = []
    for i, value in enumerate(values):
        raw_cfg = deep_merge(base, nested_set)
        if axis is not None:
            raw_cfg = deep_merge(raw_cfg, dotted_to_nested({axis: value}))
        if analog is not None:
            raw_cfg = _scaled(raw_cfg, analog, fld, errs)
        configs = expand_seeds(raw_cfg, seeds, lambda path: _config_error_field(path, fld, axis, nested_set, base_fld), errs)
        if configs is None:
            return _broken_group(name, axis, values, errs.source.line(fld))
        clash = trainer_metric_clash(configs[0])
        if clash:
            errs.add(_config_error_field("train.trainer", fld, axis, nested_set, base_fld), clash)
        _paper_recorded(paper_at[i], configs[0], f"{fld}.paper", errs)
        points.append(RunPoint(name, value, tuple(configs), paper_at[i]))
    return RunGroup(name, axis, tuple(points), errs.source.line(fld), seeds=tuple(seeds), analog=analog)


def _parse_cell_group(name: str, raw: dict, fld: str, seeds: list[int] | None, paper: dict,
                      errs: Problems) -> RunGroup | None:
    """A run that is a cell of one of the paper's tables (``cell: "table01/Adam L2 1e-04/CIFAR10"``),
    or, with an axis, one cell per axis value (``cell: [...]``): the configuration is the cell's
    (its seeds unless the run gives ``seeds``), the paper numbers are the cell's, and ``paper:``
    may add only metrics the cell prints no number for (a number is typed once)."""
    axis, values = _parse_axis(raw.get("axis"), f"{fld}.axis", errs)
    refs = raw["cell"]
    line = errs.source.line(fld)
    if axis is None:
        refs = [refs]
    elif not isinstance(refs, list) or len(refs) != len(values):
        errs.add(f"{fld}.cell", f"with an axis, expected a list of {len(values)} cells, one per {axis} value")
        return _broken_group(name, axis, values, line)
    tables = folder_tables(errs.source.path.parent)
    if tables is None:
        errs.add(f"{fld}.cell", f"there is no {TABLES_FOLDER}/ folder beside this claim file, so no table cell to name")
        return _broken_group(name, axis, values, line)
    cells = []
    for i, ref in enumerate(refs):
        cell, problem = tables.find_cell(ref)
        if problem:
            errs.add(f"{fld}.cell" + (f"[{i}]" if axis else ""), problem)
        cells.append(cell)
    if any(c is None for c in cells):
        return _broken_group(name, axis, values, line)
    if axis is not None and not _cells_along_axis(cells, axis, values, f"{fld}.cell", errs):
        return _broken_group(name, axis, values, line)
    if seeds is None:
        cell_seeds = {tuple(cfg.train.seed for cfg in c.configs) for c in cells}
        if len(cell_seeds) > 1:
            errs.add(f"{fld}.cell", f"the cells are trained with different seeds {sorted(cell_seeds)}: give the run's seeds")
            return _broken_group(name, axis, values, line)
        seeds = list(next(iter(cell_seeds)))
    own = _parse_paper(paper, axis, values, f"{fld}.paper", errs, simulation=False)
    points = []
    for i, (value, cell) in enumerate(zip(values, cells)):
        given = cell_paper(cell)
        for metric in own[i]:
            if cell_prints(cell, metric):
                printed = given.get(metric, "a number for some layers")
                errs.add(f"{fld}.paper.{metric}", f"cell {cell.id!r} prints {metric} ({printed}): a number is typed "
                                                  "once, so leave it to the table (a claim's paper: adds only metrics "
                                                  "the cell does not print)")
        if tuple(cfg.train.seed for cfg in cell.configs) == tuple(seeds):
            configs = list(cell.configs)
        else:
            configs = expand_seeds(cell.configs[0].to_dict(), seeds, lambda path: f"{fld}.seeds", errs)
            if configs is None:
                return _broken_group(name, axis, values, line)
        _paper_recorded(own[i], configs[0], f"{fld}.paper", errs)
        points.append(RunPoint(name, value, tuple(configs), {**given, **own[i]}, cell.id))
    return RunGroup(name, axis, tuple(points), line, seeds=tuple(seeds))


def _cells_along_axis(cells: list, axis: str, values: list, fld: str, errs: Problems) -> bool:
    """Cells named along an axis: each has its axis value there, and they differ in nothing else."""
    flat = [flatten(c.configs[0].to_dict()) for c in cells]
    if axis not in flat[0]:
        errs.add(f"{fld.rsplit('.', 1)[0]}.axis.{axis}",
                 unknown_name_message("run-config field", axis, [k for k in flat[0] if k != "train.seed"]))
        return False
    ok = True
    for i, (cell, f, value) in enumerate(zip(cells, flat, values)):
        if not same_value(f[axis], value):
            errs.add(f"{fld}[{i}]", f"cell {cell.id!r} has {axis} = {f[axis]!r}, the axis says {value!r}")
            ok = False
        differ = sorted(k for k in set(f) | set(flat[0]) if k not in (axis, "train.seed") and f.get(k) != flat[0].get(k))
        if differ:
            errs.add(f"{fld}[{i}]", f"cell {cell.id!r} differs from {cells[0].id!r} in {', '.join(differ)}, not only "
                                    f"in the axis {axis}: name cells that vary along the axis alone")
            ok = False
    return ok


def _parse_overrides(raw: Any, fld: str, errs: Problems) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping of dotted fields to values, e.g. optim.lam: 1e-3")
        return {}
    for key in [k for k in raw if not isinstance(k, str)]:
        errs.add(f"{fld}.{key}", "expected a dotted field name, e.g. optim.lam")
    return {k: v for k, v in raw.items() if isinstance(k, str)}


def _parse_axis(raw: Any, fld: str, errs: Problems) -> tuple[str | None, list]:
    """``{optim.lam: [1e-4, 1e-3]}`` -> ("optim.lam", [0.0001, 0.001]); no axis -> (None, [None])."""
    if raw is None:
        return None, [None]
    if not isinstance(raw, dict) or len(raw) != 1 or not isinstance(next(iter(raw)), str):
        errs.add(fld, "expected one field with a list of values, e.g. {optim.lam: [1e-4, 1e-3]}")
        return None, [None]
    axis, values = next(iter(raw.items()))
    if not isinstance(values, list) or not values:
        errs.add(f"{fld}.{axis}", "expected a non-empty list of values")
        return None, [None]
    values = [_axis_number(v) for v in values]
    if len(set(map(repr, values))) != len(values):
        errs.add(f"{fld}.{axis}", f"duplicated values {values}")
    return axis, values


def _axis_number(value: Any) -> Any:
    """Axis values compare as numbers where they are numbers (``1e-4`` is text to PyYAML)."""
    try:
        return parse_number(value)
    except ValueError:
        return value


def _parse_paper(paper: dict, axis: str | None, values: list, fld: str, errs: Problems,
                 simulation: bool) -> list[dict[str, Any]]:
    """The paper's numbers, validated against the metric catalogue, split per axis point."""
    catalogue = metric_catalogue(simulation)
    per_point: list[dict[str, Any]] = [{} for _ in values]
    n = len(values)
    for metric, ref in paper.items():
        mfld = f"{fld}.{metric}"
        if metric not in catalogue:
            errs.add(mfld, unknown_name_message("metric", metric, catalogue))
            continue
        shape = catalogue[metric].shape
        if shape == PER_FEATURE:
            errs.add(mfld, f"{metric} is a per-feature list; the paper gives no such numbers")
            continue
        refs = ref if axis is not None else [ref]
        if axis is not None and (not isinstance(ref, list) or len(ref) != n):
            errs.add(mfld, f"expected a list of {n} values, one per {axis} value")
            continue
        for i, r in enumerate(refs):
            try:
                per_point[i][metric] = ([parse_number(x, text=False) for x in _as_layer_list(r)]
                                        if shape == PER_LAYER else parse_number(r, text=False))
            except ValueError as e:
                what = "a list of per-layer numbers" if shape == PER_LAYER else "one number"
                errs.add(mfld, f"expected {what}{' per axis value' if axis else ''}: {e}")
                break
    return per_point


def _paper_recorded(paper: dict[str, Any], cfg: RunConfig, fld: str, errs: Problems) -> None:
    """The paper's numbers of one point name only what a run of ``cfg`` records: a metric it
    measures, and per-layer lists (C1 first; the paper may stop before the last layer) no longer
    than its network's conv layers."""
    catalogue = metric_catalogue(False)
    for metric, value in paper.items():
        why = unrecorded(catalogue[metric], cfg)
        if why is None and isinstance(value, list) and len(value) > conv_layers(cfg):
            why = (f"{len(value)} per-layer numbers, but {cfg.model.arch} has {conv_layers(cfg)} conv layers "
                   f"(one number per layer, C1 first)")
        if why:
            errs.add(f"{fld}.{metric}", why)


def _as_layer_list(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"got {value!r}")
    return value


def _config_error_field(path: str, fld: str, axis: str | None, nested_set: dict, base_fld: str) -> str:
    """The claim-file field a run-config error comes from: the axis, a `set` override, or the base."""
    if axis and (path == axis or path.startswith(axis + ".") or path.startswith(axis + "[")):
        return f"{fld}.axis.{axis}"
    return config_error_field(path, [(f"{fld}.set", nested_set)], base_fld)


def _broken_group(name: str, axis: str | None, values: list, line: int | None) -> RunGroup:
    """A group whose configs are invalid (already reported): kept without configs, so that checks
    naming it are not also reported as naming an unknown run."""
    return RunGroup(name, axis, tuple(RunPoint(name, v, (), {}) for v in values), line, broken=True)


def _parse_simulation_group(name: str, sim_raw: Any, fld: str, seeds: list[int], paper: dict,
                            errs: Problems) -> RunGroup | None:
    sim, problems = parse_simulation(sim_raw, seeds)
    for sub, message in problems:
        errs.add(f"{fld}.simulate.{sub}" if sub else f"{fld}.simulate", message)
    if sim is None:
        return None
    paper_at = _parse_paper(paper, "lam", list(sim.lams), f"{fld}.paper", errs, simulation=True)
    points = tuple(RunPoint(name, lam, (), paper_at[i]) for i, lam in enumerate(sim.lams))
    return RunGroup(name, "lam", points, errs.source.line(fld), simulate=sim, seeds=tuple(seeds))
