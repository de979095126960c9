"""What a claim's words cover in the paper's tables: ``scope:``, ``no_scope:`` and ``assume:``.

In:  the raw ``scope`` / ``no_scope`` / ``assume`` values of a claim file and the tables beside
     its folder (claimbench.spec.tables). Layout (claims/README.md, "Scope" is the reference):

    scope:
      - table: table01                             # a table file of tables/, without .yaml
        rows: {group: [Adam, SGD], label: "L2 *"}  # printed group / label; `*` is a wildcard
        columns: [CIFAR10]                         # default: every column group
        metrics: [sparsity_gamma, sparsity_act]    # numbers the table prints
        statement: {kind: monotonic, along: optim.lam, direction: increasing, slack: 2,
                    description: "sparsity rises with lambda"}
        exceptions:
          - {cell: "table01/Adam L2 1e-02/CIFAR10", metric: sparsity_act, reason: "..."}
    out_of_scope:                                  # rows of a touched table the words leave out
      - {table: table01, rows: {group: Adagrad}, columns: [CIFAR100], reason: "..."}
    no_scope: why no table holds what the claim says        # instead of scope
    assume:
      - {text: the setting assumed, reason: why, cells: ["table07/..."]}   # cells optional

Out: ``ScopeRegion`` records whose *units* are resolved here: a cell (kinds judged on one
     cell), a cell and its partner (``b: {set: ...}`` or ``b: {row: ...}``), or one step along an
     axis (``monotonic``), each with the cell an exception names. Everything that depends only on
     the files (unknown keys, tables, rows, columns, metrics, partners, numbers the paper does not
     print, exceptions naming a row outside the region, a selector combination no row has) is a
     problem reported here, at file:line; ``OutOfScope`` records the cells a claim leaves out and
     why. Whether the paper's numbers agree with the statement, whether it can fail, and whether
     every row of a touched table is judged or left out are judged by ``claimbench.check.oracle``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from claimbench.config import ConfigError
from claimbench.runconfig import dotted_to_nested, parse_number, unknown_name_message
from claimbench.spec.checks import same_value
from claimbench.spec.parsing import Problems, flatten
from claimbench.spec.tables import FolderTables, TableCell, TableSpec, cell_paper

REGION_KEYS = ("table", "rows", "columns", "metrics", "statement", "exceptions")
OUT_OF_SCOPE_KEYS = ("table", "rows", "columns", "reason")
ROWS_KEYS = ("group", "label")
EXCEPTION_KEYS = ("cell", "metric", "reason")
ASSUME_KEYS = ("text", "reason", "cells")
PARTNER_KEYS = ("metric", "row", "set")
DIRECTIONS = ("increasing", "decreasing")
# Statement kinds: the check kinds' names and parameters, judged on one row of the paper's table
# at a time (no seeds, no noise: the paper prints one number per cell). Value: (required, optional).
STATEMENT_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "greater": (("b",), ("margin",)),
    "less": (("b",), ("margin",)),
    "at_most": (("b",), ("margin",)),
    "equal": (("b", "tolerance"), ()),
    "value": (("expected", "tolerance"), ()),
    "distribution": ((), ("min", "max")),
    "monotonic": (("along", "direction"), ("along_with", "slack")),
    "layer_pattern": (("layers", "than"), ("margin",)),
}
COMMON_KEYS = ("kind", "description")


@dataclass(frozen=True)
class Partner:
    """What a row is compared with: another metric of the same cell, a fixed row of the table
    (same column), or the cell whose configuration is the row's with ``set`` fields changed."""

    metric: str | None = None
    row: str | None = None
    set: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        if self.metric:
            return f"its {self.metric}"
        if self.row:
            return f"row {self.row!r}"
        return "the same row with " + ", ".join(f"{k} = {v}" for k, v in self.set)


@dataclass(frozen=True)
class Statement:
    kind: str
    description: str
    b: Partner | None = None
    margin: float = 0.0
    tolerance: float | None = None
    expected: float | None = None
    min: float | None = None
    max: float | None = None
    along: str | None = None
    along_with: tuple[str, ...] = ()
    direction: str | None = None
    slack: float = 0.0
    layers: tuple[int, ...] = ()
    than: tuple[int, ...] = ()


@dataclass(frozen=True)
class Unit:
    """One row of a region: the cells the statement reads (a cell; a cell and its partner; or
    the two ends of a step along the axis, in axis order) and the cell an exception names (the
    cell itself, or the step's far end)."""

    cells: tuple[TableCell, ...]
    named: TableCell


@dataclass(frozen=True)
class ScopeException:
    cell: str
    metric: str
    reason: str
    line: int | None
    field: str


@dataclass(frozen=True)
class ScopeRegion:
    table: str  # the table file's stem
    table_number: str  # as the paper numbers it
    rows: str  # how rows were chosen, in words (for reports)
    columns: tuple[str, ...]
    metrics: tuple[str, ...]
    statement: Statement
    units: tuple[Unit, ...]
    exceptions: tuple[ScopeException, ...]
    line: int | None
    field: str

    @property
    def size(self) -> int:
        """Rows the statement is judged on: every unit, once per metric."""
        return len(self.units) * len(self.metrics)


@dataclass(frozen=True)
class OutOfScope:
    """Cells of a table the claim's words do not cover, chosen like a region's, and why: leaving
    a row out of a claim is a decision the page shows, never a silence."""

    table: str
    table_number: str
    rows: str  # how rows were chosen, in words (for reports)
    columns: tuple[str, ...]  # as the entry names them; () for every column
    cells: tuple[str, ...]  # cell ids
    reason: str
    line: int | None
    field: str


@dataclass(frozen=True)
class Assumption:
    """A setting the paper does not state, the value used, and why (shown on the claim's page and
    beside each named cell on its table's page)."""

    text: str
    reason: str
    cells: tuple[str, ...]
    line: int | None


# --- parsing -------------------------------------------------------------------------------


def parse_no_scope(raw: Any, errs: Problems) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        errs.add("no_scope", "expected text: why no region of the paper's tables holds what this claim says")
        return None
    return " ".join(raw.split())


def _entries(raw: Any, fld: str, expected: str, errs: Problems) -> list:
    """A non-empty list at ``fld`` (absent: empty), else the problem and an empty list."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        errs.add(fld, f"expected {expected}")
        return []
    return raw


def parse_assume(raw: Any, tables: FolderTables | None, errs: Problems) -> tuple[Assumption, ...]:
    raw = _entries(raw, "assume", "a list of {text, reason, cells} entries: settings the paper does not state", errs)
    out = []
    for i, entry in enumerate(raw):
        fld = f"assume[{i}]"
        if not isinstance(entry, dict):
            errs.add(fld, "expected a mapping {text, reason, cells}")
            continue
        errs.unknown_keys(entry, ASSUME_KEYS, fld, "key of an assumption")
        text, reason = _text(entry, "text", fld, errs), _text(entry, "reason", fld, errs)
        cells = entry.get("cells", [])
        if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
            errs.add(f"{fld}.cells", "expected a list of table cells, e.g. [\"table07/CIFAR 10, Adam L2:1e-4 B: 40\"]")
            cells = []
        for j, ref in enumerate(cells):
            problem = _cell_problem(ref, tables)
            if problem:
                errs.add(f"{fld}.cells[{j}]", problem)
        if text and reason:
            out.append(Assumption(text, reason, tuple(cells), errs.source.line(fld)))
    return tuple(out)


def _cell_problem(ref: str, tables: FolderTables | None) -> str | None:
    if tables is None:
        return "there is no tables/ folder beside this claim file, so no table cell to name"
    table = tables.tables.get(ref.split("/", 1)[0])
    if table is not None and any(c.id == ref for c in table.cells):
        return None
    _cell, problem = tables.find_cell(ref)
    return problem


def parse_scope(raw: Any, tables: FolderTables | None, errs: Problems) -> tuple[ScopeRegion, ...]:
    raw = _entries(raw, "scope", "a list of regions, each {table, rows, columns, metrics, statement, exceptions}", errs)
    if not raw:
        return ()
    if tables is None:
        errs.add("scope", "there is no tables/ folder beside this claim file, so no table to scope")
        return ()
    regions = []
    for i, entry in enumerate(raw):
        region = _parse_region(entry, f"scope[{i}]", tables, errs)
        if region is not None:
            regions.append(region)
    return tuple(regions)


def parse_out_of_scope(raw: Any, tables: FolderTables | None, errs: Problems) -> tuple[OutOfScope, ...]:
    raw = _entries(raw, "out_of_scope", "a list of {table, rows, columns, reason}: rows of a table the claim's "
                                        "words do not cover, and why", errs)
    if not raw:
        return ()
    if tables is None:
        errs.add("out_of_scope", "there is no tables/ folder beside this claim file, so no table row to leave out")
        return ()
    out = []
    for i, entry in enumerate(raw):
        fld = f"out_of_scope[{i}]"
        if not isinstance(entry, dict):
            errs.add(fld, "expected a mapping {table, rows, columns, reason}")
            continue
        errs.unknown_keys(entry, OUT_OF_SCOPE_KEYS, fld, "key of an out_of_scope entry")
        table = _table(entry.get("table"), f"{fld}.table", tables, errs)
        reason = _text(entry, "reason", fld, errs)
        if table is None:
            continue
        columns = _columns(entry.get("columns"), table, f"{fld}.columns", errs)
        chosen, rows_text = _rows(entry.get("rows"), table, f"{fld}.rows", errs, columns)
        if columns is None or chosen is None or not reason:
            continue
        cells = tuple(c.id for c in table.cells if not c.reference and c.row in chosen
                      and c.column in (columns or (None,)))
        named = tuple(columns or ()) if "columns" in entry else ()  # as written: pages show what was chosen
        out.append(OutOfScope(table.id, table.number, rows_text, named, cells, reason, errs.source.line(fld), fld))
    return tuple(out)


def _table(table_id: Any, fld: str, tables: FolderTables, errs: Problems) -> TableSpec | None:
    if not isinstance(table_id, str) or not table_id:
        errs.add(fld, "required: a table of tables/, by its file name without .yaml (e.g. table01)")
        return None
    if table_id in tables.broken:
        errs.add(fld, f"table {table_id!r} has problems (`claimbench validate` lists them)")
        return None
    table = tables.tables.get(table_id)
    if table is None:
        errs.add(fld, unknown_name_message("table", table_id, tables.tables))
    return table


def _text(raw: dict, key: str, fld: str, errs: Problems) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or not v.strip():
        errs.add(f"{fld}.{key}", "required, non-empty text")
        return ""
    return " ".join(v.split())


def _names(v: Any) -> list[str] | None:
    if isinstance(v, str) and v.strip():
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return list(v)
    return None


def _pattern(text: str) -> re.Pattern:
    """A printed group or label; ``*`` stands for any text (nothing else is special: labels
    hold brackets, e.g. ``Li et al. [13]``)."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")) + r"\Z")


def _parse_region(raw: Any, fld: str, tables: FolderTables, errs: Problems) -> ScopeRegion | None:
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping {table, rows, columns, metrics, statement, exceptions}")
        return None
    errs.unknown_keys(raw, REGION_KEYS, fld, "key of a scope region")
    table = _table(raw.get("table"), f"{fld}.table", tables, errs)
    if table is None:
        return None
    table_id = table.id
    ok = True
    columns = _columns(raw.get("columns"), table, f"{fld}.columns", errs)
    chosen, rows_text = _rows(raw.get("rows"), table, f"{fld}.rows", errs, columns)
    if columns is None or chosen is None:
        ok = False
    statement = _statement(raw.get("statement"), f"{fld}.statement", table, errs)
    metrics = _metrics(raw.get("metrics"), table, statement, f"{fld}.metrics", errs)
    if statement is None or metrics is None or not ok:
        return None
    cells = [c for c in table.cells if c.row in chosen and c.column in (columns or (None,))]
    if not cells:
        errs.add(f"{fld}.rows", f"no cell of {table_id} is in both the rows and the columns chosen")
        return None
    units = _units(cells, table, statement, f"{fld}.statement", errs)
    if units is None:
        return None
    if not _printed(units, metrics, statement, fld, errs):
        return None
    exceptions = _exceptions(raw.get("exceptions"), units, metrics, f"{fld}.exceptions", errs)
    return ScopeRegion(table_id, table.number, rows_text, tuple(columns or ()), tuple(metrics), statement,
                       tuple(units), exceptions, errs.source.line(fld), fld)


def _columns(v: Any, table: TableSpec, fld: str, errs: Problems) -> list[str] | None:
    if v is None:
        return list(table.columns)
    if not table.columns:
        errs.add(fld, f"{table.id} has no column groups")
        return None
    names = _names(v)
    if names is None:
        errs.add(fld, f"expected a list of column groups of {table.id}: {', '.join(table.columns)}")
        return None
    for name in names:
        if name not in table.columns:
            errs.add(fld, unknown_name_message(f"column of {table.id}", name, table.columns))
            return None
    return names


def _rows(v: Any, table: TableSpec, fld: str, errs: Problems,
          columns: list[str] | None = None) -> tuple[set[str] | None, str]:
    """The rows (``group label`` as cells name them) a selector keeps; reference rows (another
    method's numbers) are never in a region. A selector means every combination of its parts: a
    group and a label (and a column) that no cell has together is an error naming the combination,
    not a smaller region judged in silence."""
    measured = {c.row for c in table.cells if not c.reference}
    every = [(g, label) for g, label in table.rows if f"{g} {label}".strip() in measured]
    if v is None:
        return {f"{g} {label}".strip() for g, label in every}, "every row"
    if not isinstance(v, dict) or not v:
        errs.add(fld, "expected {group: [...], label: [...]} (printed names; `*` matches any text)")
        return None, ""
    errs.unknown_keys(v, ROWS_KEYS, fld, "row selector")
    parts: list[list[str | None]] = []
    words = []
    for key, index in (("group", 0), ("label", 1)):
        if key not in v:
            parts.append([None])
            continue
        names = _names(v[key])
        if names is None:
            errs.add(f"{fld}.{key}", "expected a printed name or a list of them")
            return None, ""
        for name in names:
            if not any(_pattern(name).match(row[index]) for row in every):
                printed = sorted({row[index] for row in every})
                errs.add(f"{fld}.{key}", unknown_name_message(f"{key} of {table.id}", name, printed)
                         + " (reference rows, another method's numbers, are never in a scope)")
                return None, ""
        parts.append(list(names))
        words.append(f"{key} {' / '.join(names)}")
    cells = {(c.row, c.column) for c in table.cells if not c.reference}
    wanted_columns = list(columns) if columns else [None]
    chosen: list[tuple[str, str]] = []
    missing = []
    for group in parts[0]:
        for label in parts[1]:
            rows = [r for r in every if (group is None or _pattern(group).match(r[0]))
                    and (label is None or _pattern(label).match(r[1]))]
            for column in wanted_columns:
                if not any(row == f"{g} {lab}".strip() and column in (None, col)
                           for g, lab in rows for row, col in cells):
                    missing.append(" x ".join(x for x in (group, label, column) if x is not None))
            chosen += [r for r in rows if r not in chosen]
    if missing:
        errs.add(fld, f"{table.id} has no row for {len(missing)} combination(s) the selector names: "
                      f"{'; '.join(missing)} (a region means every combination of its parts: "
                      "split it into regions that exist)")
        return None, ""
    return {f"{g} {label}".strip() for g, label in chosen}, "; ".join(words)


def _metrics(v: Any, table: TableSpec, statement: Statement | None, fld: str, errs: Problems) -> list[str] | None:
    names = _names(v)
    if names is None:
        errs.add(fld, f"required: the metrics the statement reads, of those {table.id} prints")
        return None
    per_layer = statement is not None and statement.kind == "layer_pattern"
    printed = sorted({m.split("[", 1)[0] for m in table.metrics} if per_layer else set(table.metrics))
    for name in names:
        if name not in printed:
            errs.add(fld, unknown_name_message(f"{'per-layer ' if per_layer else ''}metric printed by {table.id}",
                                               name, printed))
            return None
    if len(set(names)) != len(names):
        errs.add(fld, "a metric is listed twice")
        return None
    if statement is not None and statement.b is not None and statement.b.metric:
        if statement.b.metric not in table.metrics:
            errs.add(fld.rsplit(".", 1)[0] + ".statement.b.metric",
                     unknown_name_message(f"metric printed by {table.id}", statement.b.metric, table.metrics))
            return None
    return names


def _number(raw: dict, key: str, fld: str, errs: Problems, non_negative: bool = False) -> float | None:
    try:
        x = float(parse_number(raw[key], text=False))
    except ValueError as e:
        errs.add(f"{fld}.{key}", str(e))
        return None
    if non_negative and x < 0:
        errs.add(f"{fld}.{key}", f"expected a number >= 0, got {raw[key]!r}")
        return None
    return x


def _layer_list(raw: dict, key: str, fld: str, errs: Problems) -> tuple[int, ...] | None:
    v = raw[key]
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
        errs.add(f"{fld}.{key}", f"expected a non-empty list of 1-based conv layer numbers, got {v!r}")
        return None
    return tuple(v)


def _statement(raw: Any, fld: str, table: TableSpec, errs: Problems) -> Statement | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        errs.add(fld, f"required: a mapping with a kind ({', '.join(STATEMENT_KINDS)}) and a description")
        return None
    kind = raw["kind"]
    if kind not in STATEMENT_KINDS:
        errs.add(f"{fld}.kind", unknown_name_message("statement kind", kind, STATEMENT_KINDS))
        return None
    required, optional = STATEMENT_KINDS[kind]
    errs.unknown_keys(raw, (*COMMON_KEYS, *required, *optional), fld, f"parameter of a {kind} statement")
    n = len(errs.problems)
    for key in required:
        if key not in raw:
            errs.add(f"{fld}.{key}", f"required by statement kind {kind!r}")
    description = _text(raw, "description", fld, errs)
    values: dict[str, Any] = {}
    for key in ("margin", "tolerance", "slack"):
        if key in raw:
            values[key] = _number(raw, key, fld, errs, non_negative=True)
    for key in ("expected", "min", "max"):
        if key in raw:
            values[key] = _number(raw, key, fld, errs)
    if kind == "distribution" and "min" not in raw and "max" not in raw:
        errs.add(fld, "give min and/or max")
    if values.get("min") is not None and values.get("max") is not None and values["min"] > values["max"]:
        errs.add(f"{fld}.min", f"min {values['min']:g} > max {values['max']:g}")
    if "direction" in raw and raw["direction"] not in DIRECTIONS:
        errs.add(f"{fld}.direction", unknown_name_message("direction", raw["direction"], DIRECTIONS))
    for key in ("along",):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            errs.add(f"{fld}.{key}", "expected a dotted run-config field, e.g. optim.lam")
    along_with = raw.get("along_with", [])
    if not isinstance(along_with, list) or not all(isinstance(x, str) for x in along_with):
        errs.add(f"{fld}.along_with", "expected a list of dotted run-config fields that change together with along")
        along_with = []
    for key in ("layers", "than"):
        if key in raw:
            values[key] = _layer_list(raw, key, fld, errs)
    if values.get("layers") and values.get("than") and set(values["layers"]) & set(values["than"]):
        errs.add(f"{fld}.than", f"layers {sorted(set(values['layers']) & set(values['than']))} are on both sides")
    partner = _partner(raw["b"], f"{fld}.b", table, errs) if "b" in raw else None
    if len(errs.problems) > n or (kind in ("greater", "less", "at_most", "equal") and partner is None):
        return None
    return Statement(kind, description, partner, values.get("margin") or 0.0, values.get("tolerance"),
                     values.get("expected"), values.get("min"), values.get("max"), raw.get("along"),
                     tuple(along_with), raw.get("direction"), values.get("slack") or 0.0,
                     values.get("layers") or (), values.get("than") or ())


def _partner(raw: Any, fld: str, table: TableSpec, errs: Problems) -> Partner | None:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in PARTNER_KEYS:
        if isinstance(raw, dict):
            errs.unknown_keys(raw, PARTNER_KEYS, fld, "partner key")
        errs.add(fld, "expected one of {metric: <another metric of the same cell>}, {row: <a row of the table>}, "
                      "{set: {<dotted field>: <value>}} (the cell whose configuration is this row's with those changed)")
        return None
    key, v = next(iter(raw.items()))
    if key == "metric":
        if not isinstance(v, str) or not v:
            errs.add(f"{fld}.metric", "expected a metric name")
            return None
        return Partner(metric=v)
    if key == "row":
        rows = [f"{g} {label}".strip() for g, label in table.rows]
        if v not in rows:
            errs.add(f"{fld}.row", unknown_name_message(f"row of {table.id}", v, rows))
            return None
        return Partner(row=v)
    if not isinstance(v, dict) or not v or not all(isinstance(k, str) for k in v):
        errs.add(f"{fld}.set", "expected a mapping of dotted fields to values, e.g. {optim.regularizer: wd}")
        return None
    return Partner(set=tuple(v.items()))


# --- which tables a claim touches -------------------------------------------------------------


def cited_tables(where: str, paper: str, tables: FolderTables) -> list[str]:
    """The table files a claim's ``source.where`` names: "Table 1" of the claim's document, or of
    the supplement where the clause says "supplement" ("section 6; supplement section 1, Table
    2"); a parenthesis ("(arXiv 1811.12495: Table 6)") gives another document's numbering of the
    same table and is skipped."""
    from claimbench.spec.paper import cited

    found: list[str] = []
    for clause in re.sub(r"\([^)]*\)", "", where).split(";"):
        supplement = "supplement" in clause.lower()
        for citation in cited(clause):
            if not citation.startswith("Table"):
                continue
            for table in tables.tables.values():
                doc = table.source.get("paper", "")
                same_doc = ("supplement" in doc) if supplement and "supplement" not in paper else doc == paper
                if same_doc and citation in cited(table.source.get("where", "")) and table.id not in found:
                    found.append(table.id)
    return found


def table_rows_left(table: TableSpec, covered: set[str]) -> list[str]:
    """The table's cells (reference rows aside: another method's numbers are never a claim's) that
    ``covered`` lacks, as their ids."""
    return [c.id for c in table.cells if not c.reference and c.id not in covered]


# --- units: the rows a statement is judged on ------------------------------------------------


# Flattened configurations by config object: a region pairs every cell with every other, and the
# tables (so their config objects) are loaded once per folder state (claimbench.spec.tables).
_FLAT_CACHE: dict[int, tuple[Any, dict[str, Any]]] = {}


def _config(cell: TableCell) -> dict[str, Any]:
    """A cell's configuration as dotted fields, its seed left out (cells differ in seeds only
    where the paper trained a different number of runs). A copy: callers may change it."""
    cfg = cell.configs[0]
    cached = _FLAT_CACHE.get(id(cfg))
    if cached is None or cached[0] is not cfg:
        flat = flatten(cfg.to_dict())
        flat.pop("train.seed", None)
        cached = _FLAT_CACHE[id(cfg)] = (cfg, flat)
    return dict(cached[1])


def _same(a: dict, b: dict, skip: set[str] = frozenset()) -> bool:
    keys = (set(a) | set(b)) - skip
    return all(k in a and k in b and same_value(a[k], b[k]) for k in keys)


def _units(cells: list[TableCell], table: TableSpec, st: Statement, fld: str, errs: Problems) -> list[Unit] | None:
    if st.kind == "monotonic":
        return _steps(cells, st, fld, errs)
    if st.b is None or st.b.metric:
        return [Unit((c,), c) for c in cells]
    units = []
    for cell in cells:
        partner = _find_partner(cell, table, st.b, f"{fld}.b", errs)
        if partner is None:
            return None
        if partner.id == cell.id:
            errs.add(f"{fld}.b", f"the partner of {cell.id!r} is the cell itself")
            return None
        units.append(Unit((cell, partner), cell))
    return units


def _find_partner(cell: TableCell, table: TableSpec, b: Partner, fld: str, errs: Problems) -> TableCell | None:
    if b.row:
        found = next((c for c in table.cells if c.row == b.row and c.column == cell.column), None)
        if found is None:
            errs.add(f"{fld}.row", f"{table.id} has no cell {b.row!r} in column {cell.column}")
        return found
    try:
        changed = dotted_to_nested(dict(b.set))
    except ConfigError as e:
        errs.add(f"{fld}.set.{e.path}", e.message)
        return None
    want = _config(cell)
    for k, v in flatten(changed).items():
        if k not in want:
            errs.add(f"{fld}.set.{k}", unknown_name_message("run-config field", k, sorted(want)))
            return None
        want[k] = v
    found = [c for c in table.cells if c.configs and _same(_config(c), want)]
    if len(found) != 1:
        errs.add(f"{fld}.set", f"{table.id} has no cell with the configuration of {cell.id!r} with "
                               f"{', '.join(f'{k} = {v}' for k, v in b.set)}: leave that row out of the region, "
                               "or name its partner with row:")
        return None
    return found[0]


def _steps(cells: list[TableCell], st: Statement, fld: str, errs: Problems) -> list[Unit] | None:
    """Cells that differ only in ``along`` (and ``along_with``) form a series, ordered by the
    ``along`` value; each step between neighbours is one unit."""
    assert st.along is not None
    skip = {st.along, *st.along_with}
    series: list[list[TableCell]] = []
    for cell in cells:
        flat = _config(cell)
        for name in skip:
            if name not in flat:
                errs.add(f"{fld}.{'along' if name == st.along else 'along_with'}",
                         unknown_name_message("run-config field", name, sorted(flat)))
                return None
        for s in series:
            if _same(_config(s[0]), flat, skip):
                s.append(cell)
                break
        else:
            series.append([cell])
    units = []
    for s in series:
        values = [_config(c)[st.along] for c in s]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            errs.add(f"{fld}.along", f"{st.along} is not a number in {s[0].id!r}: a monotonic statement orders "
                                     "cells by a number")
            return None
        ordered = sorted(zip(values, range(len(s))), key=lambda x: x[0])
        for (v1, i), (v2, j) in zip(ordered, ordered[1:]):
            if same_value(v1, v2):
                errs.add(f"{fld}.along", f"cells {s[i].id!r} and {s[j].id!r} differ in nothing the statement "
                                         f"orders by ({st.along} = {v1}): add the field that separates them to "
                                         "along_with, or leave one out")
                return None
            units.append(Unit((s[i], s[j]), s[j]))
    if not units:
        errs.add(f"{fld}.along", f"no two cells of the region differ only in {st.along}: there is no step to judge")
        return None
    return units


def units_outside(region: ScopeRegion, table: TableSpec, cell_ids: set[str]) -> list[Unit]:
    """Units the region's statement would have on cells it leaves out (``cell_ids``, in the
    region's row groups and columns): each cell with its partner, or, for a monotonic statement, the steps that
    the left-out cells add to the region's series. Cells the statement cannot be judged on (no
    partner, a number not printed) are skipped: this shows what an omission hides, it is no rule."""
    from claimbench.spec.source import Source

    quiet = Problems(Source(table.path, None))
    st = region.statement
    inside = {c.id for u in region.units for c in u.cells}
    # Only the groups the region judges ("Adam" rows when it judges Adam at one lambda): a
    # statement about one optimizer says nothing of another's rows.
    group_of = {f"{g} {label}".strip(): g for g, label in table.rows}
    groups = {group_of.get(u.named.row) for u in region.units}
    outside = [c for c in table.cells if c.id in cell_ids and c.id not in inside and not c.reference
               and c.configs and group_of.get(c.row) in groups
               and (not region.columns or c.column in region.columns)]
    if not outside:
        return []
    if st.kind == "monotonic":
        series_cells = [c for c in table.cells if c.id in inside] + outside
        steps = _steps(series_cells, st, "", quiet) or []
        found = [u for u in steps if any(c.id not in inside for c in u.cells)]
    else:
        found = []
        for cell in outside:
            units = _units([cell], table, st, "", quiet)
            if units:
                found += units
    return [u for u in found if all(unit_value(c, m) is not None for c in u.cells for m in region.metrics)
            and (st.kind != "layer_pattern" or all(len(unit_value(c, m)) >= max((*st.layers, *st.than))
                                                    for c in u.cells for m in region.metrics))
            and (st.b is None or not st.b.metric or unit_value(u.cells[0], st.b.metric) is not None)]


def unit_value(cell: TableCell, metric: str) -> Any:
    """The paper's number of a cell for a region metric (a list for a per-layer family)."""
    return cell_paper(cell).get(metric)


def _printed(units: list[Unit], metrics: list[str], st: Statement, fld: str, errs: Problems) -> bool:
    """Every number the statement reads is printed: a row whose number the paper leaves blank
    cannot be judged, so it is left out of the region, not passed."""
    ok = True
    for unit in units:
        for cell in unit.cells:
            needed = list(metrics)
            if st.b is not None and st.b.metric and cell is unit.cells[0]:
                needed.append(st.b.metric)
            for m in needed:
                v = unit_value(cell, m)
                if v is None or (st.kind == "layer_pattern" and len(v) < max((*st.layers, *st.than))):
                    errs.add(f"{fld}.metrics", f"the paper prints no {m} for {cell.id!r}"
                                               + (" at every layer the statement reads" if v is not None else "")
                                               + ": leave that row out of the region")
                    ok = False
    return ok


def _exceptions(raw: Any, units: list[Unit], metrics: list[str], fld: str, errs: Problems) -> tuple[ScopeException, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add(fld, "expected a list of {cell, metric, reason}")
        return ()
    named = {u.named.id for u in units}
    out: list[ScopeException] = []
    for i, entry in enumerate(raw):
        efld = f"{fld}[{i}]"
        if not isinstance(entry, dict):
            errs.add(efld, "expected a mapping {cell, metric, reason}")
            continue
        errs.unknown_keys(entry, EXCEPTION_KEYS, efld, "key of an exception")
        cell = entry.get("cell")
        if not isinstance(cell, str) or cell not in named:
            errs.add(f"{efld}.cell", unknown_name_message("row of this region", cell, named)
                     + " (a step along an axis is named by its far end)")
            continue
        metric = entry.get("metric")
        if metric is None and len(metrics) == 1:
            metric = metrics[0]
        if metric not in metrics:
            errs.add(f"{efld}.metric", ("required: the region reads several metrics; " if metric is None else "")
                     + unknown_name_message("metric of this region", metric, metrics))
            continue
        reason = _text(entry, "reason", efld, errs)
        if not reason:
            continue
        if any(e.cell == cell and e.metric == metric for e in out):
            errs.add(efld, f"{cell} ({metric}) is listed twice")
            continue
        out.append(ScopeException(cell, metric, reason, errs.source.line(efld), efld))
    return tuple(out)


def statement_words(st: Statement) -> str:
    """The statement in words, with its parameters (for reports and findings)."""
    p = st
    if p.kind in ("greater", "less", "at_most", "equal"):
        rel = {"greater": ">", "less": "<", "at_most": "<=", "equal": "≈"}[p.kind]
        extra = f" + {p.margin:g}" if p.kind == "at_most" and p.margin else (
            f" by more than {p.margin:g}" if p.margin else "")
        tol = f" within {p.tolerance:g}" if p.kind == "equal" else ""
        return f"row {rel} {p.b.describe() if p.b else ''}{extra}{tol}"
    if p.kind == "value":
        return f"row = {p.expected:g} within {p.tolerance:g}"
    if p.kind == "distribution":
        bounds = [f">= {p.min:g}" if p.min is not None else "", f"<= {p.max:g}" if p.max is not None else ""]
        return "row " + " and ".join(b for b in bounds if b)
    if p.kind == "monotonic":
        with_ = f" (with {', '.join(p.along_with)})" if p.along_with else ""
        return f"{p.direction} along {p.along}{with_}, each step within {p.slack:g} of it"
    return (f"mean of C{',C'.join(map(str, p.layers))} > mean of C{',C'.join(map(str, p.than))}"
            + (f" by more than {p.margin:g}" if p.margin else ""))
