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
problem of a file is reported at once as a SpecError naming file, line and field. This module reads
the claim and its tiers; a tier's runs are read by claimbench.spec.run_groups, its plots by
claimbench.spec.plots, its checks' parameters by claimbench.spec.checks, and the claim's scope by
claimbench.spec.scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claimbench.config import RunConfig
from claimbench.runconfig import parse_number, unknown_name_message
from claimbench.spec.checks import CHECK_PARAMS, CheckParams, parse_check_params
from claimbench.spec.folder import FOLDER_FILE, use_folder_plugins
from claimbench.spec.paper import PAPER_FILE, find_paper
from claimbench.spec.parsing import Problems, load_all, resolve_base
from claimbench.spec.plots import parse_plots
from claimbench.spec.run_groups import RunGroup, parse_analogs, parse_group, seeds_or_default
from claimbench.spec.scope import (Assumption, OutOfScope, ScopeRegion, parse_assume, parse_no_scope,
                                   parse_out_of_scope, parse_scope)
from claimbench.spec.source import Source, SpecError, SpecProblem, display_path, load_source
from claimbench.spec.table_folder import folder_tables

TIERS = ("smoke", "full")
CLAIM_KEYS = ("id", "title", "claim", "source", "finding", "tiers", "notes", "paper_noise", "scope", "no_scope",
              "out_of_scope", "assume")
SOURCE_KEYS = ("paper", "where")
TIER_KEYS = ("why", "base", "seeds", "runs", "checks", "not_run", "gate", "gate_reason", "plots")
# A claim id names a pytest item and a report page (<id>.md): no path separators, no '..'.
CLAIM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Default seed-to-seed std (metric units, e.g. percentage points) that `claimbench validate
# --against-paper` gives the paper's numbers; see claims/README.md.
PAPER_NOISE = 1.0


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

    @property
    def gates_ci(self) -> bool:
        """Whether this tier's verdict gates CI: it is run, and not kept out of the gate
        (``gate: false`` with its reason)."""
        return self.gate and not self.not_run

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
    analogs = parse_analogs(base.pop("analogs", None), f"{fld}.base.analogs", errs)
    seeds = seeds_or_default(raw.get("seeds", [0]), [0], f"{fld}.seeds", errs)
    runs_raw = raw.get("runs")
    groups: dict[str, RunGroup] = {}
    if not isinstance(runs_raw, dict) or not runs_raw:
        errs.add(f"{fld}.runs", "required: a mapping of run names to {set, axis, paper} or {cell}")
    else:
        for gname, graw in runs_raw.items():
            if not isinstance(gname, str) or not CLAIM_ID.fullmatch(gname) or "@" in gname:
                errs.add(f"{fld}.runs.{gname}", "a run name uses letters, digits, '-', '_' and '.'")
                continue
            g = parse_group(gname, graw, f"{fld}.runs.{gname}", base, seeds, errs, f"{fld}.base", analogs)
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
    if checks and all(c.params.robustness for c in checks):
        errs.add(f"{fld}.checks", "every check is a robustness row: at least one must decide the verdict")
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
    why = str(why).strip()
    # The scaling rules the runs went through, stated with the tier's own reasons on every page
    # that shows them.
    used = {g.analog.name: g.analog for g in groups.values() if g.analog is not None}
    for rule in used.values():
        factors = ", ".join(f"{path} x{factor:g}" for path, factor in rule.scale.items())
        runs = ", ".join(g for g, grp in groups.items() if grp.analog is rule)
        why += f" Scaled by the tier's rule {rule.name!r} ({factors}; runs {runs}): {rule.why}"
    return TierSpec(name, why.strip(), groups, tuple(checks), None, gate,
                    str(gate_reason).strip() if gate_reason else None, tuple(plots))


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
