"""Claim files (claims/*.yaml) -> validated ``ClaimSpec`` records.

In:  YAML files; one claim per file. Layout (see claims/README.md for the full reference):

    id: adam-l2-vs-wd
    title: ...
    claim: "the paper's words"
    source: {paper: cvpr2019, where: Table 1}   # a document of paper.yaml beside the claims
    tiers:
      smoke:
        why: how and why this analog is scaled
        base: {include: _bases/digits.yaml, optim: {...}}   # a run config, may include a file
        seeds: [0, 1, 2]
        runs:
          adam_l2: {set: {optim.regularizer: l2}, paper: {sparsity_gamma: 70}}
          lam_sweep: {axis: {optim.lam: [0, 1e-4, 1e-3]}, paper: {sparsity_gamma: [0, 70, 83]}}
          c10_adam: {cell: "table01/Adam L2 1e-04/CIFAR10"}   # a paper-table cell: its config and numbers
        checks:
          - {kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}
      full: ...            # or  full: {not_run: "why there is no such tier"}

Out: ClaimSpec with, per tier, the expanded run points (RunConfig per seed) and the checks. Every
problem of a file is reported at once as a SpecError naming file, line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claimbench.config import (
    ConfigError,
    RunConfig,
    deep_merge,
    dotted_to_nested,
    parse_number,
    unknown_name_message,
)
from claimbench.spec.checks import CHECK_PARAMS, CheckParams, parse_check_params, same_value
from claimbench.spec.metrics import (PER_FEATURE, PER_LAYER, conv_layers, metric_catalogue,
                                trainer_metric_clash, unrecorded)
from claimbench.spec.folder import FOLDER_FILE, use_folder_plugins
from claimbench.spec.parsing import TABLES_FOLDER, Problems, config_error_field, expand_seeds, flatten, load_all, parse_seeds, resolve_base
from claimbench.spec.scope import (Assumption, OutOfScope, ScopeRegion, parse_assume, parse_no_scope,
                               parse_out_of_scope, parse_scope)
from claimbench.spec.simulation import DecayConfig, parse_simulation
from claimbench.spec.source import Source, SpecError, SpecProblem, display_path, load_source
from claimbench.spec.table_folder import folder_tables
from claimbench.spec.tables import cell_paper, cell_prints
from claimbench.spec.paper import PAPER_FILE, find_paper
from claimbench.spec.plots import parse_plots

TIERS = ("smoke", "full")
CLAIM_KEYS = ("id", "title", "claim", "source", "finding", "tiers", "notes", "paper_noise", "scope", "no_scope",
              "out_of_scope", "assume")
SOURCE_KEYS = ("paper", "where")
TIER_KEYS = ("why", "base", "seeds", "runs", "checks", "not_run", "gate", "gate_reason", "plots")
RUN_KEYS = ("set", "axis", "paper", "seeds", "simulate", "cell")
SIMULATION_RUN_KEYS = ("simulate", "paper", "seeds")
CELL_RUN_KEYS = ("cell", "axis", "paper", "seeds")  # a run that is a paper-table cell (tables/*.yaml)
# A claim id names a pytest item and a report page (<id>.md): no path separators, no '..'.
CLAIM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Default seed-to-seed std (metric units, e.g. percentage points) that `claimbench validate
# --against-paper` gives the paper's numbers; see claims/README.md.
PAPER_NOISE = 1.0


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

    def point(self, axis_value: Any = None) -> RunPoint:
        for p in self.points:
            if axis_value is None or p.axis_value == axis_value:
                return p
        raise KeyError(axis_value)


@dataclass(frozen=True)
class CheckSpec:
    kind: str
    params: CheckParams  # the kind's typed parameter record (claimbench.spec.checks)
    line: int | None
    field_path: str


@dataclass(frozen=True)
class TierSpec:
    name: str
    why: str
    groups: dict[str, RunGroup]
    checks: tuple[CheckSpec, ...]
    not_run: str | None = None
    gate: bool = True
    gate_reason: str | None = None
    plots: tuple[dict, ...] = ()

    def configs(self) -> list[RunConfig]:
        return [c for g in self.groups.values() for p in g.points for c in p.configs]


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    title: str
    claim: str
    source: dict[str, str]
    path: Path
    line: int
    tiers: dict[str, TierSpec] = field(default_factory=dict)
    finding: int | None = None
    notes: str = ""
    paper_noise: float = PAPER_NOISE
    # What the claim's words cover in the paper's tables (claimbench.spec.scope), or why nothing does.
    scope: tuple[ScopeRegion, ...] = ()
    no_scope: str | None = None
    out_of_scope: tuple[OutOfScope, ...] = ()
    assume: tuple[Assumption, ...] = ()
    # Lines of the top-level keys (scope, no_scope, source, ...), for findings about the claim as a
    # whole that the paper's tables reveal (claimbench.check.oracle).
    lines: dict[str, int] = field(default_factory=dict)

    def tier(self, name: str) -> TierSpec:
        if name in self.tiers:
            return self.tiers[name]
        return TierSpec(name, "", {}, (), not_run=f"the claim file defines no {name!r} tier")


def load_claim(path: Path) -> ClaimSpec:
    # Plug-ins the folder names as "module:attribute" are known before its configs are validated.
    use_folder_plugins(Path(path).parent)
    source = load_source(path)
    errs = Problems(source)
    spec = _parse_claim(source, errs)
    # --- `source.paper` names a document of the folder's paper description (if any).
    if spec is not None and spec.source.get("paper"):
        try:
            paper = find_paper(Path(path).parent)
        except SpecError as e:  # a broken paper.yaml is reported with every claim of its folder
            errs.extend(e.problems)
        else:
            wrong = paper.check_source(spec.source["paper"]) if paper is not None else None
            if wrong:
                errs.add("source.paper", wrong)
    if errs.problems:
        raise SpecError(errs.problems)
    assert spec is not None
    return spec


def load_claims(paths: list[Path]) -> list[ClaimSpec]:
    """Load every file; raise one SpecError with the problems of all files (ids must be unique;
    a broken paper.yaml is reported once)."""
    return load_all(paths, load_claim, lambda s: s.id, lambda s, earlier: SpecProblem(
        display_path(s.path), s.line, "id", f"duplicate claim id {s.id!r} (also in {earlier.path})"))


def claim_files(root: Path) -> list[Path]:
    """claims/*.yaml, skipping shared bases (files or folders starting with '_'), the paper
    description and the folder's settings (claimbench.yaml)."""
    return sorted(p for p in Path(root).glob("*.yaml")
                  if not p.name.startswith("_") and p.name not in (PAPER_FILE, FOLDER_FILE))


def _parse_claim(source: Source, errs: Problems) -> ClaimSpec | None:
    raw = source.data
    if not isinstance(raw, dict):
        errs.add("", "a claim file must be a mapping with id, title, claim, source, tiers")
        return None
    errs.unknown_keys(raw, CLAIM_KEYS, "")
    for key in ("id", "title", "claim"):
        if not isinstance(raw.get(key), str) or not raw.get(key).strip():
            errs.add(key, "required, a non-empty string")
    if isinstance(raw.get("id"), str) and raw["id"].strip() and not CLAIM_ID.fullmatch(raw["id"]):
        errs.add("id", f"{raw['id']!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit "
                       "(the id names a report file)")
    src = raw.get("source")
    if not isinstance(src, dict) or not all(isinstance(src.get(k), str) and src.get(k).strip() for k in SOURCE_KEYS):
        errs.add("source", f"required: {{paper: <a document named in {PAPER_FILE}>, where: <table or figure>}}")
        src = src if isinstance(src, dict) else {}
    errs.unknown_keys(src, SOURCE_KEYS, "source")
    noise = raw.get("paper_noise", PAPER_NOISE)
    try:
        noise = float(parse_number(noise, text=False))
        if noise < 0:
            raise ValueError(f"must be >= 0, got {noise:g}")
    except ValueError as e:
        errs.add("paper_noise", f"{e} (the seed std given to the paper's numbers by validate --against-paper)")
        noise = PAPER_NOISE
    tiers_raw = raw.get("tiers")
    tiers: dict[str, TierSpec] = {}
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        errs.add("tiers", f"required: a mapping with at least one of {', '.join(TIERS)}")
    else:
        for name, tier_raw in tiers_raw.items():
            if name not in TIERS:
                errs.add(f"tiers.{name}", unknown_name_message("tier", name, TIERS))
                continue
            tier = _parse_tier(name, tier_raw, f"tiers.{name}", errs)
            if tier is not None:
                tiers[name] = tier
    finding = raw.get("finding")
    if finding is not None and (not isinstance(finding, int) or isinstance(finding, bool)):
        errs.add("finding", "expected an integer (the finding's number in the catalogue)")
    notes = raw.get("notes", "")
    if notes is not None and not isinstance(notes, str):
        errs.add("notes", "expected text")
    scope_keys = ("scope", "out_of_scope", "assume")
    scope_tables = folder_tables(source.path.parent) if any(k in raw for k in scope_keys) else None
    scope = parse_scope(raw.get("scope"), scope_tables, errs)
    no_scope = parse_no_scope(raw.get("no_scope"), errs)
    out_of_scope = parse_out_of_scope(raw.get("out_of_scope"), scope_tables, errs)
    if "scope" in raw and "no_scope" in raw:
        errs.add("no_scope", "a claim has either a scope or a no_scope reason, not both")
    if "out_of_scope" in raw and "no_scope" in raw:
        errs.add("out_of_scope", "a no_scope claim covers no table, so it has no table rows to leave out")
    _scope_overlap(scope, out_of_scope, errs)
    assume = parse_assume(raw.get("assume"), scope_tables, errs)
    return ClaimSpec(
        id=str(raw.get("id", "")),
        title=str(raw.get("title", "")),
        claim=str(raw.get("claim", "")).strip(),
        source={k: str(v) for k, v in src.items() if k in SOURCE_KEYS},
        path=source.path,
        line=source.line("id") or 1,
        tiers=tiers,
        finding=finding if isinstance(finding, int) else None,
        notes=str(notes or "").strip(),
        paper_noise=noise,
        scope=scope,
        no_scope=no_scope,
        out_of_scope=out_of_scope,
        assume=assume,
        lines={k: source.lines[k] for k in (*CLAIM_KEYS, "source.where") if k in source.lines},
    )


def _scope_overlap(scope: tuple[ScopeRegion, ...], out: tuple[OutOfScope, ...], errs: Problems) -> None:
    """A cell both judged by a region and left out of the claim says two things at once."""
    judged = {c.id for region in scope for unit in region.units for c in unit.cells}
    for entry in out:
        both = [c for c in entry.cells if c in judged]
        if both:
            errs.add(entry.field, f"{len(both)} cell(s) both in a scope region and out of scope: "
                                  f"{', '.join(both)}")


def _parse_seeds(seeds: Any, default: list[int], fld: str, errs: Problems) -> list[int]:
    """A tier's or a run group's seeds (``default`` where they are invalid, which is reported)."""
    parsed = parse_seeds(seeds, fld, errs)
    return default if parsed is None else parsed


def _parse_tier(name: str, raw: Any, fld: str, errs: Problems) -> TierSpec | None:
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping")
        return None
    errs.unknown_keys(raw, TIER_KEYS, fld)
    if "not_run" in raw:
        reason = raw["not_run"]
        if not isinstance(reason, str) or not reason.strip():
            errs.add(f"{fld}.not_run", "give the reason this tier is not run, as text")
        extra = set(raw) & set(TIER_KEYS) - {"not_run", "why"}
        if extra:
            errs.add(f"{fld}.{sorted(extra)[0]}", "a tier with not_run has no runs or checks")
        return TierSpec(name, str(raw.get("why", "")), {}, (), not_run=str(reason))
    why = raw.get("why", "")
    if name == "smoke" and (not isinstance(why, str) or not why.strip()):
        errs.add(f"{fld}.why", "a smoke tier must say how and why its analog is scaled")
    base = resolve_base(raw.get("base"), f"{fld}.base", errs)
    seeds = _parse_seeds(raw.get("seeds", [0]), [0], f"{fld}.seeds", errs)
    runs_raw = raw.get("runs")
    groups: dict[str, RunGroup] = {}
    if not isinstance(runs_raw, dict) or not runs_raw:
        errs.add(f"{fld}.runs", "required: a mapping of run names to {set, axis, paper} or {cell}")
    else:
        for gname, graw in runs_raw.items():
            if not isinstance(gname, str) or not CLAIM_ID.fullmatch(gname) or "@" in gname:
                errs.add(f"{fld}.runs.{gname}", "a run name uses letters, digits, '-', '_' and '.'")
                continue
            g = _parse_group(gname, graw, f"{fld}.runs.{gname}", base, seeds, errs, f"{fld}.base")
            if g is not None:
                groups[gname] = g
    checks: list[CheckSpec] = []
    checks_raw = raw.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        errs.add(f"{fld}.checks", "required: a non-empty list of checks")
    else:
        for i, craw in enumerate(checks_raw):
            c = _parse_check(craw, f"{fld}.checks[{i}]", groups, errs)
            if c is not None:
                checks.append(c)
    gate = raw.get("gate", True)
    if not isinstance(gate, bool):
        errs.add(f"{fld}.gate", "expected true or false")
        gate = True
    gate_reason = raw.get("gate_reason")
    if gate is False and (not isinstance(gate_reason, str) or not gate_reason.strip()):
        errs.add(f"{fld}.gate_reason", "a claim kept out of the CI gate must state why")
    if gate is True and gate_reason is not None:
        errs.add(f"{fld}.gate_reason", "only a tier with gate: false takes a gate_reason")
    plots = parse_plots(raw.get("plots", []), f"{fld}.plots", groups, errs)
    return TierSpec(name, str(why).strip(), groups, tuple(checks), None, gate,
                    str(gate_reason).strip() if gate_reason else None, tuple(plots))


# --- run groups ----------------------------------------------------------------------------


def _parse_group(name: str, raw: Any, fld: str, base: dict, tier_seeds: list[int], errs: Problems,
                 base_fld: str) -> RunGroup | None:
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
    seeds = _parse_seeds(raw.get("seeds", tier_seeds), tier_seeds, f"{fld}.seeds", errs)
    paper = raw.get("paper") or {}
    if not isinstance(paper, dict):
        errs.add(f"{fld}.paper", "expected a mapping metric -> value (a list for a run with an axis)")
        paper = {}
    if "cell" in raw and "simulate" not in raw:
        return _parse_cell_group(name, raw, fld, seeds if "seeds" in raw else None, paper, errs)
    if "simulate" in raw:
        return _parse_simulation_group(name, raw["simulate"], fld, seeds, paper, errs)
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
        configs = expand_seeds(raw_cfg, seeds, lambda path: _config_error_field(path, fld, axis, nested_set, base_fld), errs)
        if configs is None:
            return _broken_group(name, axis, values, errs.source.line(fld))
        clash = trainer_metric_clash(configs[0])
        if clash:
            errs.add(_config_error_field("train.trainer", fld, axis, nested_set, base_fld), clash)
        _paper_recorded(paper_at[i], configs[0], f"{fld}.paper", errs)
        points.append(RunPoint(name, value, tuple(configs), paper_at[i]))
    return RunGroup(name, axis, tuple(points), errs.source.line(fld), seeds=tuple(seeds))


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


# --- checks --------------------------------------------------------------------------------


def _parse_check(raw: Any, fld: str, groups: dict[str, RunGroup], errs: Problems) -> CheckSpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        errs.add(fld, "expected a mapping with a kind")
        return None
    kind = raw["kind"]
    if kind not in CHECK_PARAMS:
        errs.add(f"{fld}.kind", unknown_name_message("check kind", kind, CHECK_PARAMS))
        return None
    params, problems = parse_check_params(kind, raw, groups)
    for sub, message in problems:
        errs.add(f"{fld}.{sub}" if sub else fld, message)
    if params is None:
        return None
    return CheckSpec(kind, params, errs.source.line(fld), fld)
