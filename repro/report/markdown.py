"""Claims + cache -> reports/<tier>/: index.md, one page per claim, runs.md, PNG plots.

In:  ClaimSpecs, tier, RunStore (reports render from the cache alone; nothing is trained).
Out: markdown files, deterministic for the same cache (sorted, no timestamps), and the Verdicts.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from tabulate import tabulate

from repro.cache import RunStore, run_key
from repro.cache.store import REFRESH_COMMAND
from repro.check.evaluate import evaluate_claim
from repro.check.verdict import NOT_RUN, Verdict, fmt
from repro.report.output import prepare_output, replace_output
from repro.report.plots import render_plots
from repro.spec.claims import ClaimSpec, TierSpec
from repro.spec.paper import PaperSpec, find_paper

log = logging.getLogger(__name__)

# Metrics shown in every run table, besides those the paper gives a number for.
RUN_TABLE_METRICS = ("test_error", "sparsity_gamma", "sparsity_act", "pruned_test_error")
VERDICT_MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "inconclusive": "❔ inconclusive",
                "error": "⚠️ error", "not run": "➖ not run"}


def render_reports(specs: list[ClaimSpec], tier: str, store: RunStore, out: Path, tables: list = (),
                   banner: str | None = None) -> list[Verdict]:
    """Render into a temporary folder beside ``out`` and swap it into place, so a failed render
    never leaves a half-written report; with no claims nothing is written at all, and a folder
    repro did not write is refused before anything is rendered (``repro.report.output``). ``banner``: a
    warning put at the top of every page (a dry run's: these are not results)."""
    top = f"> **{banner}**\n\n" if banner else ""
    if not specs:
        raise ValueError("no claim matches: nothing to report")
    out = prepare_output(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    try:
        verdicts = []
        for spec in sorted(specs, key=lambda s: s.id):
            verdict = evaluate_claim(spec, tier, store)
            verdicts.append(verdict)
            t = spec.tier(tier)
            plots = render_plots(spec, t, store, tmp) if not t.not_run else []
            (tmp / f"{spec.id}.md").write_text(top + claim_page(spec, t, verdict, store, plots))
        # Paper tables regenerated beside ours (repro/report/tables.py), linked from the index.
        from repro.report.tables import render_tables, tables_index

        table_pages = render_tables(list(tables), tier, store, tmp, specs) if tables else []
        (tmp / "index.md").write_text(top + index_page(specs, verdicts, tier, claims_paper(specs)) + tables_index(table_pages))
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


def headline(verdict: Verdict) -> tuple[str, str]:
    """(paper values, reproduced values) of the check that decided the verdict (else the first).

    Both sides of a comparison (``a vs b``), the two ends of an axis (``first → last``), or the
    one selection of a value/distribution check: mean ± std (n) each.
    """
    deciding = [c for c in verdict.checks if c.status == verdict.status] or verdict.checks
    for check in deciding:
        items = list(check.observed.items())
        if not items:
            continue
        sep = " → " if check.kind == "monotonic" else " vs "
        if len(items) > 2:  # an axis: its two ends
            items = [items[0], items[-1]]
        papers = [o.get("paper") for _, o in items]
        paper = sep.join(fmt(x) if isinstance(x, (int, float)) else "-" for x in papers)
        ours = sep.join(f"{label}: {fmt(o['mean'])} ± {fmt(o['std'])} (n={o['n']})" for label, o in items)
        return (paper if any(isinstance(x, (int, float)) for x in papers) else "-"), ours
    return "-", "-"


def index_page(specs: list[ClaimSpec], verdicts: list[Verdict], tier: str, paper_spec: PaperSpec | None = None) -> str:
    by_id = {s.id: s for s in specs}
    rows = []
    for v in sorted(verdicts, key=lambda v: v.claim_id):
        s = by_id[v.claim_id]
        paper, ours = headline(v)
        status = VERDICT_MARK.get(v.status, v.status)
        if v.status != "reproduced" and v.reason:
            status += f": {v.reason}"
        if not s.tier(tier).gate and v.status != NOT_RUN:
            status += " (outside CI gate)"
        rows.append((f"[{s.id}]({s.id}.md)", s.finding or "", f"{s.source.get('paper', '')}: {s.source.get('where', '')}",
                     status, paper, ours, scope_summary(s)))
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    title = f"Claims of {paper_spec.citation}: *{paper_spec.title}*" if paper_spec else "Claims"
    return (f"# {title}, tier `{tier}`\n\n"
            f"{len(verdicts)} claims: {summary}.\n\n"
            "Paper values are at the paper's scale; at the smoke tier the runs are scaled analogs (see each page), "
            "so compare directions and orders, not digits.\n\n"
            + tabulate(rows, headers=("claim", "finding", "source", "verdict", "paper", "reproduced (mean ± std, n)",
                                      "paper rows against it"),
                       tablefmt="github") + "\n\n*Paper rows against it*: of the rows of the paper's tables the claim's "
            "words cover (its scope), how many the paper's own numbers contradict; each is a stated exception on "
            "the claim's page.\n\nAll runs: [runs.md](runs.md)\n")


def claim_page(spec: ClaimSpec, tier: TierSpec, verdict: Verdict, store: RunStore, plots: list[str]) -> str:
    parts = [f"# {spec.id}: {spec.title}\n",
             f"**Verdict ({verdict.tier} tier): {VERDICT_MARK.get(verdict.status, verdict.status)}**"
             + (f" — {verdict.reason}" if verdict.reason else "") + "\n",
             "> " + spec.claim.replace("\n", "\n> ") + "\n",
             f"Source: `{spec.source.get('paper', '')}`, {spec.source.get('where', '')}. Claim file: `{spec.path.name}`.\n"]
    if spec.notes:
        parts.append(spec.notes + "\n")
    parts += scope_section(spec) + assumptions_section(spec)
    if tier.not_run:
        parts.append(f"**Not run at this tier:** {tier.not_run}\n")
        return "\n".join(parts)
    if tier.why:
        parts.append(f"## How this tier is scaled\n\n{tier.why}\n")
    if not tier.gate:
        parts.append(f"**Outside the CI gate:** {tier.gate_reason}\n")
    parts.append("## Checks\n")
    for c in verdict.checks:
        parts.append(f"- **{c.status}** — {c.description}  \n  `{c.arithmetic}`" + (f"  \n  {c.reason}" if c.reason else ""))
    parts.append("\n## Runs (paper value beside ours; ours are mean ± std over seeds)\n")
    parts.append(runs_table(tier, store))
    for p in plots:
        parts.append(f"\n![{p}]({p})\n")
    return "\n".join(parts) + "\n"


def scope_summary(spec: ClaimSpec) -> str:
    """The index's mark: how many rows of the claim's scope the paper's numbers go against."""
    from repro.check.oracle import scope_rows

    if not spec.scope:
        return "no table region" if spec.no_scope else "-"
    rows = [r for region in spec.scope for r in scope_rows(region)]
    against = sum(not r.holds for r in rows)
    return f"⚠️ {against} of {len(rows)} (stated exceptions)" if against else f"0 of {len(rows)}"


def scope_section(spec: ClaimSpec) -> list[str]:
    """What the claim's words cover in the paper's tables, and every row there that goes against
    them, with the paper's numbers and the stated reason."""
    from repro.check.oracle import scope_rows
    from repro.spec.scope import statement_words

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
            body = tabulate(table, headers=("row", "metric", "the paper's numbers", "reason"), tablefmt="github")
            parts.append("\n" + "\n".join("   " + line for line in body.splitlines()))
    return parts + [""]


def assumptions_section(spec: ClaimSpec) -> list[str]:
    """Settings the paper does not state that the claim's runs assume, each with its reason and
    the table cells it applies to (marked beside them on the table pages)."""
    if not spec.assume:
        return []
    parts = ["## Settings the paper does not state (assumed)\n"]
    for a in spec.assume:
        cells = f" Applies to: {', '.join(f'`{c}`' for c in a.cells)}." if a.cells else ""
        parts.append(f"- **Assumed:** {a.text} *Why:* {a.reason}{cells}")
    return parts + [""]


def runs_table(tier: TierSpec, store: RunStore) -> str:
    from repro.check.evaluate import simulation_metrics
    from repro.check.verdict import Stats

    metrics = list(RUN_TABLE_METRICS)
    for g in tier.groups.values():
        for p in g.points:
            metrics += [m for m in p.paper if m not in metrics]
    rows = []
    for g in tier.groups.values():
        for p in g.points:
            if g.simulate is not None:
                computed = simulation_metrics(g.simulate, store)
                per_seed = computed[p.axis_value] if computed is not None else [None]
                summary = f"simulation {g.simulate.optimizer}+{g.simulate.regularizer} lam={p.axis_value:g}"
            else:
                records = [store.get(run_key(c)) for c in p.configs]
                per_seed = [r.metrics if r else None for r in records]
                summary = p.configs[0].summary().rsplit(" s", 1)[0]
                unverified = sum(1 for r in records if r is not None and not r.verified)
                if unverified:  # numbers taken on an archive's word, not re-measured here
                    summary += f" ({unverified} of {len(records)} seeds imported, unverified)"
                stale = sum(1 for r in records if r is not None and r.metrics_stale)
                if stale:  # a report only reads: it names the command that recomputes them
                    summary += (f" ({stale} of {len(records)} seeds measured by older code; "
                                f"`{REFRESH_COMMAND}` recomputes them)")
            row = [g.name + (f"@{p.axis_value}" if p.axis_value is not None else ""), summary]
            for m in metrics:
                vals = [x[m] for x in per_seed if x is not None and isinstance(x.get(m), (int, float)) and not isinstance(x.get(m), bool)]
                ours = str(Stats(tuple(vals))) if vals else ("missing" if any(x is None for x in per_seed) else "-")
                ref = p.paper.get(m)
                row.append(f"{ours}" + (f" / paper {fmt(ref) if not isinstance(ref, list) else ref}" if ref is not None else ""))
            rows.append(row)
    return tabulate(rows, headers=["run", "config", *metrics], tablefmt="github")


def runs_page(specs: list[ClaimSpec], tier: str, store: RunStore) -> str:
    seen: dict[str, list[str]] = {}
    configs = {}
    for s in sorted(specs, key=lambda s: s.id):
        for c in s.tier(tier).configs():
            key = run_key(c)
            seen.setdefault(key, []).append(s.id)
            configs[key] = c
    rows = []
    for key in sorted(seen, key=lambda k: (configs[k].summary(), k)):
        record = store.get(key)
        if record is None:
            rows.append((key[:12], configs[key].summary(), "not in cache", "", "", "", ", ".join(sorted(set(seen[key])))))
            continue
        m, prov = record.metrics, record.provenance
        metrics = ", ".join(f"{k}={fmt(m[k])}" for k in ("test_error", "sparsity_gamma", "sparsity_act", "pruned_test_error",
                                                         "conv_params_pruned_pct") if isinstance(m.get(k), (int, float)))
        if m.get("diverged_at") is not None:
            metrics = f"DIVERGED at step {m['diverged_at']}"
        if record.provenance_label:
            metrics += f" ({record.provenance_label})"
        rows.append((key[:12], configs[key].summary(), metrics, prov.get("device", ""), prov.get("torch", ""),
                     f"{prov.get('train_wall_s', '')} s", ", ".join(sorted(set(seen[key])))))
    return (f"# Runs of the `{tier}` tier\n\n{len(rows)} distinct runs. Key = first 12 hex digits of the cache key "
            "(`repro show KEY` prints the whole record).\n\n"
            + tabulate(rows, headers=("key", "config", "metrics", "device", "torch", "train time", "claims"), tablefmt="github") + "\n")
