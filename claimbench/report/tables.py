"""Paper tables regenerated beside ours: reports/<tier>/tables/<table>.md and a scatter per table.

In:  TableSpecs (claimbench.spec.tables), the tier, the RunStore (nothing is trained), and at the smoke
     tier the ClaimSpecs, whose smoke analogs stand in for the cells their full-tier runs fill.
Out: one markdown page per table laid out like the paper's (rows x column groups x metrics, or
     metrics down the side for ``layout: transposed``), every header cell named and every paper
     number as printed (markers kept, their meaning stated); the settings the paper does not state.
     At the full tier each cell is "ours / paper", ours "mean ± std (n=k)" over the cell's seeds
     and "-" where nothing is trained, and ``<table>.png`` plots ours against the paper with the
     identity line. At other tiers the runs are scaled analogs of other settings (other data,
     widths, lengths): their numbers go in a table of their own, one row per analog naming its
     setting and the paper cells it stands for, never into the paper's cells or onto the paper's
     axis (no plot). ``render_tables`` returns (table, page name) pairs for the index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from claimbench.cache import RunStore, run_key
from claimbench.check.verdict import UNVERIFIED_MARK, Stats
from claimbench.report.mdtable import markdown_table
from claimbench.spec.tables import TableCell, TableSpec, metric_value

log = logging.getLogger(__name__)

NOT_TRAINED = "-"


@dataclass(frozen=True)
class Analog:
    """Where a cell's numbers come from at the smoke tier: a claim's scaled-down run group."""

    claim: str
    group: str
    why: str
    configs: tuple


def smoke_analogs(claims: list) -> dict[str, Analog]:
    """Full-tier run key -> the smoke point of the same claim group and axis position.

    A claim whose full tier trains a table cell's configuration and whose smoke tier has a group of
    the same name (or its CIFAR-10 group without the ``c10_`` prefix) with as many axis points is the
    cell's analog; its ``why`` states the scaling.
    """
    out: dict[str, Analog] = {}
    for spec in sorted(claims, key=lambda s: s.id):
        full, smoke = spec.tier("full"), spec.tier("smoke")
        if full.not_run or smoke.not_run:
            continue
        for name, group in full.groups.items():
            # Same group name; smoke tiers often drop the "c10_" of the full tier's CIFAR-10 groups
            # (the digits analog stands for CIFAR-10 only: "c100_" groups are never stripped).
            analog = smoke.groups.get(name) or (smoke.groups.get(name[4:]) if name.startswith("c10_") else None)
            if analog is None or len(analog.points) != len(group.points) or group.simulate is not None:
                continue
            for point, spoint in zip(group.points, analog.points):
                if point.configs and spoint.configs:
                    out.setdefault(run_key(point.configs[0]), Analog(spec.id, name, smoke.why, spoint.configs))
    return out


def named_analogs(claims: list) -> dict[str, Analog]:
    """"claim:run@value" -> that smoke point, for the analogs table specs name (``smoke:``)."""
    out: dict[str, Analog] = {}
    for spec in claims:
        smoke = spec.tier("smoke")
        for name, group in ([] if smoke.not_run else smoke.groups.items()):
            for p in group.points:
                if p.configs:
                    at = "" if p.axis_value is None else f"@{p.axis_value}"
                    out[f"{spec.id}:{name}{at}"] = Analog(spec.id, name + at, smoke.why, p.configs)
    return out


def resolve_smoke(ref: str, named: dict[str, Analog]) -> Analog | None:
    """A table's ``smoke: claim:run@value`` (the value compared as a number) -> its Analog."""
    if ref in named:
        return named[ref]
    head, _, at = ref.partition("@")
    for key, analog in named.items():
        k_head, _, k_at = key.partition("@")
        if k_head == head and at and k_at:
            try:
                if float(k_at) == float(at):
                    return analog
            except ValueError:
                continue
    return None


def cell_records(cell: TableCell, tier: str, store: RunStore,
                 analogs: dict[str, Analog]) -> tuple[list[dict], Analog | None, int]:
    """Metrics of the cell's trained runs (diverged runs left out), the analog used, if any, and
    how many of the stored runs hold numbers not measured here (imported without re-measuring,
    or found in a cache this user did not train).

    At the smoke tier the analog is the one the table names for the cell (``smoke:``, looked up in
    ``analogs`` under "smoke:<ref>"), else the claim run found by configuration (smoke_analogs)."""
    if not cell.configs:
        return [], None, 0
    analog = None
    configs = cell.configs
    if tier != "full":
        analog = analogs.get(f"smoke:{cell.smoke}") if cell.smoke else analogs.get(run_key(cell.configs[0]))
        if analog is None:
            return [], None, 0
        configs = analog.configs
    stored = [r for c in configs if (r := store.get(run_key(c))) is not None]
    recs = [r.metrics for r in stored if r.metrics.get("diverged_at") is None]
    return recs, analog, sum(1 for r in stored if not r.verified)


def cell_stats(cell: TableCell, metric: str, records: list[dict]) -> Stats | None:
    values = [v for m in records if (v := metric_value(m, metric)) is not None]
    return Stats(tuple(values)) if values else None


def cell_text(cell: TableCell, metric: str, stats: Stats | None, tier: str = "full") -> str:
    # As printed ("31.38*"): the table writer escapes the marker so that it shows, not emphasises.
    paper_txt = cell.paper_text[metric] if metric in cell.paper_text else "(not printed)"
    if tier != "full":  # the analogs' numbers are of other settings: the paper's cell shows the paper's
        return f"ref. {paper_txt}" if cell.reference else paper_txt
    if cell.reference:
        return f"ref. / {paper_txt}"
    if cell.not_run:
        return f"not run / {paper_txt}"
    return f"{stats if stats is not None else NOT_TRAINED} / {paper_txt}"


def table_page(table: TableSpec, tier: str, store: RunStore, analogs: dict[str, Analog], plot: str | None,
               assumed: dict[str, list] | None = None) -> str:
    """``assumed``: cell id -> (claim id, Assumption) pairs, the settings claims assume for it."""
    records = {c.id: cell_records(c, tier, store, analogs) for c in table.cells}
    marks, marked = assumption_marks(table, assumed or {})
    texts = {(c.id, m): cell_text(c, m, cell_stats(c, m, records[c.id][0]), tier) for c in table.cells for m in table.metrics}
    # A number not measured here is marked in the cell that shows it, as on the verdicts it decides.
    unverified = {c.id for c in table.cells if tier == "full" and not c.reference and records[c.id][2]}
    texts = {(cid, m): f"{UNVERIFIED_MARK}{t}" if cid in unverified else t for (cid, m), t in texts.items()}
    where = f"`{table.source.get('paper', '')}`, {table.source.get('where', '')}"
    parts = [f"# Table {table.number}: {table.title}\n",
             f"Read from {where}. Spec: `claims/tables/{table.path.name}`. Tier `{tier}`.\n"]
    if tier == "full":
        parts.append("Each cell: **ours / paper**; ours is mean ± std over seeds (n = seeds trained), "
                     f"`{NOT_TRAINED}` where the cell is not trained at this tier, `ref.` where the paper quotes another "
                     "method (nothing to train). The paper's numbers are as printed.\n")
    else:
        parts.append(f"Each cell: **the paper's number as printed** (`ref.`: another method's). The `{tier}` tier trains "
                     "none of these settings: its runs are scaled analogs on other data, widths and lengths, so their "
                     "numbers are in a table of their own below, each beside the setting it was trained at, and "
                     "never in the paper's cells.\n")
    if table.notes:
        parts.append(table.notes + "\n")
    rows_out, headers = _layout(table, texts, marks)
    parts.append(markdown_table(rows_out, headers) + "\n")
    if unverified:
        parts.append(f"{UNVERIFIED_MARK}marks a cell whose numbers include runs not measured here (imported without "
                     "re-measuring, or found in a cache this user did not train); `claimbench cache verify` re-measures "
                     "those with weights and data.\n")
    if table.markers:
        parts.append("Markers as the paper prints them: "
                     + "; ".join(f"`{m}` = {meaning}" for m, meaning in table.markers) + ".\n")
    if tier != "full":
        parts += analog_section(table, tier, records)
    if marked:
        parts.append("## Settings assumed by the claims (marked beside the rows they apply to)\n")
        parts += marked
        parts.append("")
    notes = _cell_notes(table)
    if notes:
        parts.append("## Settings the paper does not state, and cells that are not run\n")
        parts += [f"- {n}" for n in notes]
        parts.append("")
    sources = sorted({(c.source.get("paper"), c.source.get("where")) for c in table.cells} - {(table.source.get("paper"), table.source.get("where"))})
    for paper, w in sources:
        rows = ", ".join(c.row for c in table.cells if (c.source.get("paper"), c.source.get("where")) == (paper, w))
        parts.append(f"Read from `{paper}`, {w} instead: {rows}.\n")
    if plot:
        parts.append(f"![ours against the paper]({plot})\n")
    elif tier != "full":
        parts.append("No plot of ours against the paper at this tier: an analog's numbers are of another setting, "
                     "not points on the paper's axis.\n")
    return "\n".join(parts) + "\n"


def analog_setting(configs: tuple) -> str:
    """The setting a smoke analog is trained at, in a reader's words ("digits, BasicNet width
    0.375, adam l2=0.01, batch 40, 3000 steps, seeds 0, 1, 2")."""
    cfg = configs[0]
    m, o, t = cfg.model, cfg.optim, cfg.train
    reg = "no regularizer" if o.regularizer == "none" or o.lam == 0 else f"{o.regularizer}={o.lam:g}"
    parts = [cfg.data.dataset, f"{m.arch} width {m.width:g}", f"{o.name} {reg}", f"batch {t.batch_size}",
             f"{sum(t.phases)} {t.unit}"]
    rest = cfg.summary().split()[4:-2]  # activation, beta init, BN learning-rate scales, precision
    seeds = ", ".join(str(c.train.seed) for c in configs)
    return ", ".join(parts + rest) + f"; seed{'s' if len(configs) != 1 else ''} {seeds}"


def analog_section(table: TableSpec, tier: str, records: dict) -> list[str]:
    """The scaled analogs standing in for the table's cells at this tier: one row per analog,
    its own setting, the paper cells it stands for, and its numbers (mean ± std over seeds)."""
    # Keyed by the runs themselves: one smoke run several claims name is one row.
    by_runs: dict[tuple, list[tuple[TableCell, list[dict], Analog]]] = {}
    for cell in table.cells:
        recs, analog, _ = records[cell.id]
        if analog is not None:
            by_runs.setdefault(analog.configs, []).append((cell, recs, analog))
    by_analog = {a: None for entries in by_runs.values() for _, _, a in entries}
    if not by_runs:
        return [f"No `{tier}`-tier analog stands for a cell of this table.\n"]
    parts = [f"## Smoke analogs: scaled runs of other settings, not the paper's\n",
             "Each row is a run of a claim's smoke tier, trained at the setting it names, standing for the paper cells "
             "listed (the paper's numbers for them are in the table above). It is scaled as its claim says, so compare "
             "directions across rows with the paper's across the cells they stand for, not digits.\n"]
    rows = []
    for configs, entries in sorted(by_runs.items(), key=lambda kv: min((a.claim, a.group) for _, _, a in kv[1])):
        names = ", ".join(dict.fromkeys(f"`{a.claim}`: {a.group}" for _, _, a in entries))
        stands = "; ".join(dict.fromkeys(c.row + (f" ({c.column})" if c.column else "") for c, _, _ in entries))
        recs = entries[0][1]
        mark = UNVERIFIED_MARK if records[entries[0][0].id][2] else ""
        values = [f"{mark}{st}" if (st := cell_stats(entries[0][0], m, recs)) is not None else NOT_TRAINED for m in table.metrics]
        rows.append([names, analog_setting(configs), stands, *values])
    headers = ["smoke analog (claim: run)", "its setting (smoke analog, not the paper's)", "stands for (paper cells)",
               *[f"{h}: analog" for h in table.headers]]
    parts.append(markdown_table(rows, headers) + "\n")
    parts.append("How each claim scales its analogs:\n")
    for claim in sorted({a.claim for a in by_analog}):
        a = next(x for x in by_analog if x.claim == claim)
        parts.append(f"- `{claim}`: {' '.join(a.why.split())}")
    return parts + [""]


def assumption_marks(table: TableSpec, assumed: dict[str, list]) -> tuple[dict[str, str], list[str]]:
    """Marks ``[A1]`` per cell for the settings claims assume for it (the paper does not state
    them), and the list that explains each mark: text, reason, claim."""
    labels: dict[tuple[str, str], str] = {}
    lines: list[str] = []
    marks: dict[str, str] = {}
    for cell in table.cells:
        for claim, a in assumed.get(cell.id, []):
            key = (claim, a.text)
            if key not in labels:
                labels[key] = f"A{len(labels) + 1}"
                lines.append(f"- **[{labels[key]}]** {a.text} *Why:* {a.reason} (claim `{claim}`)")
            marks[cell.id] = (marks.get(cell.id, "") + f" [{labels[key]}]").strip()
    return marks, lines


def claim_assumptions(claims: list) -> dict[str, list]:
    """Cell id -> (claim id, Assumption) for every assumption a claim names cells for."""
    out: dict[str, list] = {}
    for spec in sorted(claims, key=lambda s: s.id):
        for a in getattr(spec, "assume", ()):
            for cell in a.cells:
                out.setdefault(cell, []).append((spec.id, a))
    return out


def _mark(text: str, cells: list, marks: dict[str, str]) -> str:
    found = " ".join(dict.fromkeys(m for c in cells if c is not None and (m := marks.get(c.id))))
    return f"{text} {found}" if found else text


def _layout(table: TableSpec, texts: dict, marks: dict[str, str] | None = None) -> tuple[list[list[str]], list[str]]:
    """Rows and headers as the paper lays the table out; every header cell is named, and the
    row-group column is there only when the paper groups its rows."""
    marks = marks or {}
    if table.layout == "transposed":
        cells = list(table.cells)
        headers = ["metric", *[_mark(c.row, [c], marks) for c in cells]]
        rows = [[h, *[texts[(c.id, m)] for c in cells]] for m, h in zip(table.metrics, table.headers)]
        return rows, headers
    cols = list(table.columns) or [None]
    grouped = any(group for group, _ in table.rows)
    headers = (["group"] if grouped else []) + ["row"] + [f"{col} {h}" if col else h for col in cols for h in table.headers]
    rows = []
    for group, label in table.rows:
        name = f"{group} {label}".strip()
        row_cells = [next((c for c in table.cells if c.row == name and c.column == col), None) for col in cols]
        row = ([group] if grouped else []) + [_mark(label, row_cells, marks)]
        for cell in row_cells:
            row += [texts[(cell.id, m)] if cell else "(no cell)" for m in table.metrics]
        rows.append(row)
    return rows, headers


def _cell_notes(table: TableSpec) -> list[str]:
    notes = [f"All cells: {a}" for a in table.assume]
    seen: set[str] = set(table.assume)
    for c in table.cells:
        for a in c.assume:
            if a not in seen:
                seen.add(a)
                who = [x.id.split("/", 1)[1] for x in table.cells if a in x.assume]
                notes.append(f"{', '.join(who)}: {a}")
        if c.not_run:
            notes.append(f"{c.id.split('/', 1)[1]}: not run: {c.not_run}")
        if c.reference:
            notes.append(f"{c.id.split('/', 1)[1]}: {c.reference}")
    return list(dict.fromkeys(notes))


def scatter_points(table: TableSpec, tier: str, store: RunStore, analogs: dict[str, Analog]) -> list[tuple[str, float, float, float]]:
    """(metric, paper, ours mean, ours std) for every cell metric with both numbers."""
    points = []
    for c in table.cells:
        recs, _, _ = cell_records(c, tier, store, analogs)
        for m in table.metrics:
            paper = c.paper.get(m)
            stats = cell_stats(c, m, recs)
            if paper is not None and stats is not None:
                points.append((m, float(paper), stats.mean, stats.std))
    return points


def plot_table(table: TableSpec, points: list, path: Path, tier: str) -> None:
    from claimbench.report.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    families: dict[str, list] = {}
    for m, paper, mean, std in points:
        families.setdefault(m.split("[", 1)[0], []).append((paper, mean, std))
    for fam, pts in sorted(families.items()):
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o", ms=4, capsize=2,
                    label=f"{fam} ({len(pts)})")
    papers = [c.paper[m] for c in table.cells for m in table.metrics if c.paper.get(m) is not None]
    hi = max([*papers, *[p[2] for p in points], 1.0])
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="ours = paper")
    if not points:
        ax.text(0.5, 0.6, "no cell trained yet", transform=ax.transAxes, ha="center", color="gray")
    ax.set_xlabel("paper")
    ax.set_ylabel(f"ours ({tier} tier)")
    ax.set_title(f"Table {table.number}: ours vs paper", fontsize=10)
    ax.legend(fontsize=7)
    _save(fig, path)


def render_tables(tables: list[TableSpec], tier: str, store: RunStore, out: Path, claims: list = ()) -> list[tuple[TableSpec, str]]:
    """Write ``out/tables/<id>.md`` (+ ``.png``) per table; return (table, relative page path)."""
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    analogs: dict[str, Analog] = {}
    if tier != "full":
        analogs = smoke_analogs(list(claims))
        named = named_analogs(list(claims))
        for t in tables:
            for c in t.cells:
                if c.smoke and (a := resolve_smoke(c.smoke, named)) is not None:
                    analogs[f"smoke:{c.smoke}"] = a
                elif c.smoke and claims:
                    log.warning("table %s: cell %s names smoke analog %s, which no claim's smoke tier has", t.id, c.id, c.smoke)
    assumed = claim_assumptions(list(claims))
    pages = []
    for table in sorted(tables, key=lambda t: t.id):
        # Only the full tier trains the paper's settings; an analog's numbers on the paper's axis
        # would put digits error against CIFAR error.
        plot = f"{table.id}.png" if tier == "full" else None
        try:
            if plot:
                plot_table(table, scatter_points(table, tier, store, analogs), folder / plot, tier)
        except (ValueError, RuntimeError) as e:  # a plot failure must not lose the table
            log.warning("table %s: plot failed: %s", table.id, e)
            plot = None
        (folder / f"{table.id}.md").write_text(table_page(table, tier, store, analogs, plot, assumed))
        pages.append((table, f"tables/{table.id}.md"))
    return pages


def tables_index(pages: list[tuple[TableSpec, str]]) -> str:
    """Markdown section linking every table page, in the paper's order (main tables, then supplement)."""
    if not pages:
        return ""
    def order(item):
        n = item[0].number
        return (n.startswith("S"), int(n.lstrip("S")))
    lines = ["\n## The paper's tables, ours beside theirs\n"]
    for table, page in sorted(pages, key=order):
        n_cells = len(table.cells)
        lines.append(f"- [Table {table.number}]({page}): {table.title} ({n_cells} cells)")
    return "\n".join(lines) + "\n"
