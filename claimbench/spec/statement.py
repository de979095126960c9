"""A scope region's ``statement:`` -> a ``Statement``, and a statement in words.

In:  the raw ``statement`` mapping of a scope region (claimbench.spec.scope) and the region's table,
     e.g. ``{kind: monotonic, along: optim.lam, direction: increasing, slack: 2, description: ...}``.
Out: ``Statement`` (its kind, the ``Partner`` a row is compared with, the numbers it takes), or
     None with every problem reported at file:line; ``statement_words`` writes one for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claimbench.runconfig import parse_number, unknown_name_message
from claimbench.spec.entries import entry_text
from claimbench.spec.parsing import Problems
from claimbench.spec.tables import TableSpec

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


def parse_statement(raw: Any, fld: str, table: TableSpec, errs: Problems) -> Statement | None:
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
    description = entry_text(raw, "description", fld, errs)
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
