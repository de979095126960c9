"""The paper as an oracle: every full-tier check evaluated on the claim's own paper numbers.

In:  a ClaimSpec (its full tier: run groups with ``paper:`` numbers, and checks).
Out: ``Finding``s, each naming file, line and check field: a check the paper's own numbers fail
     (fatal unless the check states ``paper_fails: <reason>``), a check that cannot fail (fatal),
     a ``paper_fails`` the paper does not need (fatal), and checks that cannot be judged because
     the paper gives no number for what they read (a note).

Noise model (documented in claims/README.md): each run point gets three seeds whose values are
the paper's number plus ``paper_noise`` x z_i, where z is three draws from a standard normal,
seeded by a hash of (claim id, run group, axis value), then centred and scaled to sample std 1:
the seed mean is exactly the paper's number and the seed std exactly ``paper_noise`` (default 1
point). All metrics of one run point share the same z (a seed that is unlucky on test error is
unlucky on the pruned error of the same network too), so checks comparing two metrics of one run
see the paper's difference exactly. Runs of one seed share part of their luck (the data order
and, where the shapes agree, the initial weights), which is why checks pair two runs trained on
the same seeds: z is a draw of the run point's own plus a draw shared by the claim's runs of each
seed (equal variances, so a correlation of 0.5 between two runs of one seed: an assumption between
none and the near-complete sharing some smoke pairs showed), centred and scaled to sample std 1
again. Welch comparisons see each side's noise alone.

Scope (claims/README.md, "Scope"): a claim's ``scope:`` names the region of the paper's tables its
words cover and a statement judged on every row of it, on the paper's printed numbers (no noise:
one number per cell). A row that goes against the statement must be listed under the region's
``exceptions:`` with a reason, and an exception whose row agrees is stale; both are fatal. Each
claim's region sizes and exceptions are reported as notes. Every table the claim touches (a run is
one of its cells, its source names it, a region or an ``out_of_scope`` entry reads it) must have
each cell judged by a region or left out with a reason; ``no_scope`` is refused where a table is
touched; a statement that holds whatever the paper printed, and a region most of whose rows are
exceptions, are fatal.

A check *cannot fail* when it still passes with its two sides swapped (greater/less/layer_pattern:
a <-> b; monotonic: the other direction), or when its tolerance (equal, value, at_most) or bounds
(distribution) cover every value the metric can take.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from claimbench.check.kinds import Observations, evaluate_check
from claimbench.check.verdict import ERROR, REPRODUCED
from claimbench.spec.checks import same_value, selection_range
from claimbench.spec.metrics import RUN_METRICS
from claimbench.spec.claims import CheckSpec, ClaimSpec
from claimbench.spec.run_groups import RunGroup
from claimbench.spec.scope import ScopeException, ScopeRegion, cited_tables, table_rows_left, units_outside
from claimbench.spec.statement import Statement, statement_words
from claimbench.spec.source import SpecProblem, display_path
from claimbench.spec.table_folder import folder_tables
from claimbench.spec.tables import TableCell
from claimbench.spec.units import unit_value

PAPER_SEEDS = 3


@dataclass(frozen=True)
class Finding(SpecProblem):
    """A problem of a claim file (file, line, field, message, as ``claimbench validate`` prints them)
    that the paper's numbers reveal; ``fatal`` ones make the command exit 2, the rest are notes."""

    fatal: bool = True
    # What it is about: "check" (a full-tier check) or "scope" (a claim's region of the tables,
    # what it leaves out, and its statements); the summary counts them apart.
    about: str = "check"


def seed_offsets(*key: Any) -> np.ndarray:
    """Three deterministic offsets with mean 0 and sample std 1 (see the module docstring)."""
    seed = int(hashlib.sha256(repr(key).encode()).hexdigest()[:16], 16)
    return _standardised(np.random.default_rng(seed).standard_normal(PAPER_SEEDS))


def _standardised(z: np.ndarray) -> np.ndarray:
    z = z - z.mean()
    return z / z.std(ddof=1)


def run_offsets(claim: str, group: str, axis_value: Any) -> np.ndarray:
    """A run point's offsets: its own draw plus the draw its claim's runs of each seed share."""
    return _standardised(seed_offsets(claim, group, axis_value) + seed_offsets(claim, "shared by the runs of each seed"))


def paper_observations(spec: ClaimSpec, tier: str = "full") -> Observations:
    """Observations whose per-seed metrics are the paper's numbers under the noise model."""
    t = spec.tier(tier)

    def metrics_for(group: RunGroup, axis_value: Any) -> list[dict]:
        point = next(p for p in group.points if same_value(p.axis_value, axis_value))
        z = run_offsets(spec.id, group.name, axis_value)
        out = []
        for i in range(PAPER_SEEDS):
            noise = spec.paper_noise * float(z[i])
            seed = {m: ([x + noise for x in v] if isinstance(v, list) else v + noise) for m, v in point.paper.items()}
            seed["diverged_at"] = None
            out.append(seed)
        return out

    return Observations(t.groups, metrics_for)


def _swapped(check: CheckSpec) -> CheckSpec | None:
    p = check.params
    if check.kind in ("greater", "less"):
        return dataclasses.replace(check, params=dataclasses.replace(p, a=p.b, b=p.a))
    if check.kind == "layer_pattern":
        return dataclasses.replace(check, params=dataclasses.replace(p, layers=p.than, than=p.layers))
    if check.kind == "monotonic":
        other = "decreasing" if p.direction == "increasing" else "increasing"
        return dataclasses.replace(check, params=dataclasses.replace(p, direction=other))
    return None


def _covers_range(check: CheckSpec, groups: dict) -> str | None:
    p = check.params
    sels = p.selections()
    if not sels:
        return None
    lo, hi = selection_range(next(iter(sels.values())), groups)
    if lo is None or hi is None:
        return None
    width = hi - lo
    if check.kind in ("equal", "value") and p.tolerance >= width:
        return f"tolerance {p.tolerance:g} covers every value of the metric ({lo:g}..{hi:g})"
    if check.kind == "at_most" and p.margin >= width:
        return f"bound {p.margin:g} covers every value of the metric ({lo:g}..{hi:g})"
    if check.kind == "distribution" and (p.min is None or p.min <= lo) and (p.max is None or p.max >= hi):
        return f"bounds min {p.min} / max {p.max} include every value of the metric ({lo:g}..{hi:g})"
    return None


def check_against_paper(spec: ClaimSpec, tier: str = "full") -> list[Finding]:
    findings = _check_findings(spec, tier)
    return findings + scope_findings(spec) if tier == "full" else findings


def _check_findings(spec: ClaimSpec, tier: str) -> list[Finding]:
    t = spec.tier(tier)
    if t.not_run:
        return []
    obs = paper_observations(spec, tier)
    file = display_path(spec.path)
    findings = []

    def add(check: CheckSpec, message: str, fatal: bool) -> None:
        findings.append(Finding(file, check.line, check.field_path, message, fatal))

    for check in t.checks:
        if check.params.robustness:
            continue  # another setting than the claim's: the paper's numbers say nothing of it
        covers = _covers_range(check, t.groups)
        if covers:
            add(check, f"cannot fail: {covers}", True)
        result = evaluate_check(check, obs)
        if result.status == ERROR:
            add(check, f"not judged against the paper: {result.reason} (the paper gives no number for it)", False)
            continue
        stated = check.params.paper_fails
        if result.status == REPRODUCED:
            if stated:
                add(check, f"paper_fails is stated but the paper's numbers pass ({result.arithmetic})", True)
            swapped = _swapped(check)
            if swapped is not None and evaluate_check(swapped, obs).status == REPRODUCED:
                add(check, "cannot fail: it still passes with its two sides swapped", True)
        elif stated:
            add(check, f"the paper's own numbers fail it ({result.status}), as stated: {stated}", False)
        else:
            add(check, f"the paper's own numbers give '{result.status}' (noise std {spec.paper_noise:g}): "
                       f"{result.reason}; {result.arithmetic}", True)
    return findings


# --- scope: every row of the region the claim's words cover ------------------------------------


@dataclass(frozen=True)
class ScopeRow:
    """One row of a region judged on the paper's numbers: the cell an exception would name, the
    metric, the numbers read (as printed) and whether the statement holds there."""

    cell: str
    metric: str
    numbers: str
    holds: bool
    exception: ScopeException | None


def _short(cell: TableCell) -> str:
    return cell.id.split("/", 1)[1]


def _printed(cell: TableCell, metric: str) -> str:
    return cell.paper_text.get(metric) or f"{unit_value(cell, metric):g}"


def _layer_mean(values: list, layers: tuple[int, ...]) -> float:
    return sum(float(values[i - 1]) for i in layers) / len(layers)


def _judge(st: Statement, cells: tuple[TableCell, ...], metric: str) -> tuple[bool, str]:
    """(holds, the numbers in words) for one unit and metric."""
    a = cells[0]
    if st.kind == "layer_pattern":
        values = unit_value(a, metric)
        hi, lo = _layer_mean(values, st.layers), _layer_mean(values, st.than)
        text = (f"{_short(a)}: {metric} mean C{',C'.join(map(str, st.layers))} {hi:.1f} vs "
                f"C{',C'.join(map(str, st.than))} {lo:.1f}")
        return hi - lo > st.margin, text
    x = float(unit_value(a, metric))
    if st.kind == "value":
        return abs(x - st.expected) <= st.tolerance, f"{_short(a)}: {metric} {_printed(a, metric)}"
    if st.kind == "distribution":
        ok = (st.min is None or x >= st.min) and (st.max is None or x <= st.max)
        return ok, f"{_short(a)}: {metric} {_printed(a, metric)}"
    if st.kind == "monotonic":
        b = cells[1]
        y = float(unit_value(b, metric))
        change = (y - x) if st.direction == "increasing" else (x - y)
        return change >= -st.slack, f"{metric} {_printed(a, metric)} ({_short(a)}) -> {_printed(b, metric)} ({_short(b)})"
    if st.b is not None and st.b.metric:
        other, y_text = st.b.metric, _printed(a, st.b.metric)
        y = float(unit_value(a, other))
        text = f"{_short(a)}: {metric} {_printed(a, metric)} vs {other} {y_text}"
    else:
        b = cells[1]
        y = float(unit_value(b, metric))
        text = f"{metric} {_printed(a, metric)} ({_short(a)}) vs {_printed(b, metric)} ({_short(b)})"
    holds = {"greater": lambda: x - y > st.margin, "less": lambda: y - x > st.margin,
             "at_most": lambda: x <= y + st.margin, "equal": lambda: abs(x - y) <= st.tolerance}[st.kind]()
    return holds, text


def outside_rows(region: ScopeRegion, spec: ClaimSpec) -> list[ScopeRow]:
    """The region's statement judged on the rows the claim leaves out of scope (same table, same
    columns) wherever it can be: what the omission hides, shown beside the reason given."""
    tables = folder_tables(spec.path.parent)
    table = tables.tables.get(region.table) if tables else None
    left = {cid for o in spec.out_of_scope if o.table == region.table for cid in o.cells}
    if table is None or not left:
        return []
    rows = []
    for unit in units_outside(region, table, left):
        for metric in region.metrics:
            holds, numbers = _judge(region.statement, unit.cells, metric)
            rows.append(ScopeRow(unit.named.id, metric, numbers, holds, None))
    return rows


def scope_rows(region: ScopeRegion) -> list[ScopeRow]:
    """Every row of the region, judged; each with the exception that names it, if any."""
    listed = {(e.cell, e.metric): e for e in region.exceptions}
    rows = []
    for unit in region.units:
        for metric in region.metrics:
            holds, numbers = _judge(region.statement, unit.cells, metric)
            rows.append(ScopeRow(unit.named.id, metric, numbers, holds, listed.get((unit.named.id, metric))))
    return rows


def cannot_fail(st: Statement, metric: str) -> str | None:
    """Why the statement holds on every row whatever the paper printed (None: it can fail).

    The paper's numbers are moved against the statement as far as the metric goes (a percentage
    from 0 to 100; a metric without a bound as far as needed): a statement that still holds there
    says nothing. ``greater``, ``less`` and ``layer_pattern`` always fail when their two sides are
    exchanged (margins are never negative); the others fail only if their tolerance, slack or
    bounds leave some value of the metric outside."""
    known = RUN_METRICS.get(metric)
    lo, hi = (known.lo, known.hi) if known else (None, None)
    if lo is None or hi is None:
        return None
    span = f"{metric} runs from {lo:g} to {hi:g}"
    if st.kind == "at_most" and hi - lo <= st.margin:
        return f"its margin {st.margin:g} covers every value: {span}"
    if st.kind == "equal" and hi - lo <= st.tolerance:
        return f"its tolerance {st.tolerance:g} covers every value: {span}"
    if st.kind == "value" and max(hi - st.expected, st.expected - lo) <= st.tolerance:
        return f"{st.expected:g} within {st.tolerance:g} covers every value: {span}"
    if st.kind == "distribution" and (st.min is None or st.min <= lo) and (st.max is None or st.max >= hi):
        return f"its bounds (min {st.min}, max {st.max}) include every value: {span}"
    if st.kind == "monotonic" and hi - lo <= st.slack:
        return f"its slack {st.slack:g} covers every step: {span}"
    return None


def _cells_by_row(ids: list[str]) -> str:
    """``table01/Adam L2 1e-02/CIFAR10``, ``.../CIFAR100`` -> ``Adam L2 1e-02 (CIFAR10, CIFAR100)``."""
    rows: dict[str, list[str]] = {}
    for cid in ids:
        parts = cid.split("/")
        rows.setdefault(parts[1], []).extend(parts[2:])
    return "; ".join(f"{r} ({', '.join(c)})" if c else r for r, c in rows.items())


def coverage_findings(spec: ClaimSpec) -> list[Finding]:
    """Every table the claim touches (a run is one of its cells, the claim's source names it, or
    a region or an out_of_scope entry reads it) has each of its rows judged by a region or left out
    with a reason; a claim that touches a table has a scope, and ``no_scope`` only where none is
    touched. The row set comes from the table files, so a row added to a table later is found."""
    tables = folder_tables(spec.path.parent)
    if tables is None:
        return []
    file = display_path(spec.path)
    run_cells = sorted({p.cell for t in spec.tiers.values() for g in t.groups.values() for p in g.points if p.cell})
    by_runs = list(dict.fromkeys(c.split("/", 1)[0] for c in run_cells))
    by_source = cited_tables(spec.source.get("where", ""), spec.source.get("paper", ""), tables)
    touched = list(dict.fromkeys([*by_runs, *by_source, *(r.table for r in spec.scope),
                                  *(o.table for o in spec.out_of_scope)]))
    touched = [t for t in touched if t in tables.tables]

    def why() -> str:
        said = []
        if by_runs:
            said.append(f"its runs are cells of {', '.join(by_runs)} ({', '.join(run_cells[:3])}"
                        + (", ..." if len(run_cells) > 3 else "") + ")")
        if by_source:
            said.append(f"its source.where ({spec.source.get('where')!r}) names {', '.join(by_source)}")
        return " and ".join(said)

    if spec.no_scope is not None:
        if by_runs or by_source:
            return [Finding(file, spec.lines.get("no_scope", spec.line), "no_scope", (
                f"no_scope is for claims no table holds, but {why()}: name the region of those tables the "
                "words cover (scope:) and list the rows they leave out (out_of_scope:)"), True, "scope")]
        return []
    if not spec.scope:
        if by_runs or by_source:
            return [Finding(file, spec.lines.get("source", spec.line), "scope", (
                f"the claim touches the paper's tables ({why()}) but declares no scope: name the region of the "
                "tables its words cover (scope:), or say why none does (no_scope:)"), True, "scope")]
        return []
    covered = {c.id for r in spec.scope for u in r.units for c in u.cells}
    covered |= {cid for o in spec.out_of_scope for cid in o.cells}
    findings = []
    for table_id in touched:
        table = tables.tables[table_id]
        left = table_rows_left(table, covered)
        if left:
            findings.append(Finding(file, spec.lines.get("scope", spec.line), "scope", (
                f"Table {table.number} ({table_id}) has {len(left)} cell(s) in no scope region and not under "
                f"out_of_scope: {_cells_by_row(left)}; judge them in a region, or list them under out_of_scope: "
                "with the reason the claim's words leave them out"), True, "scope"))
    return findings


def scope_findings(spec: ClaimSpec) -> list[Finding]:
    """Rows that go against their region's statement without being listed as exceptions, stale
    exceptions, statements that cannot fail, rows of a touched table that are neither in scope nor
    out of it, a claim on table cells that says nothing of its scope (fatal); and one note per
    claim with the size of its regions, their exceptions and the cells left out."""
    file = display_path(spec.path)
    findings: list[Finding] = coverage_findings(spec)
    total, excepted, can_fail = 0, 0, 0
    for region in spec.scope:
        words = statement_words(region.statement)
        vacuous_any = False
        for metric in region.metrics:
            vacuous = cannot_fail(region.statement, metric)
            vacuous_any = vacuous_any or bool(vacuous)
            if vacuous:
                findings.append(Finding(file, region.line, f"{region.field}.statement", (
                    f"cannot fail: \"{region.statement.description}\" ({words}) holds whatever the paper printed, "
                    f"since {vacuous}; tighten it to what the words say"), True, "scope"))
        can_fail += not vacuous_any
        rows = scope_rows(region)
        against = sum(not r.holds for r in rows)
        if against * 2 > len(rows):
            # An exception is a row the words do not reach; when most rows are, the words are wrong.
            findings.append(Finding(file, region.line, region.field, (
                f"{against} of the region's {len(rows)} rows go against the statement "
                f"\"{region.statement.description}\": where most rows go against the words, narrow the words "
                "(claim, title, the statement's description) to what the rows show, never the rows"), True, "scope"))
        for row in rows:
            total += 1
            if not row.holds and row.exception is None:
                findings.append(Finding(file, region.line, region.field, (
                    f"Table {region.table_number} row {row.cell!r} goes against the statement "
                    f"\"{region.statement.description}\" ({words}): {row.numbers}; list it under exceptions with a "
                    f"reason (- {{cell: \"{row.cell}\", metric: {row.metric}, reason: ...}}), or narrow the claim's "
                    "wording"), True, "scope"))
            elif row.holds and row.exception is not None:
                e = row.exception
                findings.append(Finding(file, e.line, e.field, (
                    f"stale exception: the paper's numbers agree with the statement here ({row.numbers}); "
                    "remove it"), True, "scope"))
            excepted += row.exception is not None
        hidden = [r for r in outside_rows(region, spec) if not r.holds]
        if hidden:
            shown = "; ".join(r.numbers for r in hidden[:4]) + ("; ..." if len(hidden) > 4 else "")
            findings.append(Finding(file, region.line, region.field, (
                f"outside the region, {len(hidden)} out-of-scope row(s) go against \"{region.statement.description}\": "
                f"{shown} (left out with the reasons under out_of_scope)"), False, "scope"))
    if spec.scope:
        left_out = len({cid for o in spec.out_of_scope for cid in o.cells})
        findings.append(Finding(file, spec.line, "scope", (
            f"{len(spec.scope)} region(s), {total} rows judged on the paper's numbers, {excepted} exception(s), "
            f"{left_out} cell(s) out of scope; {can_fail} of {len(spec.scope)} statement(s) fail when the paper's "
            "numbers are moved against them"), False, "scope"))
    return findings
