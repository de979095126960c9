"""Claims + cache -> reports/<tier>/: index.md, one page per claim, runs.md, PNG plots.

In:  ClaimSpecs, tier, RunStore (reports render from the cache alone; nothing is trained).
Out: markdown files, deterministic for the same cache (sorted, no timestamps), and the Verdicts.
     This module writes the index and the claim pages and swaps the folder into place; the runs
     tables are ``claimbench.report.runs_page``, the paper's numbers as printed
     ``claimbench.report.paper_numbers``, the plots ``claimbench.report.plots`` and the paper
     tables' pages ``claimbench.report.tables``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from claimbench.cache import RunStore, run_key
from claimbench.check.evaluate import evaluate_claim
from claimbench.check.verdict import (NOT_REPRODUCED, NOT_RUN, REPRODUCED, TEST_SEEDS, UNVERIFIED_MARK, Verdict, fmt,
                                     status_words)
from claimbench.report.output import is_claimbench_output, prepare_output, replace_output
from claimbench.report.plots import render_plots, write_plot_digests
from claimbench.report.mdtable import Markup, markdown_table
from claimbench.report.paper_numbers import (check_paper_line, check_paper_numbers, check_selections, paper_to_reproduce,
                                             printed_by_label, selection_paper_text)
from claimbench.report.runs_page import plugins_note, runs_page, runs_table
from claimbench.spec.claims import ClaimSpec, TierSpec
from claimbench.spec.paper import PaperSpec, find_paper

log = logging.getLogger(__name__)

# Marked by status, not by its words: a claim about one's own experiment holds or does not.
VERDICT_ICON = {REPRODUCED: "✅", NOT_REPRODUCED: "❌", "inconclusive": "❔", "error": "⚠️", NOT_RUN: "➖"}


def verdict_mark(status: str, with_paper: bool = True) -> str:
    """"✅ reproduced" for a paper's claim, "✅ holds" for one about one's own experiment."""
    words = status_words(status, with_paper)
    return f"{VERDICT_ICON[status]} {words}" if status in VERDICT_ICON else words


def tally(verdicts: list[Verdict], with_paper: bool = True) -> str:
    """"1 not reproduced, 2 reproduced": how many of each status, in the claims' words ("2 holds"
    for claims about one's own experiment), ordered by the status so both read in one order."""
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return ", ".join(f"{n} {status_words(s, with_paper)}" for s, n in sorted(counts.items()))


def render_reports(specs: list[ClaimSpec], tier: str, store: RunStore, out: Path, tables: list = (),
                   banner: str | None = None) -> list[Verdict]:
    """Render into a temporary folder beside ``out`` and swap it into place, so a failed render
    never leaves a half-written report; with no claims nothing is written at all, and a folder
    claimbench did not write is refused before anything is rendered (``claimbench.report.output``). ``banner``: a
    warning put at the top of every page (a dry run's: these are not results)."""
    top = f"> **{banner}**\n\n" if banner else ""
    if not specs:
        raise ValueError("no claim matches: nothing to report")
    out = prepare_output(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    previous = out if is_claimbench_output(out) else None  # its unchanged plots are reused
    try:
        verdicts = []
        digests: dict[str, str] = {}
        # Decided once for the whole report, on the claims' folders: claims about one's own
        # experiment give no paper numbers, and then no page speaks of a paper or of reproducing.
        with_paper = paper_to_reproduce(specs, tables)
        for spec in sorted(specs, key=lambda s: s.id):
            verdict = evaluate_claim(spec, tier, store, with_paper)
            verdicts.append(verdict)
            t = spec.tier(tier)
            plots = render_plots(spec, t, store, tmp, previous, digests) if not t.not_run else []
            (tmp / f"{spec.id}.md").write_text(top + claim_page(spec, t, verdict, store, plots, with_paper))
        write_plot_digests(tmp, digests)
        # Paper tables regenerated beside ours (claimbench/report/tables.py), linked from the index.
        from claimbench.report.tables import render_tables, tables_index

        table_pages = render_tables(list(tables), tier, store, tmp, specs) if tables else []
        (tmp / "index.md").write_text(top + index_page(specs, verdicts, tier, claims_paper(specs), with_paper)
                                      + tables_index(table_pages))
        (tmp / "runs.md").write_text(top + runs_page(specs, tier, store))
        replace_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return verdicts


# --- the paper description titles the index; the headline shows what the check is about.
def claims_paper(specs: list[ClaimSpec]) -> PaperSpec | None:
    """The paper description shared by the claims' folders; None if they have none or several."""
    papers = {folder: find_paper(folder) for folder in {s.path.parent.resolve() for s in specs}}
    found = {p.path.resolve() if p else None: p for p in papers.values()}
    return found.popitem()[1] if len(found) == 1 else None


def headline(verdict: Verdict, printed: dict[str, str] | None = None) -> tuple[str, str]:
    """(paper values, reproduced values) of the check that decided the verdict (else the first).

    Both sides of a comparison (``a vs b``), the two ends of an axis (``first → last``), or the
    one selection of a value/distribution check: mean ± std (n) each. ``printed``: selection
    label -> the paper's number as printed, shown instead of the number re-formatted.
    """
    printed = printed or {}
    i = headline_check(verdict)
    if i is not None:
        check = verdict.checks[i]
        items = list(check.observed.items())
        sep = " → " if check.kind == "monotonic" else " vs "
        if len(items) > 2:  # an axis: its two ends
            items = [items[0], items[-1]]
        papers = [o.get("paper") for _, o in items]
        paper = sep.join(printed.get(label) or (fmt(x) if isinstance(x, (int, float)) else "-")
                         for (label, _), x in zip(items, papers))
        ours = sep.join(f"{label}: {fmt(o['mean'])} ± {fmt(o['std'])} (n={o['n']})" for label, o in items)
        return (paper if any(isinstance(x, (int, float)) for x in papers) else "-"), ours
    return "-", "-"


def headline_check(verdict: Verdict) -> int | None:
    """Which of the verdict's checks the index's headline shows: the first that decided the
    verdict and read numbers, else the first that read numbers; None where none did."""
    checks = [(i, c) for i, c in enumerate(verdict.checks) if not c.robustness]
    deciding = [(i, c) for i, c in checks if c.status == verdict.status] or checks
    return next((i for i, c in deciding if c.observed), None)


def expected_text(check: Any) -> str:
    """What a check expects of one selection, from its own thresholds ("50 ± 5" for a value check
    that gives ``expected``, ">= 0 and <= 90" for a distribution): the index's column where the
    claims are about one's own experiment and there is no paper's number to show. "-" for a check
    that compares runs with each other, or a value check that gives no ``expected``."""
    p = check.params
    if check.kind == "value" and p.expected is not None:
        return f"{fmt(p.expected)} ± {fmt(p.tolerance)}"
    if check.kind == "distribution":
        return bounds_text(p) or "-"
    return "-"


def bounds_text(p: Any) -> str:
    """A distribution's bounds: ">= 0 and <= 90", or the one it gives."""
    return " and ".join(x for x in (f">= {fmt(p.min)}" if p.min is not None else "",
                                    f"<= {fmt(p.max)}" if p.max is not None else "") if x)


def verdict_text(verdict: Verdict, with_paper: bool = True) -> str:
    """The verdict and its reason as a reader sees it, once: "➖ not run: 6 of 6 runs missing"
    (the reason of a claim not run starts with the words of its status, which are not doubled),
    and whether it rests on fewer seeds than a significance test needs. ``with_paper`` False:
    in the words of claims about one's own experiment ("✅ holds")."""
    status = verdict_mark(verdict.status, with_paper)
    reason = verdict.reason
    if reason.startswith(f"{verdict.status}: "):
        reason = reason[len(verdict.status) + 2:]
    if verdict.status != REPRODUCED and reason:
        status += f": {reason}"
    notes = [n for n in (verdict.unverified_note(), verdict.seeds_note()) if n]
    return (f"{UNVERIFIED_MARK}{status}" if verdict.unverified_note() else status) + "".join(f" ({n})" for n in notes)


def short_reason(text: str) -> str:
    """The first clause of a not-run reason, for the index's summary."""
    words = " ".join(text.split())
    for stop in (": ", "; ", ". "):
        words = words.split(stop, 1)[0]
    return words.rstrip(".")


def summary_paragraph(specs: list[ClaimSpec], verdicts: list[Verdict], tier: str, with_paper: bool | None = None) -> str:
    """One paragraph: how many findings, how many reproduced at this tier (and on how few seeds),
    how many did not, and what could not be run and why. ``with_paper``: whether the claims are a
    paper's (``paper_to_reproduce``, decided from ``specs`` when not given)."""
    if with_paper is None:
        with_paper = paper_to_reproduce(specs)
    by_id = {s.id: s for s in specs}
    n = len(verdicts)
    status = {v.claim_id: v.status for v in verdicts}
    count = lambda st: sum(1 for x in status.values() if x == st)  # noqa: E731
    if with_paper:
        scale = ("the paper's own settings" if tier == "full" else
                 "scaled analogs of the paper's settings (smaller data, networks and schedules), so they speak to "
                 "directions and orders, not to the paper's digits")
        text = [f"This report checks {n} finding{'s' if n != 1 else ''} of the paper, each written as a claim whose "
                f"checks compare our runs with the paper's words and numbers. At the `{tier}` tier the runs are {scale}."]
    else:
        text = [f"This report checks {n} claim{'s' if n != 1 else ''}, each decided by checks on the runs it names "
                f"(tier `{tier}`)."]
    reproduced = [v for v in verdicts if v.status == REPRODUCED]
    few = sum(1 for v in reproduced if v.seeds_note())
    decided = [f"{len(reproduced)} {status_words(REPRODUCED, with_paper)} at the `{tier}` tier"
               + (f" ({few} of them decided on fewer than {TEST_SEEDS} seeds, with no significance test)" if few else "")]
    decided += [f"{count(st)} {status_words(st, with_paper)}" for st in (NOT_REPRODUCED, "inconclusive", "error")
                if count(st)]
    text.append(", ".join(decided) + ".")
    by_design = [v for v in verdicts if v.status == NOT_RUN and by_id[v.claim_id].tier(tier).not_run]
    waiting = [v for v in verdicts if v.status == NOT_RUN and not by_id[v.claim_id].tier(tier).not_run]
    if by_design:
        reasons: dict[str, list[str]] = {}
        for v in by_design:
            reasons.setdefault(short_reason(by_id[v.claim_id].tier(tier).not_run), []).append(v.claim_id)
        text.append(f"{len(by_design)} cannot be run at this tier: "
                    + "; ".join(f"{why} ({', '.join(ids)})" for why, ids in reasons.items()) + ".")
    if waiting:
        cost = ("" if tier != "full" else
                ", GPU work on the paper's datasets and schedules (`claimbench plan --tier full` prices it)" if with_paper
                else ", GPU work (`claimbench plan --tier full` prices it)")
        text.append(f"{len(waiting)} {'are' if len(waiting) != 1 else 'is'} not run yet because {'their' if len(waiting) != 1 else 'its'} "
                    f"runs are not in this cache: `claimbench train --tier {tier}` trains them{cost}.")
    return " ".join(text)


def index_page(specs: list[ClaimSpec], verdicts: list[Verdict], tier: str, paper_spec: PaperSpec | None = None,
               with_paper: bool | None = None) -> str:
    """``with_paper``: whether the claims are a paper's (``paper_to_reproduce``, decided from
    ``specs`` when not given); if not, no paper column and the verdicts in an experiment's words."""
    if with_paper is None:
        with_paper = paper_to_reproduce(specs)
    by_id = {s.id: s for s in specs}
    rows = []
    any_expected = False
    for v in sorted(verdicts, key=lambda v: v.claim_id):
        s = by_id[v.claim_id]
        t = s.tier(tier)
        paper, ours = headline(v, printed_by_label(s, t) if not t.not_run else {})
        if not v.checks and not t.not_run and t.checks:  # not run yet: what the first check will compare
            paper = check_paper_numbers(s, t, t.checks[0])
        if not with_paper:
            # No paper's number to show: what the same check expects, from its own thresholds.
            shown = headline_check(v) if v.checks else (0 if not t.not_run and t.checks else None)
            paper = expected_text(t.checks[shown]) if shown is not None and shown < len(t.checks) else "-"
            any_expected = any_expected or paper != "-"
        status = verdict_text(v, with_paper)
        if not t.gate and v.status != NOT_RUN:
            status += " (outside CI gate)"
        rows.append((Markup(f"[{s.id}]({s.id}.md)"), f"{s.source.get('paper', '')}: {s.source.get('where', '')}",
                     status, paper, ours, scope_summary(s)))
    # Columns a folder without paper numbers or scopes has nothing for are left out, not shown empty;
    # where there are no paper numbers, the checks' own thresholds are what the runs are held to.
    with_scopes = any(s.scope for s in specs)
    keep = [True, True, True, with_paper or any_expected, True, with_scopes]
    headers = [h for h, k in zip(("claim", "source", "verdict", "paper" if with_paper else "expected",
                                  "measured (mean ± std, n)", "paper rows against it"), keep) if k]
    rows = [tuple(x for x, k in zip(row, keep) if k) for row in rows]
    title = f"Claims of {paper_spec.citation}: *{paper_spec.title}*" if paper_spec else "Claims"
    scale_note = ("" if tier == "full" or not with_paper else
                  "Paper values are at the paper's scale; at this tier the runs are scaled analogs (see each page), "
                  "so compare directions and orders, not digits.\n\n")
    scope_note = ("\n\n*Paper rows against it*: of the rows of the paper's tables the claim's words cover (its scope), "
                  "how many the paper's own numbers contradict; each is a stated exception on the claim's page. "
                  "Cells left out are the cells of the tables the claim touches that its words do not cover, each "
                  "with the reason on the claim's page."
                  if with_scopes else "")
    n = len(verdicts)
    return (f"# {title}, tier `{tier}`\n\n"
            + summary_paragraph(specs, verdicts, tier, with_paper) + "\n\n"
            f"## Claims\n\n{n} claim{'s' if n != 1 else ''}: {tally(verdicts, with_paper)}. A verdict on fewer than {TEST_SEEDS} seeds says "
            "so: there the margin or tolerance alone decided, without a significance test.\n\n"
            + scale_note
            + markdown_table(rows, headers) + scope_note
            + "\n\nAll runs: [runs.md](runs.md)\n")


def check_rule(check: Any, paper: str | None = None, with_paper: bool = True) -> str:
    """What a check decides, in the words of its kind's rule (the same rule claimbench.check.kinds
    applies), without any measured number. ``paper``: the paper's number a value check compares
    with when it gives no ``expected``; ``with_paper`` False: the claims are about one's own
    experiment, where a value check without ``expected`` has nothing to compare with."""
    p, kind = check.params, check.kind
    sels = p.selections() if kind != "monotonic" else {}
    a, b = (sels.get("a"), sels.get("b"))
    test = f"; with {TEST_SEEDS}+ seeds a side, also a one-sided test at alpha {getattr(p, 'alpha', 0.05)}"
    if kind in ("greater", "layer_pattern"):
        return f"mean {a.label} - mean {b.label} > {fmt(p.margin)}{test}"
    if kind == "less":
        return f"mean {b.label} - mean {a.label} > {fmt(p.margin)}{test}"
    if kind == "at_most":
        return f"mean {a.label} <= mean {b.label} + {fmt(p.margin)}{test}"
    if kind == "equal":
        return f"|mean {a.label} - mean {b.label}| <= {fmt(p.tolerance)}; with {TEST_SEEDS}+ seeds a side, also its 95% CI"
    if kind == "value":
        if p.expected is None and not with_paper:
            return f"|mean {a.label} - expected| <= {fmt(p.tolerance)}; no expected value: give 'expected'"
        expected = fmt(p.expected) if p.expected is not None else (paper or "the paper's number")
        return f"|mean {a.label} - {expected}| <= {fmt(p.tolerance)}"
    if kind == "monotonic":
        return (f"{p.metric} {p.direction} along {p.run}'s axis: no step against it by more than {fmt(p.slack)}, "
                f"last - first beyond {fmt(p.min_change)}")
    if kind == "distribution":
        return f"mean {a.label} {bounds_text(p)}"
    return kind


def checks_section(spec: ClaimSpec, tier: TierSpec, verdict: Verdict, pending: str = "not run yet",
                   with_paper: bool = True) -> list[str]:
    """Each check: what was decided and the arithmetic; for a tier not run yet, what it would
    check, with the paper's numbers, so a reader sees the test before any run exists (each
    marked ``pending``)."""
    if not verdict.checks:
        parts = ["## Checks (what will be checked once the runs exist)\n"]
        for check in tier.checks:
            sels = check_selections(check, tier)
            rule = check_rule(check, selection_paper_text(spec, tier, sels[0]) if sels else None, with_paper)
            desc = check.params.description
            line = check_paper_line(spec, tier, check, with_paper)
            parts.append(f"- **{pending}** — {desc + '  ' + chr(10) + '  rule: ' if desc else ''}`{rule}`"
                         + (f"  \n  {line}" if line else ""))
        return parts
    parts = ["## Checks\n"]
    # The checks read the same runs as the verdict: numbers not measured here are marked on each.
    mark = UNVERIFIED_MARK if verdict.unverified_note() else ""
    for c, check in zip(verdict.checks, tier.checks):
        line = check_paper_line(spec, tier, check, with_paper)
        status = status_words(c.status, with_paper)
        if c.robustness:
            status = f"robustness row, not part of the verdict: {status}"
            line = f"varies: {c.robustness}" + (f"  \n  {line}" if line else "")
        parts.append(f"- {mark}**{status}** — {c.description}  \n  `{c.arithmetic}`" + (f"  \n  {c.reason}" if c.reason else "")
                     + (f"  \n  {line}" if line else ""))
    note = verdict.seeds_note()
    if note:
        parts.append(f"\nThis verdict was {note}: where a side had fewer seeds, the margin or tolerance alone decided.")
    if mark:
        parts.append(f"\n⚠️ These checks read runs whose numbers were not measured here ({verdict.unverified_note()}): "
                     "imported without re-measuring, or found in a cache this user did not train. "
                     "`claimbench cache verify` re-measures those with weights and data.")
    return parts


def claim_page(spec: ClaimSpec, tier: TierSpec, verdict: Verdict, store: RunStore, plots: list[str],
               with_paper: bool = True) -> str:
    parts = [f"# {spec.id}: {spec.title}\n",
             f"**Verdict ({verdict.tier} tier): {verdict_text(verdict, with_paper)}**\n",
             "> " + spec.claim.replace("\n", "\n> ") + "\n",
             f"Source: `{spec.source.get('paper', '')}`, {spec.source.get('where', '')}. Claim file: `{spec.path.name}`.\n"]
    if spec.notes:
        parts.append(spec.notes + "\n")
    parts += scope_section(spec) + assumptions_section(spec, with_paper)
    if tier.not_run:
        parts.append(f"**Not run at this tier:** {tier.not_run}\n")
        for other in spec.tiers.values():
            if other.name != tier.name and not other.not_run and other.checks:
                parts.append(f"## What the `{other.name}` tier checks instead\n")
                if other.why:
                    parts.append(f"{' '.join(other.why.split())}\n")
                parts += checks_section(spec, other, Verdict(spec.id, other.name, NOT_RUN), "checks", with_paper)[1:]
                parts.append("")
        return "\n".join(parts) + "\n"
    if tier.why:
        parts.append(f"## How this tier is scaled\n\n{tier.why}\n")
    if not tier.gate:
        parts.append(f"**Outside the CI gate:** {tier.gate_reason}\n")
    parts += checks_section(spec, tier, verdict, with_paper=with_paper)
    parts.append("\n## Runs (paper value beside ours; ours are mean ± std over seeds)\n" if with_paper
                 else "\n## Runs (mean ± std over seeds)\n")
    parts.append(runs_table(tier, store, spec))
    trained_by = plugins_note([store.get(run_key(c)) for c in tier.configs()], store)
    if trained_by:
        parts.append(f"\n{trained_by}\n")
    for p in plots:
        parts.append(f"\n![{p}]({p})\n")
    return "\n".join(parts) + "\n"


def scope_summary(spec: ClaimSpec) -> str:
    """The index's mark: how many rows of the claim's scope the paper's numbers go against."""
    from claimbench.check.oracle import scope_rows

    if not spec.scope:
        return "no table region" if spec.no_scope else "-"
    rows = [r for region in spec.scope for r in scope_rows(region)]
    against = sum(not r.holds for r in rows)
    mark = f"⚠️ {against} of {len(rows)} (stated exceptions)" if against else f"0 of {len(rows)}"
    left = len({cid for o in spec.out_of_scope for cid in o.cells})
    # What the claim leaves out counts too: a small region over a large table says so here.
    return mark + (f"; {left} cells left out (reasons on its page)" if left else "")


def scope_section(spec: ClaimSpec) -> list[str]:
    """What the claim's words cover in the paper's tables, and every row there that goes against
    them, with the paper's numbers and the stated reason."""
    from claimbench.check.oracle import scope_rows
    from claimbench.spec.statement import statement_words

    if spec.no_scope:
        return [f"**No table region:** {spec.no_scope}\n"]
    if not spec.scope:
        return []
    parts = ["## What the claim covers in the paper's tables\n",
             "Each statement is judged on the paper's own numbers in every row of its region; a row that goes "
             "against it is an exception the claim states, with the reason.\n"]
    for i, region in enumerate(spec.scope, 1):
        rows = scope_rows(region)
        against = [r for r in rows if not r.holds]
        columns = f"; columns {', '.join(region.columns)}" if region.columns else ""
        parts.append(f"{i}. **Table {region.table_number}** (`{region.table}`), {region.rows}{columns}; "
                     f"metrics {', '.join(region.metrics)}. Statement: *{region.statement.description}* "
                     f"(`{statement_words(region.statement)}`). {len(rows)} rows, "
                     f"{len(against)} exception{'s' if len(against) != 1 else ''}.")
        if against:
            table = [(r.cell.split("/", 1)[1], r.metric, r.numbers, r.exception.reason if r.exception else "NOT LISTED")
                     for r in against]
            body = markdown_table(table, ("row", "metric", "the paper's numbers", "reason"))
            parts.append("\n" + "\n".join("   " + line for line in body.splitlines()))
    if spec.out_of_scope:
        parts.append("\n### Rows of these tables the claim leaves out, and why\n")
        table = [(f"Table {o.table_number}", o.rows + (f"; columns {', '.join(o.columns)}" if o.columns else ""),
                  len(o.cells), o.reason) for o in spec.out_of_scope]
        parts.append(markdown_table(table, ("table", "rows", "cells", "reason")))
    return parts + [""]


def assumptions_section(spec: ClaimSpec, with_paper: bool = True) -> list[str]:
    """Settings the paper does not state that the claim's runs assume, each with its reason and
    the table cells it applies to (marked beside them on the table pages); for claims about one's
    own experiment (``with_paper`` False) the settings its runs assume, with no paper to name."""
    if not spec.assume:
        return []
    parts = ["## Settings the paper does not state (assumed)\n" if with_paper else "## Settings assumed\n"]
    for a in spec.assume:
        cells = f" Applies to: {', '.join(f'`{c}`' for c in a.cells)}." if a.cells else ""
        parts.append(f"- **Assumed:** {a.text} *Why:* {a.reason}{cells}")
    return parts + [""]


