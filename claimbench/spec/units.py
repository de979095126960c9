"""The rows a scope statement is judged on: a region's cells -> ``Unit`` records.

In:  the cells a scope region chose (claimbench.spec.tables.TableCell), their table and the
     region's ``Statement`` (claimbench.spec.statement).
Out: one ``Unit`` per row the statement reads: a cell (kinds judged on one cell), a cell and its
     partner (``b: {set: ...}`` or ``b: {row: ...}``), or one step along an axis (``monotonic``),
     each with the cell an exception names; or None with the problem reported at file:line. Also
     the paper's number a unit reads (``unit_value``) and whether the paper prints every one a
     statement needs (``printed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claimbench.config import ConfigError
from claimbench.runconfig import dotted_to_nested, unknown_name_message
from claimbench.spec.checks import same_value
from claimbench.spec.parsing import Problems, flatten
from claimbench.spec.statement import Partner, Statement
from claimbench.spec.tables import TableCell, TableSpec, cell_paper


@dataclass(frozen=True)
class Unit:
    """One row of a region: the cells the statement reads (a cell; a cell and its partner; or
    the two ends of a step along the axis, in axis order) and the cell an exception names (the
    cell itself, or the step's far end)."""

    cells: tuple[TableCell, ...]
    named: TableCell


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


def units_of(cells: list[TableCell], table: TableSpec, st: Statement, fld: str, errs: Problems) -> list[Unit] | None:
    """The units of ``cells`` under statement ``st``: one per cell, per cell and partner, or per
    step along the axis; None (the problem reported at ``fld``) where a partner or step is missing."""
    if st.kind == "monotonic":
        return steps(cells, st, fld, errs)
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


def steps(cells: list[TableCell], st: Statement, fld: str, errs: Problems) -> list[Unit] | None:
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


def unit_value(cell: TableCell, metric: str) -> Any:
    """The paper's number of a cell for a region metric (a list for a per-layer family)."""
    return cell_paper(cell).get(metric)


def printed(units: list[Unit], metrics: list[str], st: Statement, fld: str, errs: Problems) -> bool:
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
