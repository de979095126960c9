"""The paper's numbers beside ours, as the paper prints them, for what a claim's checks read.

In:  a ClaimSpec, its tier and a check or a run point (a selection: a run, an axis value, a metric).
Out: text: a number as the claim or the table cell it names types it (30.50 stays 30.50, 31.38* keeps
     its marker, a per-layer list stays a list), the paper's number a selection reads, the selections
     a check reads in order, and the lines of a claim page or the index's paper column that show them;
     and whether the claims are a paper's at all (``paper_to_reproduce``), or one's own experiment's.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from claimbench.check.verdict import fmt
from claimbench.spec.claims import ClaimSpec, TierSpec, claim_files, load_claim
from claimbench.spec.source import SpecError


def number_text(value: Any) -> str:
    """A paper number a claim types itself, as typed (a YAML reader keeps all but trailing zeros):
    70 stays 70, 10.5 stays 10.5, a per-layer list stays a list."""
    if isinstance(value, list):
        return "[" + ", ".join(number_text(v) for v in value) + "]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else repr(float(value))


def point_paper_texts(spec: ClaimSpec, point: Any) -> dict[str, str]:
    """Metric -> the paper's number at a run point as printed: a table cell's text for a run that
    names a cell (30.50 stays 30.50, 31.38* keeps its marker), else as the claim types it."""
    cell = None
    if getattr(point, "cell", None):
        from claimbench.spec.table_folder import folder_tables

        tables = folder_tables(spec.path.parent)
        cell = tables.find_cell(point.cell)[0] if tables is not None else None
    out = {}
    for metric, value in point.paper.items():
        if cell is not None and metric in cell.paper_text:
            out[metric] = cell.paper_text[metric]
        elif cell is not None and isinstance(value, list) and f"{metric}[1]" in cell.paper_text:
            out[metric] = "[" + ", ".join(cell.paper_text.get(f"{metric}[{i}]", number_text(v))
                                          for i, v in enumerate(value, 1)) + "]"
        else:
            out[metric] = number_text(value)
    return out


def _point(tier: TierSpec, sel: Any) -> Any:
    from claimbench.spec.checks import same_value

    group = tier.groups.get(sel.run)
    if group is None:
        return None
    return next((p for p in group.points if sel.at is None or same_value(p.axis_value, sel.at)), None)


def selection_paper_text(spec: ClaimSpec, tier: TierSpec, sel: Any) -> str | None:
    """The paper's number for what a selection reads, as printed; None where the paper gives
    none. A mean over several layers is computed, so it is shown as fmt writes numbers."""
    from claimbench.check.kinds import paper_value

    point = _point(tier, sel)
    if point is None or sel.metric not in point.paper:
        return None
    ref = point.paper[sel.metric]
    text = point_paper_texts(spec, point).get(sel.metric)
    if sel.stat is not None:
        return None  # a statistic of per-seed lists the paper does not print
    if isinstance(ref, list):
        if sel.layer is not None and not sel.layers:
            items = text.strip("[]").split(", ") if text else []
            return items[sel.layer - 1] if sel.layer <= len(items) else None
        value = paper_value(ref, sel)
        return fmt(value) if isinstance(value, (int, float)) else None
    return text


def check_selections(check: Any, tier: TierSpec) -> list:
    """The selections a check reads, in order (for monotonic: one per point of its axis)."""
    params = check.params
    if check.kind == "monotonic":
        group = tier.groups.get(params.run)
        return [params.point(group, p.axis_value) for p in group.points] if group is not None else []
    return list(params.selections().values())


def printed_by_label(spec: ClaimSpec, tier: TierSpec) -> dict[str, str]:
    """Selection label -> the paper's number for it as printed, over every check of the tier."""
    out: dict[str, str] = {}
    for check in tier.checks:
        for sel in check_selections(check, tier):
            text = selection_paper_text(spec, tier, sel)
            if text is not None:
                out.setdefault(sel.label, text)
    return out


def check_paper_line(spec: ClaimSpec, tier: TierSpec, check: Any, with_paper: bool = True) -> str:
    """"paper: a = 70, b = 40" (or the axis' values in order) for what a check reads; nothing in a
    report without paper numbers (``with_paper`` False), where there is no paper to speak of."""
    if not with_paper:
        return ""
    sels = check_selections(check, tier)
    texts = [(s.label, selection_paper_text(spec, tier, s)) for s in sels]
    if not any(t for _, t in texts):
        return "the paper prints no number for what this check reads"
    if check.kind == "monotonic":
        return "the paper's numbers along the axis: " + " → ".join(t or "-" for _, t in texts)
    return "the paper's numbers: " + ", ".join(f"{label} = {t or '-'}" for label, t in texts)


def check_paper_numbers(spec: ClaimSpec, tier: TierSpec, check: Any) -> str:
    """The paper's numbers a check reads, as the index's paper column shows them ("70 vs 40",
    or the two ends of an axis, "0 → 70"); "-" where the paper prints none."""
    texts = [selection_paper_text(spec, tier, s) for s in check_selections(check, tier)]
    if not any(texts):
        return "-"
    if check.kind == "monotonic":
        return f"{texts[0] or '-'} → {texts[-1] or '-'}"
    return " vs ".join(t or "-" for t in texts)


def quotes_a_paper(spec: ClaimSpec) -> bool:
    """Whether a claim quotes a paper's number at some tier, or covers rows of a paper's tables."""
    return bool(spec.scope or spec.out_of_scope) or any(
        point.paper for t in spec.tiers.values() for group in t.groups.values() for point in group.points)


def paper_to_reproduce(specs: list[ClaimSpec], tables: Any = ()) -> bool:
    """Whether these claims are a paper's, to be reproduced: the paper's tables are given, or a
    claim of their folders quotes a paper's number or covers rows of its tables. A folder of
    claims about one's own experiment does none of this; its pages then speak of no paper and its
    verdicts read "holds" / "does not hold".

    Decided on the claims' whole folders, not on the claims selected or the tier: a paper's claim
    that quotes no number itself (a scaled analog, a simulation) is still the paper's, in a report
    of it alone, at any tier and as a pytest item, so its words never depend on what ran beside it."""
    if tables or any(quotes_a_paper(s) for s in specs):
        return True
    return any(_folder_quotes_a_paper(folder, _folder_state(folder))
               for folder in sorted({s.path.parent.resolve() for s in specs}))


def _folder_state(folder: Path) -> tuple:
    """The folder's claim files as (name, modification time, size): a changed file is read again."""
    out = []
    for path in claim_files(folder):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


@lru_cache(maxsize=64)
def _folder_quotes_a_paper(folder: Path, state: tuple) -> bool:
    # Each pytest item asks for its own folder: read once per folder state, not once per claim.
    for name, _, _ in state:
        try:
            spec = load_claim(folder / name)
        except (SpecError, OSError):  # a broken claim says nothing about the folder; its own item reports it
            continue
        if quotes_a_paper(spec):
            return True
    return False
