"""What a claim's words cover in the paper's tables: ``scope:``, ``no_scope:`` and ``assume:``.

In:  the raw ``scope`` / ``no_scope`` / ``assume`` values of a claim file and the tables beside
     its folder (claimbench.spec.table_folder). Layout (claims/README.md, "Scope" is the reference):

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

Out: ``ScopeRegion`` records, with the statement parsed (claimbench.spec.statement) and its *units*
     resolved (claimbench.spec.units): a cell, a cell and its partner, or one step along an axis,
     each with the cell an exception names. Everything that depends only on
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

from claimbench.runconfig import unknown_name_message
from claimbench.spec.entries import entry_list, entry_mappings, entry_text
from claimbench.spec.parsing import Problems
from claimbench.spec.statement import Statement, parse_statement
from claimbench.spec.table_folder import FolderTables
from claimbench.spec.tables import TableSpec
from claimbench.spec.units import Unit, printed, steps, unit_value, units_of

REGION_KEYS = ("table", "rows", "columns", "metrics", "statement", "exceptions")
OUT_OF_SCOPE_KEYS = ("table", "rows", "columns", "reason")
ROWS_KEYS = ("group", "label")
EXCEPTION_KEYS = ("cell", "metric", "reason")
ASSUME_KEYS = ("text", "reason", "cells")


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


def parse_assume(raw: Any, tables: FolderTables | None, errs: Problems) -> tuple[Assumption, ...]:
    raw = entry_list(raw, "assume", "a list of {text, reason, cells} entries: settings the paper does not state", errs)
    out = []
    for fld, entry in entry_mappings(raw, "assume", ASSUME_KEYS, "key of an assumption", errs):
        text, reason = entry_text(entry, "text", fld, errs), entry_text(entry, "reason", fld, errs)
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
    raw = entry_list(raw, "scope", "a list of regions, each {table, rows, columns, metrics, statement, exceptions}", errs)
    if not raw:
        return ()
    if tables is None:
        errs.add("scope", "there is no tables/ folder beside this claim file, so no table to scope")
        return ()
    regions = []
    for fld, entry in entry_mappings(raw, "scope", REGION_KEYS, "key of a scope region", errs):
        region = _parse_region(entry, fld, tables, errs)
        if region is not None:
            regions.append(region)
    return tuple(regions)


def parse_out_of_scope(raw: Any, tables: FolderTables | None, errs: Problems) -> tuple[OutOfScope, ...]:
    raw = entry_list(raw, "out_of_scope", "a list of {table, rows, columns, reason}: rows of a table the claim's "
                                          "words do not cover, and why", errs)
    if not raw:
        return ()
    if tables is None:
        errs.add("out_of_scope", "there is no tables/ folder beside this claim file, so no table row to leave out")
        return ()
    out = []
    for fld, entry in entry_mappings(raw, "out_of_scope", OUT_OF_SCOPE_KEYS, "key of an out_of_scope entry", errs):
        table = _table(entry.get("table"), f"{fld}.table", tables, errs)
        reason = entry_text(entry, "reason", fld, errs)
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


def _parse_region(raw: dict, fld: str, tables: FolderTables, errs: Problems) -> ScopeRegion | None:
    table = _table(raw.get("table"), f"{fld}.table", tables, errs)
    if table is None:
        return None
    table_id = table.id
    ok = True
    columns = _columns(raw.get("columns"), table, f"{fld}.columns", errs)
    chosen, rows_text = _rows(raw.get("rows"), table, f"{fld}.rows", errs, columns)
    if columns is None or chosen is None:
        ok = False
    statement = parse_statement(raw.get("statement"), f"{fld}.statement", table, errs)
    metrics = _metrics(raw.get("metrics"), table, statement, f"{fld}.metrics", errs)
    if statement is None or metrics is None or not ok:
        return None
    cells = [c for c in table.cells if c.row in chosen and c.column in (columns or (None,))]
    if not cells:
        errs.add(f"{fld}.rows", f"no cell of {table_id} is in both the rows and the columns chosen")
        return None
    units = units_of(cells, table, statement, f"{fld}.statement", errs)
    if units is None:
        return None
    if not printed(units, metrics, statement, fld, errs):
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


def _exceptions(raw: Any, units: list[Unit], metrics: list[str], fld: str, errs: Problems) -> tuple[ScopeException, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add(fld, "expected a list of {cell, metric, reason}")
        return ()
    named = {u.named.id for u in units}
    out: list[ScopeException] = []
    # An empty list is accepted here (a region may have no exceptions), unlike scope: or assume:.
    for efld, entry in entry_mappings(raw, fld, EXCEPTION_KEYS, "key of an exception", errs):
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
        reason = entry_text(entry, "reason", efld, errs)
        if not reason:
            continue
        if any(e.cell == cell and e.metric == metric for e in out):
            errs.add(efld, f"{cell} ({metric}) is listed twice")
            continue
        out.append(ScopeException(cell, metric, reason, errs.source.line(efld), efld))
    return tuple(out)


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


# --- what a region leaves out -----------------------------------------------------------------


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
        found = [u for u in steps(series_cells, st, "", quiet) or [] if any(c.id not in inside for c in u.cells)]
    else:
        found = []
        for cell in outside:
            units = units_of([cell], table, st, "", quiet)
            if units:
                found += units
    return [u for u in found if all(unit_value(c, m) is not None for c in u.cells for m in region.metrics)
            and (st.kind != "layer_pattern" or all(len(unit_value(c, m)) >= max((*st.layers, *st.than))
                                                    for c in u.cells for m in region.metrics))
            and (st.b is None or not st.b.metric or unit_value(u.cells[0], st.b.metric) is not None)]
