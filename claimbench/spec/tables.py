"""Paper tables as data (claims/tables/*.yaml) -> validated ``TableSpec`` records.

In:  one YAML file per paper table. Layout (claims/tables/README.md is the reference):

    table: "1"                                  # as the paper numbers it; "S1".."S4": supplement
    title: Convolutional filter sparsity in BasicNet ...
    source: {paper: cvpr2019, where: "Table 1"}   # where every number was read
    base: {include: ../_bases/cifar10_basicnet.yaml}               # run config of every cell
    seeds: [0, 1, 2]                            # the paper's seed count for the dataset
    metrics: [sparsity_act, sparsity_gamma, test_error]            # one value per metric per cell
    columns:                                    # optional column groups, each a run-config `set`
      CIFAR10: {set: {data.dataset: cifar10}}
      CIFAR100: {set: {data.dataset: cifar100}}
    cells: 70                                   # how many cells the paper prints (checked)
    rows:
      - {group: SGD, label: "L2 2e-03", set: {optim.name: sgd, optim.lam: 2.0e-3},
         paper: {CIFAR10: [54, 54, 30.9], CIFAR100: [69, 69, 64.8]}}

  A row may also carry ``seeds``, ``assume`` (a setting the paper does not state, shown in the
  report), ``not_run`` (why this configuration cannot be run) or ``reference`` (a number the paper
  quotes from another method: nothing to train), and ``source`` where one of its numbers was read
  elsewhere than the table's ``source``. ``null`` in ``paper`` is a number the paper does not print.

Out: TableSpec with one ``TableCell`` per (row, column) the paper prints: its metrics' paper
values, the RunConfig per seed (none for reference / not-run cells), its assumptions and source.
Every problem of a file is reported at once as a SpecError naming file, line and field, like
claim files; unknown keys are rejected with a did-you-mean hint. The tables of a claims folder,
loaded once, and cells named by id: ``claimbench.spec.table_folder``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claimbench.config import ConfigError, RunConfig
from claimbench.runconfig import deep_merge, dotted_to_nested, parse_number, unknown_name_message
from claimbench.spec.metrics import RUN_METRICS, TABLE_LAYER_METRICS, TABLE_SCALAR_METRICS, missing_layers, unrecorded
from claimbench.spec.parsing import (
    Problems,
    config_error_field,
    expand_seeds,
    parse_seeds,
    resolve_base,
)
from claimbench.spec.source import Source, SpecError, load_source

TABLE_KEYS = {"table", "title", "source", "notes", "base", "seeds", "metrics", "headers", "columns", "cells",
              "rows", "layout", "assume", "markers"}
# A number the paper prints with a marker ("31.38*") is typed as text, the marker declared under
# the table's `markers:` with its meaning; the number is read without it, the text kept as printed.
_MARKED_RE = re.compile(r"^(-?\d+(?:\.\d+)?)(\S+)$")
COLUMN_KEYS = {"set", "seeds", "assume", "label"}
ROW_KEYS = {"group", "label", "set", "paper", "seeds", "assume", "not_run", "reference", "source", "smoke"}
# A smoke analog: "claim-id:run" or "claim-id:run@axis-value" (a run group of that claim's smoke tier).
_SMOKE_RE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_]+(@[-+.eE0-9]+)?$")
SOURCE_KEYS = {"paper", "where"}
LAYOUTS = ("rows", "transposed")  # transposed: metrics down the side, cells across (Table 7)
# What a table cell may name, from the metric catalogue. Per-layer metrics are addressed by
# 1-based conv layer: layer_sparsity_gamma[3] is C3.
SCALAR_METRICS, LAYER_METRICS = TABLE_SCALAR_METRICS, TABLE_LAYER_METRICS
_LAYER_RE = re.compile(r"^([a-z_]+)\[(\d+)\]$")


@dataclass(frozen=True)
class TableCell:
    """One configuration of a paper table (a row within a column group) and its printed numbers."""

    id: str  # "table01/SGD L2 2e-03/CIFAR10"
    row: str
    column: str | None
    paper: dict[str, float | None]  # metric -> the paper's number (None: not printed)
    paper_text: dict[str, str]  # metric -> the number as typed from the paper ("30.50", "0.0")
    configs: tuple[RunConfig, ...]  # one per seed; empty for reference and not-run cells
    line: int | None
    source: dict[str, str]
    assume: tuple[str, ...] = ()
    not_run: str | None = None
    reference: str | None = None
    smoke: str | None = None  # "claim:run@value": the smoke-tier run standing in for this cell


@dataclass(frozen=True)
class TableSpec:
    id: str  # file stem, e.g. table01; the report page name
    number: str  # as the paper numbers it: "1" .. "10", "S1" .. "S4"
    title: str
    source: dict[str, str]
    path: Path
    metrics: tuple[str, ...]
    headers: tuple[str, ...]
    columns: tuple[str, ...]  # () when the table has no column groups
    rows: tuple[tuple[str, str], ...]  # (group, label) in the paper's order
    cells: tuple[TableCell, ...]
    layout: str = "rows"
    notes: str = ""
    assume: tuple[str, ...] = ()
    markers: tuple[tuple[str, str], ...] = ()  # (marker as printed, what it means in the paper)

    def cell(self, row: str, column: str | None = None) -> TableCell:
        for c in self.cells:
            if c.row == row and c.column == column:
                return c
        raise KeyError((row, column))

    def configs(self) -> list[RunConfig]:
        return [cfg for c in self.cells for cfg in c.configs]


def metric_value(metrics: dict, name: str) -> float | None:
    """``name`` of a run's metrics: a scalar, or ``layer_sparsity_gamma[3]`` (conv layer C3)."""
    m = _LAYER_RE.match(name)
    if m:
        values = metrics.get(m.group(1))
        i = int(m.group(2))
        return float(values[i - 1]) if isinstance(values, list) and 1 <= i <= len(values) else None
    v = metrics.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def metric_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"expected a metric name, got {name!r}"
    m = _LAYER_RE.match(name)
    if m:
        if m.group(1) not in LAYER_METRICS:
            return unknown_name_message("per-layer metric", m.group(1), LAYER_METRICS)
        return None if int(m.group(2)) >= 1 else "conv layers are numbered from 1"
    if name not in SCALAR_METRICS:
        return unknown_name_message("metric", name, [*SCALAR_METRICS, *(f"{x}[i]" for x in LAYER_METRICS)])
    return None


def _unrecorded(name: str, cfg: RunConfig) -> str | None:
    """Why a run of ``cfg`` records no value for the table metric ``name`` (None: it does)."""
    m = _LAYER_RE.match(name)
    if m:
        return missing_layers([int(m.group(2))], cfg)
    metric = RUN_METRICS.get(name)
    return None if metric is None else unrecorded(metric, cfg)  # an unknown name is reported already


def cell_paper(cell: TableCell) -> dict[str, Any]:
    """The cell's printed numbers as a claim's ``paper:`` reads them: scalars by name, and
    ``layer_sparsity_gamma[1..n]`` as one per-layer list (only when the cell prints every layer
    from C1 to its last one; a partial list is not a claim value)."""
    out: dict[str, Any] = {}
    layers: dict[str, dict[int, float]] = {}
    for name, value in cell.paper.items():
        if value is None:
            continue
        m = _LAYER_RE.match(name)
        if m:
            layers.setdefault(m.group(1), {})[int(m.group(2))] = value
        else:
            out[name] = value
    for name, by_layer in layers.items():
        if sorted(by_layer) == list(range(1, len(by_layer) + 1)):
            out[name] = [by_layer[i] for i in range(1, len(by_layer) + 1)]
    return out


def cell_prints(cell: TableCell, metric: str) -> bool:
    """Whether the cell prints a number for ``metric`` (for a per-layer metric: for any layer)."""
    return any(v is not None and (name == metric or name.startswith(metric + "["))
               for name, v in cell.paper.items())


def load_table(path: Path) -> TableSpec:
    source = load_source(Path(path))
    errs = Problems(source)
    spec = _parse(source, errs)
    if errs.problems or spec is None:
        raise SpecError(errs.problems or [source.problem("", "not a table spec")])
    return spec


def _text(raw: dict, key: str, errs: Problems, required: bool = True) -> str:
    v = raw.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v.strip():
        errs.add(key, "required, a non-empty string" if required else "expected a non-empty string")
        return ""
    return v.strip()


def _source(v: Any, fld: str, errs: Problems) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(v.get(k), str) and v.get(k).strip() for k in SOURCE_KEYS):
        errs.add(fld, "expected {paper: <file the numbers were read from>, where: <its table>}")
        return {}
    errs.unknown_keys(v, SOURCE_KEYS, fld)
    return {k: str(v[k]) for k in SOURCE_KEYS}


def _seeds(v: Any, fld: str, errs: Problems) -> list[int] | None:
    """A table's, column's or row's seeds; None where not given (or invalid, which is reported)."""
    return None if v is None else parse_seeds(v, fld, errs)


def _assume(v: Any, fld: str, errs: Problems) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str) and v.strip():
        return (v.strip(),)
    # A list where several settings are assumed, each its own note on the page.
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return tuple(" ".join(x.split()) for x in v)
    errs.add(fld, "expected text, or a list of texts: the setting the paper does not state and the value assumed")
    return ()


def _markers(v: Any, errs: Problems) -> dict[str, str]:
    """``markers: {"*": "what the paper's * means"}``: marks printed after some numbers."""
    if v is None:
        return {}
    if not isinstance(v, dict) or not v:
        errs.add("markers", 'expected a mapping of marker to its meaning, e.g. {"*": "after fine-tuning"}')
        return {}
    out: dict[str, str] = {}
    for k, meaning in v.items():
        if not isinstance(k, str) or not k.strip() or any(ch.isdigit() or ch.isspace() or ch == "." for ch in k):
            errs.add(f"markers.{k}", "a marker is printed after a number: no digits, dots or spaces")
        elif not isinstance(meaning, str) or not meaning.strip():
            errs.add(f"markers.{k}", "expected text: what the marker means in the paper")
        else:
            out[k] = " ".join(meaning.split())
    return out


def _set(v: Any, fld: str, errs: Problems) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        errs.add(fld, "expected a mapping of dotted fields to values, e.g. optim.lam: 1.0e-3")
        return {}
    try:
        return dotted_to_nested(v)
    except ConfigError as e:
        errs.add(f"{fld}.{e.path}", e.message)
        return {}


@dataclass(frozen=True)
class _Frame:
    """What every row of a table shares: read once from the table's top-level keys."""

    table_id: str
    source: Source
    metrics: tuple[str, ...]
    markers: dict[str, str]
    base: dict
    seeds: list[int]
    columns: dict[str, tuple[dict, list[int] | None, tuple[str, ...]]]
    src: dict[str, str]
    assume: tuple[str, ...]


@dataclass(frozen=True)
class _Row:
    """One row's own settings (``rows[i]``), before it is cut into cells."""

    fld: str
    name: str
    set: dict
    seeds: list[int] | None
    assume: tuple[str, ...]
    source: dict[str, str]
    not_run: str | None
    reference: str | None
    smoke_of: dict


def _parse(source: Source, errs: Problems) -> TableSpec | None:
    """A table file -> TableSpec: its header keys, its column groups, then its rows, each cut into
    one cell per column group the paper fills."""
    raw = source.data
    if not isinstance(raw, dict):
        errs.add("", "a table spec must be a mapping with table, title, source, metrics, cells, rows")
        return None
    errs.unknown_keys(raw, TABLE_KEYS, "")
    number = _table_number(raw, errs)
    title = _text(raw, "title", errs)
    notes = _text(raw, "notes", errs, required=False)
    layout = raw.get("layout", "rows")
    if layout not in LAYOUTS:
        errs.add("layout", unknown_name_message("layout", layout, LAYOUTS))
        layout = "rows"
    metrics = _metric_columns(raw.get("metrics"), errs)
    headers = _headers(raw.get("headers"), metrics, errs)
    seeds = _seeds(raw.get("seeds"), "seeds", errs)
    if seeds is None:
        if "seeds" not in raw:
            errs.add("seeds", "required: the paper's seeds for this table (3 CIFAR, 2 TinyImageNet, 1 ImageNet)")
        seeds = [0]
    base = resolve_base(raw.get("base"), "base", errs)
    # The scaling rules a tier's base may declare are for the tier's runs to name; a table's cells
    # are the paper's settings and name none.
    base.pop("analogs", None)
    frame = _Frame(source.path.stem, source, metrics, _markers(raw.get("markers"), errs),
                   base, seeds, _columns(raw.get("columns"), errs),
                   _source(raw.get("source"), "source", errs), _assume(raw.get("assume"), "assume", errs))

    rows_raw = raw.get("rows")
    if not isinstance(rows_raw, list) or not rows_raw:
        errs.add("rows", "required: a non-empty list of rows, each {label, set, paper}")
        rows_raw = []
    rows: list[tuple[str, str]] = []
    cells: list[TableCell] = []
    used_markers: set[str] = set()
    configs_seen: dict[str, str] = {}  # canonical config -> the cell that has it
    for i, rraw in enumerate(rows_raw):
        row = _row(i, rraw, frame, rows, errs)
        if row is not None:
            cells += _row_cells(row, rraw, frame, used_markers, configs_seen, errs)
    for marker in frame.markers:
        if marker not in used_markers:
            errs.add(f"markers.{marker}", f"marker {marker!r} is declared but no number of the table carries it")
    expected = raw.get("cells")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 1:
        errs.add("cells", "required: the number of cells the paper prints (rows x column groups it fills)")
    elif rows_raw and expected != len(cells):
        errs.add("cells", f"the rows give {len(cells)} cells, the paper's table has {expected}")
    return TableSpec(frame.table_id, number, title, frame.src, source.path, metrics, headers, tuple(frame.columns),
                     tuple(rows), tuple(cells), layout, notes, frame.assume, tuple(frame.markers.items()))


# --- the table's header keys -------------------------------------------------------------------

def _table_number(raw: dict, errs: Problems) -> str:
    number = raw.get("table")
    if isinstance(number, int) and not isinstance(number, bool):
        number = str(number)
    if not isinstance(number, str) or not re.fullmatch(r"S?\d+", number):
        errs.add("table", "required: the paper's table number, e.g. \"1\", or \"S1\" for the supplement's")
        return ""
    return number


def _metric_columns(metrics_raw: Any, errs: Problems) -> tuple[str, ...]:
    """The metrics each cell reports, in the paper's column order."""
    if not isinstance(metrics_raw, list) or not metrics_raw:
        errs.add("metrics", "required: the list of metrics each cell reports, in the paper's column order")
        return ()
    metrics = []
    for i, m in enumerate(metrics_raw):
        problem = metric_problem(m)
        if problem:
            errs.add(f"metrics[{i}]", problem)
        metrics.append(str(m))
    if len(set(metrics)) != len(metrics):
        errs.add("metrics", "a metric is listed twice")
    return tuple(metrics)


def _headers(headers_raw: Any, metrics: tuple[str, ...], errs: Problems) -> tuple[str, ...]:
    if headers_raw is None:
        return metrics
    if not isinstance(headers_raw, list) or len(headers_raw) != len(metrics) or not all(isinstance(h, str) for h in headers_raw):
        errs.add("headers", f"expected a list of {len(metrics)} strings, one per metric")
        return metrics
    return tuple(headers_raw)


def _columns(columns_raw: Any, errs: Problems) -> dict[str, tuple[dict, list[int] | None, tuple[str, ...]]]:
    """Column groups (e.g. CIFAR10 / CIFAR100): each its own overrides, seeds and assumptions."""
    columns: dict[str, tuple[dict, list[int] | None, tuple[str, ...]]] = {}
    if columns_raw is None:
        return columns
    if not isinstance(columns_raw, dict) or not columns_raw:
        errs.add("columns", "expected a mapping of column group names to {set, seeds, assume}")
        return columns
    for name, craw in columns_raw.items():
        fld = f"columns.{name}"
        craw = craw or {}
        if not isinstance(craw, dict):
            errs.add(fld, "expected a mapping with optional set, seeds, assume")
            continue
        errs.unknown_keys(craw, COLUMN_KEYS, fld)
        columns[str(name)] = (_set(craw.get("set"), f"{fld}.set", errs), _seeds(craw.get("seeds"), f"{fld}.seeds", errs),
                              _assume(craw.get("assume"), f"{fld}.assume", errs))
    return columns


# --- rows ----------------------------------------------------------------------------------------

def _row(i: int, rraw: Any, frame: _Frame, rows: list[tuple[str, str]], errs: Problems) -> _Row | None:
    """``rows[i]``'s own settings; its (group, label) is appended to ``rows``."""
    fld = f"rows[{i}]"
    if not isinstance(rraw, dict):
        errs.add(fld, "expected a mapping with label, set, paper")
        return None
    errs.unknown_keys(rraw, ROW_KEYS, fld)
    label = rraw.get("label")
    if not isinstance(label, str) or not label.strip():
        errs.add(f"{fld}.label", "required: the row's label as the paper prints it")
        label = f"row {i + 1}"
    group = rraw.get("group", "")
    if not isinstance(group, str):
        errs.add(f"{fld}.group", "expected text")
        group = ""
    if (group, label) in rows:
        errs.add(f"{fld}.label", f"duplicate row {group + ' ' if group else ''}{label!r}")
    rows.append((group, label))
    not_run, reference = rraw.get("not_run"), rraw.get("reference")
    for k, v in (("not_run", not_run), ("reference", reference)):
        if v is not None and (not isinstance(v, str) or not v.strip()):
            errs.add(f"{fld}.{k}", "expected text: " + ("why this configuration cannot be run" if k == "not_run"
                                                        else "whose number this is (another method)"))
    if not_run is not None and reference is not None:
        errs.add(f"{fld}.reference", "a row is either not_run or a reference, not both")
    if reference is not None and "set" in rraw:
        errs.add(f"{fld}.set", "a reference row (another method's number) has no run config")
    return _Row(fld, f"{group} {label}".strip(), _set(rraw.get("set"), f"{fld}.set", errs),
                _seeds(rraw.get("seeds"), f"{fld}.seeds", errs), _assume(rraw.get("assume"), f"{fld}.assume", errs),
                _source(rraw["source"], f"{fld}.source", errs) if "source" in rraw else frame.src,
                str(not_run).strip() if isinstance(not_run, str) else None,
                str(reference).strip() if isinstance(reference, str) else None,
                _smoke_analogs(rraw.get("smoke"), fld, frame.columns, errs))


def _smoke_analogs(smoke_raw: Any, fld: str, columns: dict, errs: Problems) -> dict:
    """Column (None without columns) -> the claim's smoke-tier run group standing in for the cell."""
    smoke_of: dict = {}
    if smoke_raw is None:
        return smoke_of
    items = smoke_raw.items() if isinstance(smoke_raw, dict) and columns else [(None, smoke_raw)]
    for col, ref in items:
        sfld = f"{fld}.smoke" + (f".{col}" if col else "")
        if col is not None and col not in columns:
            errs.add(sfld, unknown_name_message("column", col, columns))
        elif not isinstance(ref, str) or not _SMOKE_RE.match(ref):
            errs.add(sfld, "expected \"claim-id:run\" or \"claim-id:run@value\" (a claim's smoke-tier run group)"
                     + ("; with columns, a mapping column -> analog" if columns else ""))
        else:
            smoke_of[col] = ref
    return smoke_of


def _row_paper(paper: Any, row: _Row, frame: _Frame, errs: Problems) -> list[tuple[str | None, Any, str]]:
    """(column, the paper's values for it, their field) for each column group of the row."""
    if not frame.columns:
        return [(None, paper, f"{row.fld}.paper")]
    if not isinstance(paper, dict):
        errs.add(f"{row.fld}.paper", f"expected a mapping with one list per column: {', '.join(frame.columns)}")
        return []
    for col in paper:
        if col not in frame.columns:
            errs.add(f"{row.fld}.paper.{col}", unknown_name_message("column", col, frame.columns))
    per_col = [(col, paper.get(col), f"{row.fld}.paper.{col}") for col in frame.columns]
    for col, _v, pfld in per_col:
        if col not in paper:
            errs.add(pfld, "missing: give the paper's values, or null where the paper has no such cell")
    return per_col


def _row_cells(row: _Row, rraw: dict, frame: _Frame, used_markers: set[str], configs_seen: dict[str, str],
               errs: Problems) -> list[TableCell]:
    cells = []
    for col, values, pfld in _row_paper(rraw.get("paper"), row, frame, errs):
        if values is None or not frame.metrics:
            continue  # the paper prints no cell here (or `metrics` is broken, reported above)
        printed = _cell_numbers(values, pfld, frame, used_markers, errs)
        if printed is None:
            continue
        numbers, numbers_text = printed
        cell_id = f"{frame.table_id}/{row.name}" + (f"/{col}" if col else "")
        col_set, col_seeds, col_assume = frame.columns.get(col, ({}, None, ())) if col else ({}, None, ())
        configs: list[RunConfig] = []
        if row.not_run is None and row.reference is None:
            configs = _cell_configs(row, col, col_set, row.seeds or col_seeds or frame.seeds, frame, errs)
            if configs:
                for j, m in enumerate(frame.metrics):
                    why = None if numbers.get(m) is None else _unrecorded(m, configs[0])
                    if why:
                        errs.add(f"{pfld}[{j}]", why)
                key = configs[0].canonical_json()
                if key in configs_seen:
                    errs.add(pfld, f"same run configuration as cell {configs_seen[key]!r}: a typo in set?")
                configs_seen[key] = cell_id
        cells.append(TableCell(cell_id, row.name, col, numbers, numbers_text, tuple(configs),
                               frame.source.line(pfld), row.source, frame.assume + col_assume + row.assume,
                               row.not_run, row.reference, row.smoke_of.get(col)))
    return cells


# --- cells ---------------------------------------------------------------------------------------

def _parses(v: int | float) -> bool:
    """Whether the one number parser of claim and table files takes ``v`` (finite, within float range)."""
    try:
        parse_number(v, text=False)
    except ValueError:
        return False
    return True


def _cell_numbers(values: Any, pfld: str, frame: _Frame, used_markers: set[str],
                  errs: Problems) -> tuple[dict[str, float | None], dict[str, str]] | None:
    """The paper's numbers of one cell, and each as printed ("30.50", "31.38*")."""
    metrics = frame.metrics
    if not isinstance(values, list) or len(values) != len(metrics):
        errs.add(pfld, f"expected a list of {len(metrics)} values, one per metric ({', '.join(metrics)}); "
                       "null for a number the paper does not print")
        return None
    numbers: dict[str, float | None] = {}
    numbers_text: dict[str, str] = {}
    for j, (m, v) in enumerate(zip(metrics, values)):
        printed = None
        if isinstance(v, str) and (marked := _MARKED_RE.match(v)) and marked.group(2) in frame.markers:
            printed, v = v, float(marked.group(1))
            used_markers.add(marked.group(2))
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            hint = f" (a marker is declared under markers: first; declared: {', '.join(frame.markers) or 'none'})" \
                if isinstance(v, str) else ""
            errs.add(f"{pfld}[{j}]", f"{m}: expected a number or null, got {v!r}{hint}")
            v = None
        elif v is not None and not _parses(v):
            # 10**400 or .inf: no number a paper prints, and float() of it crashes the report's plot.
            errs.add(f"{pfld}[{j}]", f"{m}: {str(v)[:30]}{'...' if len(str(v)) > 30 else ''} is not a finite number "
                                     "a float can hold")
            v = None
        numbers[m] = v
        if v is not None:
            numbers_text[m] = printed or frame.source.texts.get(f"{pfld}[{j}]", repr(v))
    if all(v is None for v in numbers.values()):
        errs.add(pfld, "every value is null: write null for the whole cell instead")
    return numbers, numbers_text


def _cell_configs(row: _Row, col: str | None, col_set: dict, seeds: list[int], frame: _Frame,
                  errs: Problems) -> list[RunConfig]:
    """The cell's run, once per seed: the table's base, the column's overrides, the row's."""
    overrides = [(f"{row.fld}.set", row.set)] + ([(f"columns.{col}.set", col_set)] if col else [])
    configs = expand_seeds(deep_merge(deep_merge(frame.base, col_set), row.set), seeds,
                           lambda path: config_error_field(path, overrides, "base"), errs)
    return configs or []

