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
        checks:
          - {kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}
      full: ...            # or  full: {not_run: "why there is no such tier"}

Out: ClaimSpec with, per tier, the expanded run points (RunConfig per seed) and the checks. Every
problem of a file is reported at once as a SpecError naming file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.config import ConfigError, RunConfig, deep_merge, dotted_to_nested, parse_run_config, unknown_name_message
from repro.spec.source import Source, SpecError, SpecProblem, display_path, load_source
from repro.spec.paper import PAPER_FILE, find_paper

TIERS = ("smoke", "full")
CLAIM_KEYS = {"id", "title", "claim", "source", "finding", "tiers", "notes"}
TIER_KEYS = {"why", "base", "seeds", "runs", "checks", "not_run", "gate", "gate_reason", "plots"}
RUN_KEYS = {"set", "axis", "paper", "seeds", "simulate"}


@dataclass(frozen=True)
class RunPoint:
    """One point of a run group (one axis value), expanded over seeds."""

    group: str
    axis_value: Any  # None for groups without an axis
    configs: tuple[RunConfig, ...]  # one per seed
    paper: dict[str, Any]  # metric -> the paper's value at this point


@dataclass(frozen=True)
class RunGroup:
    name: str
    axis: str | None
    points: tuple[RunPoint, ...]
    line: int | None
    simulate: Any = None  # a repro.simulate.DecayConfig instead of training (finding 9)

    def point(self, axis_value: Any = None) -> RunPoint:
        for p in self.points:
            if axis_value is None or p.axis_value == axis_value:
                return p
        raise KeyError(axis_value)


@dataclass(frozen=True)
class CheckSpec:
    kind: str
    params: dict[str, Any]
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

    def tier(self, name: str) -> TierSpec:
        if name in self.tiers:
            return self.tiers[name]
        return TierSpec(name, "", {}, (), not_run=f"the claim file defines no {name!r} tier")


class _Collector:
    def __init__(self, source: Source):
        self.source = source
        self.problems: list[SpecProblem] = []

    def add(self, field_path: str, message: str) -> None:
        problem = self.source.problem(field_path, message)
        if problem not in self.problems:  # a bad base field is met once per run group
            self.problems.append(problem)


def load_claim(path: Path, check_kinds: dict[str, Any] | None = None) -> ClaimSpec:
    source = load_source(path)
    errs = _Collector(source)
    spec = _parse_claim(source, errs, check_kinds)
    # --- issue 14: `source.paper` names a document of the folder's paper description (if any).
    if spec is not None and spec.source.get("paper"):
        try:
            paper = find_paper(Path(path).parent)
        except SpecError as e:  # a broken paper.yaml is reported with every claim of its folder
            errs.problems.extend(p for p in e.problems if p not in errs.problems)
        else:
            wrong = paper.check_source(spec.source["paper"]) if paper is not None else None
            if wrong:
                errs.add("source.paper", wrong)
    # --- end issue 14
    if errs.problems:
        raise SpecError(errs.problems)
    assert spec is not None
    return spec


def load_claims(paths: list[Path], check_kinds: dict[str, Any] | None = None) -> list[ClaimSpec]:
    """Load every file; raise one SpecError with the problems of all files (ids must be unique)."""
    specs, problems = [], []
    for p in paths:
        try:
            specs.append(load_claim(p, check_kinds))
        except SpecError as e:
            problems.extend(p for p in e.problems if p not in problems)  # a broken paper.yaml: once
    seen: dict[str, ClaimSpec] = {}
    for s in specs:
        if s.id in seen:
            problems.append(SpecProblem(display_path(s.path), s.line, "id",
                                        f"duplicate claim id {s.id!r} (also in {seen[s.id].path})"))
        seen[s.id] = s
    if problems:
        raise SpecError(problems)
    return specs


def claim_files(root: Path) -> list[Path]:
    """claims/*.yaml, skipping shared bases (files or folders starting with '_') and the paper description."""
    return sorted(p for p in Path(root).glob("*.yaml") if not p.name.startswith("_") and p.name != PAPER_FILE)


def _parse_claim(source: Source, errs: _Collector, check_kinds: dict[str, Any] | None) -> ClaimSpec | None:
    raw = source.data
    if not isinstance(raw, dict):
        errs.add("", "a claim file must be a mapping with id, title, claim, source, tiers")
        return None
    for key in raw:
        if key not in CLAIM_KEYS:
            errs.add(str(key), unknown_name_message("key", key, CLAIM_KEYS))
    for key in ("id", "title", "claim"):
        if not isinstance(raw.get(key), str) or not raw.get(key).strip():
            errs.add(key, "required, a non-empty string")
    src = raw.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("paper"), str) or not isinstance(src.get("where"), str):
        errs.add("source", f"required: {{paper: <a document named in {PAPER_FILE}>, where: <table or figure>}}")
        src = {}
    tiers_raw = raw.get("tiers")
    tiers: dict[str, TierSpec] = {}
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        errs.add("tiers", f"required: a mapping with at least one of {', '.join(TIERS)}")
    else:
        for name, tier_raw in tiers_raw.items():
            if name not in TIERS:
                errs.add(f"tiers.{name}", unknown_name_message("tier", name, TIERS))
                continue
            tier = _parse_tier(name, tier_raw, f"tiers.{name}", errs, check_kinds)
            if tier is not None:
                tiers[name] = tier
    finding = raw.get("finding")
    if finding is not None and (not isinstance(finding, int) or isinstance(finding, bool)):
        errs.add("finding", "expected an integer (the finding's number in the catalogue)")
    return ClaimSpec(
        id=str(raw.get("id", "")),
        title=str(raw.get("title", "")),
        claim=str(raw.get("claim", "")).strip(),
        source={k: str(v) for k, v in src.items()},
        path=source.path,
        line=source.line("id") or 1,
        tiers=tiers,
        finding=finding if isinstance(finding, int) else None,
        notes=str(raw.get("notes", "") or "").strip(),
    )


def _resolve_base(base: Any, fld: str, source: Source, errs: _Collector, depth: int = 0) -> dict:
    """A run-config mapping; ``include: file`` (relative to the claim file) is merged under it."""
    if base is None:
        return {}
    if not isinstance(base, dict):
        errs.add(fld, "expected a mapping (a run config, optionally with include: <file>)")
        return {}
    base = dict(base)
    include = base.pop("include", None)
    if include is None:
        return base
    if depth > 5:
        errs.add(f"{fld}.include", "includes nest too deeply (a cycle?)")
        return base
    inc_path = (source.path.parent / str(include)).resolve()
    try:
        inc = load_source(inc_path)
    except SpecError as e:
        errs.problems.extend(e.problems)
        return base
    if not isinstance(inc.data, dict):
        errs.add(f"{fld}.include", f"{include} must contain a mapping")
        return base
    included = _resolve_base(inc.data, "", inc, errs, depth + 1)
    return deep_merge(included, base)


def _parse_seeds(seeds: Any, default: list[int], fld: str, errs: _Collector) -> list[int]:
    """A tier's or a run group's seeds: a non-empty list of distinct integers."""
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        errs.add(fld, "expected a non-empty list of integers")
        return default
    if len(set(seeds)) != len(seeds):
        errs.add(fld, f"duplicated seeds {seeds}")
    return seeds


def _parse_tier(name: str, raw: Any, fld: str, errs: _Collector, check_kinds: dict[str, Any] | None) -> TierSpec | None:
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping")
        return None
    for key in raw:
        if key not in TIER_KEYS:
            errs.add(f"{fld}.{key}", unknown_name_message("key", key, TIER_KEYS))
    if "not_run" in raw:
        reason = raw["not_run"]
        if not isinstance(reason, str) or not reason.strip():
            errs.add(f"{fld}.not_run", "give the reason this tier is not run, as text")
        extra = set(raw) - {"not_run", "why"}
        if extra:
            errs.add(f"{fld}.{sorted(extra)[0]}", "a tier with not_run has no runs or checks")
        return TierSpec(name, str(raw.get("why", "")), {}, (), not_run=str(reason))
    why = raw.get("why", "")
    if name == "smoke" and (not isinstance(why, str) or not why.strip()):
        errs.add(f"{fld}.why", "a smoke tier must say how and why its analog is scaled")
    base = _resolve_base(raw.get("base"), f"{fld}.base", errs.source, errs)
    seeds = _parse_seeds(raw.get("seeds", [0]), [0], f"{fld}.seeds", errs)
    runs_raw = raw.get("runs")
    groups: dict[str, RunGroup] = {}
    if not isinstance(runs_raw, dict) or not runs_raw:
        errs.add(f"{fld}.runs", "required: a mapping of run names to {set, axis, paper}")
    else:
        for gname, graw in runs_raw.items():
            g = _parse_group(str(gname), graw, f"{fld}.runs.{gname}", base, seeds, errs, f"{fld}.base")
            if g is not None:
                groups[str(gname)] = g
    checks: list[CheckSpec] = []
    checks_raw = raw.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        errs.add(f"{fld}.checks", "required: a non-empty list of checks")
    else:
        for i, craw in enumerate(checks_raw):
            c = _parse_check(craw, f"{fld}.checks[{i}]", groups, errs, check_kinds)
            if c is not None:
                checks.append(c)
    gate = raw.get("gate", True)
    if not isinstance(gate, bool):
        errs.add(f"{fld}.gate", "expected true or false")
        gate = True
    gate_reason = raw.get("gate_reason")
    if gate is False and (not isinstance(gate_reason, str) or not gate_reason.strip()):
        errs.add(f"{fld}.gate_reason", "a claim kept out of the CI gate must state why")
    plots = raw.get("plots", [])
    if not isinstance(plots, list) or not all(isinstance(p, dict) for p in plots):
        errs.add(f"{fld}.plots", "expected a list of mappings")
        plots = []
    return TierSpec(name, str(why).strip(), groups, tuple(checks), None, gate,
                    str(gate_reason).strip() if gate_reason else None, tuple(plots))


def _parse_group(name: str, raw: Any, fld: str, base: dict, tier_seeds: list[int], errs: _Collector,
                 base_fld: str = "base") -> RunGroup | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping with optional set, axis, paper, seeds")
        return None
    for key in raw:
        if key not in RUN_KEYS:
            errs.add(f"{fld}.{key}", unknown_name_message("key", key, RUN_KEYS))
    seeds = _parse_seeds(raw.get("seeds", tier_seeds), tier_seeds, f"{fld}.seeds", errs)
    paper = raw.get("paper") or {}
    if not isinstance(paper, dict):
        errs.add(f"{fld}.paper", "expected a mapping metric -> value (a list for a run with an axis)")
        paper = {}
    if "simulate" in raw:
        return _parse_simulation(name, raw, fld, seeds, paper, errs)
    overrides = raw.get("set") or {}
    if not isinstance(overrides, dict):
        errs.add(f"{fld}.set", "expected a mapping of dotted fields to values, e.g. optim.lam: 1e-3")
        overrides = {}
    for key in [k for k in overrides if not isinstance(k, str)]:
        errs.add(f"{fld}.set.{key}", "expected a dotted field name, e.g. optim.lam")
    overrides = {k: v for k, v in overrides.items() if isinstance(k, str)}
    axis_raw = raw.get("axis")
    axis, values = None, [None]
    if axis_raw is not None:
        if not isinstance(axis_raw, dict) or len(axis_raw) != 1 or not isinstance(next(iter(axis_raw)), str):
            errs.add(f"{fld}.axis", "expected one field with a list of values, e.g. {optim.lam: [1e-4, 1e-3]}")
        else:
            axis, values = next(iter(axis_raw.items()))
            if isinstance(values, list):
                values = [_yaml_number(v) for v in values]
            if not isinstance(values, list) or not values:
                errs.add(f"{fld}.axis.{axis}", "expected a non-empty list of values")
                axis, values = None, [None]
            elif len(set(map(repr, values))) != len(values):
                errs.add(f"{fld}.axis.{axis}", f"duplicated values {values}")
    for metric, ref in paper.items():
        if axis is not None and (not isinstance(ref, list) or len(ref) != len(values)):
            errs.add(f"{fld}.paper.{metric}", f"expected a list of {len(values)} values, one per {axis} value")
        elif axis is None and isinstance(ref, list) and metric not in ("layer_sparsity_gamma", "layer_sparsity_act"):
            errs.add(f"{fld}.paper.{metric}", "expected one value (this run has no axis)")
    points = []
    try:
        nested_set = dotted_to_nested(overrides)
    except ConfigError as e:
        errs.add(f"{fld}.set.{e.path}", e.message)
        return _broken_group(name, axis, values, errs.source.line(fld))
    for i, value in enumerate(values):
        raw_cfg = deep_merge(base, nested_set)
        if axis is not None:
            raw_cfg = deep_merge(raw_cfg, dotted_to_nested({axis: value}))
        configs = []
        for seed in seeds:
            cfg, cerrs = parse_run_config(deep_merge(raw_cfg, {"train": {"seed": seed}}))
            for e in cerrs:
                if axis and _under(e.path, axis):
                    where = f"{fld}.axis.{axis}"
                elif e.path in overrides or _has_path(nested_set, e.path):
                    where = f"{fld}.set.{e.path}"
                else:  # from the tier's base (or a file it includes)
                    where = f"{base_fld}.{e.path}" if e.path else base_fld
                errs.add(where, e.message)
            if cerrs:
                break
            configs.append(cfg)
        if len(configs) != len(seeds):
            return _broken_group(name, axis, values, errs.source.line(fld))
        point_paper = {m: (r[i] if axis is not None and isinstance(r, list) and i < len(r) else r) for m, r in paper.items()}
        points.append(RunPoint(name, value, tuple(configs), point_paper))
    return RunGroup(name, axis, tuple(points), errs.source.line(fld))


def _broken_group(name: str, axis: str | None, values: list, line: int | None) -> RunGroup:
    """A group whose configs are invalid (already reported): kept without configs, so that checks
    naming it are not also reported as naming an unknown run."""
    return RunGroup(name, axis, tuple(RunPoint(name, v, (), {}) for v in values), line)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _has_path(nested: Any, path: str) -> bool:
    node = nested
    for part in path.split("."):
        part = part.split("[", 1)[0]
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _parse_simulation(name: str, raw: dict, fld: str, seeds: list[int], paper: dict, errs: _Collector) -> RunGroup | None:
    sim = raw["simulate"]
    if not isinstance(sim, dict):
        errs.add(f"{fld}.simulate", "expected a mapping of DecayConfig fields")
        return None
    extra = set(raw) - {"simulate", "paper", "seeds"}
    if extra:
        errs.add(f"{fld}.{sorted(extra)[0]}", "a simulation group takes only simulate, paper, seeds")
    from repro.simulate import DecayConfig

    try:
        decay = DecayConfig(**{**sim, "seeds": seeds})
    except (ValueError, TypeError) as e:
        errs.add(f"{fld}.simulate", str(e))
        return None
    for metric, ref in paper.items():
        if not isinstance(ref, list) or len(ref) != len(decay.lams):
            errs.add(f"{fld}.paper.{metric}", f"expected a list of {len(decay.lams)} values, one per lambda")
    points = tuple(
        RunPoint(name, lam, (), {m: r[i] for m, r in paper.items() if isinstance(r, list) and i < len(r)})
        for i, lam in enumerate(decay.lams)
    )
    return RunGroup(name, "lam", points, errs.source.line(fld), simulate=decay)


def _parse_check(raw: Any, fld: str, groups: dict[str, RunGroup], errs: _Collector,
                 check_kinds: dict[str, Any] | None) -> CheckSpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        errs.add(fld, "expected a mapping with a kind")
        return None
    kind = raw["kind"]
    if check_kinds is not None:
        if kind not in check_kinds:
            errs.add(f"{fld}.kind", unknown_name_message("check kind", kind, check_kinds))
            return None
        for problem_field, message in check_kinds[kind].validate(raw, groups):
            errs.add(f"{fld}.{problem_field}" if problem_field else fld, message)
    params = {k: v for k, v in raw.items() if k != "kind"}
    return CheckSpec(kind, params, errs.source.line(fld), fld)



def _yaml_number(value: Any) -> Any:
    """PyYAML reads ``1e-4`` (no dot) as a string; axis values compare as numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
