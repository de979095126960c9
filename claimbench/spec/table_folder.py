"""The tables beside a claims folder (``<claims>/tables/*.yaml``), loaded once, and cells named by id.

In:  a claims folder, or a list of table files (``claimbench validate``, ``claimbench plan``).
Out: ``FolderTables`` (every table of the folder that parses, by file stem, and the first problem of
     each that does not), read again only when a YAML file of the folder changed; its
     ``find_cell`` turns ``"table01/Adam L2 1e-04/CIFAR10"`` into the cell or a did-you-mean.
     ``load_tables`` loads a list of table files with one SpecError for all of their problems.
     One table file is read by ``claimbench.spec.tables``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claimbench.runconfig import unknown_name_message
from claimbench.spec.parsing import TABLES_FOLDER, load_all
from claimbench.spec.source import SpecError, SpecProblem, display_path
from claimbench.spec.tables import TableCell, TableSpec, load_table


@dataclass(frozen=True)
class FolderTables:
    """The tables of one claims folder, by id (file stem); a file with problems is listed in
    ``broken`` with its first problem instead."""

    folder: Path
    tables: dict[str, TableSpec]
    broken: dict[str, SpecProblem]

    def find_cell(self, ref: Any) -> tuple[TableCell | None, str | None]:
        """``"table01/Adam L2 1e-04/CIFAR10"`` (a cell's id, as ``claimbench plan --json`` names it) ->
        the cell, or None and what is wrong, with a did-you-mean."""
        if not isinstance(ref, str) or "/" not in ref:
            return None, (f"expected a table cell as <table>/<row>[/<column>], e.g. \"table01/Adam L2 1e-04/CIFAR10\" "
                          f"(the cell names of `claimbench plan --json`), got {ref!r}")
        table_id = ref.split("/", 1)[0]
        if table_id in self.broken:
            return None, f"table {table_id!r} has problems (`claimbench validate` lists them), first: {self.broken[table_id]}"
        table = self.tables.get(table_id)
        if table is None:
            return None, (unknown_name_message("table", table_id, self.tables)
                          + f" (a table is named by its file in {TABLES_FOLDER}/ beside the claims, without .yaml)")
        cell = next((c for c in table.cells if c.id == ref), None)
        if cell is None:
            close = difflib.get_close_matches(ref, [c.id for c in table.cells], n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            rows = ", ".join(repr(f"{g} {label}".strip()) for g, label in table.rows)
            columns = f"; its columns: {', '.join(table.columns)}" if table.columns else "; it has no columns"
            return None, f"{table_id} has no cell {ref!r}{hint}; its rows: {rows}{columns}"
        if cell.not_run:
            return None, f"cell {ref!r} is not run ({cell.not_run}): it cannot be a claim's run"
        if cell.reference:
            return None, f"cell {ref!r} is another method's number ({cell.reference}): there is nothing to train"
        return cell, None


_FOLDER_CACHE: dict[Path, tuple[tuple, FolderTables]] = {}


def folder_tables(claims_dir: Path) -> FolderTables | None:
    """The tables in ``claims_dir/tables`` (None when there is no such folder). Loaded once per
    state of the folder's YAML files (tables and the bases they include), so that every claim
    file of a folder can name cells without reading the tables again."""
    root = Path(claims_dir).resolve()
    folder = root / TABLES_FOLDER
    if not folder.is_dir():
        return None
    stamp = tuple(sorted((str(p), st.st_mtime_ns, st.st_size) for p in root.rglob("*.yaml") for st in [p.stat()]))
    cached = _FOLDER_CACHE.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    tables: dict[str, TableSpec] = {}
    broken: dict[str, SpecProblem] = {}
    for path in table_files(folder):
        try:
            tables[path.stem] = load_table(path)
        except SpecError as e:
            broken[path.stem] = e.problems[0]
    result = FolderTables(folder, tables, broken)
    _FOLDER_CACHE[folder] = (stamp, result)
    return result


def table_files(root: Path) -> list[Path]:
    """claims/tables/*.yaml (files starting with '_' are not tables)."""
    return sorted(p for p in Path(root).glob("*.yaml") if not p.name.startswith("_"))


def load_tables(paths: list[Path]) -> list[TableSpec]:
    """Every file; one SpecError with the problems of all files (table numbers must be unique)."""
    return load_all(paths, load_table, lambda s: s.number, lambda s, earlier: SpecProblem(
        display_path(s.path), None, "table", f"duplicate table {s.number!r} (also in {earlier.path.name})"))
