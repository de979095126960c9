"""Report tables cannot be broken by what their cells hold.

Claim reasons hold ``|gamma|``, run names hold underscores, a paper marker is ``*``; written
unescaped, a pipe ends the cell and the rest of the reason is lost on the page. Every report
table goes through ``claimbench.report.mdtable.markdown_table``; these tests render arbitrary text
through it and through each page writer, and read the table back."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimbench.cache import RunStore
from claimbench.check.verdict import Verdict
from claimbench.report.markdown import claim_page, index_page
from claimbench.report.mdtable import escape_cell, markdown_table, parse_markdown_table
from claimbench.report.tables import table_page
from claimbench.spec.claims import load_claim
from claimbench.spec.tables import load_table
from tests.helpers import REPO

CLAIMS = REPO / "claims"
TEXT = st.text(max_size=40)
NASTY = st.sampled_from(["|gamma|", "a | b", "**bold**", "_x_", "`code`", "line\nbreak", "\\|", "&lt;", "<br>",
                         " lead", "trail ", "\t", "\r\n", "a\u2028b", "*", "\\"])
CELL = st.one_of(TEXT, NASTY, st.lists(st.one_of(TEXT, NASTY), max_size=4).map("".join))


def table_after(page: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table after ``heading`` on a page, read back."""
    lines = page.split(heading, 1)[1].split("\n")
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].lstrip().startswith("|")), len(lines))
    return parse_markdown_table("\n".join(line.strip() for line in lines[start:end]))


@given(st.lists(CELL, min_size=1, max_size=4).flatmap(
    lambda head: st.tuples(st.just(head), st.lists(st.lists(CELL, min_size=len(head), max_size=len(head)), max_size=4))))
def test_any_text_reads_back_from_a_table(table):
    headers, rows = table
    text = markdown_table(rows, headers)
    # One line per row (header, rule, rows): no cell may add a line or a column.
    assert len(text.split("\n")) == 2 + len(rows)
    assert parse_markdown_table(text) == (headers, rows)


@given(CELL)
def test_an_escaped_cell_holds_no_bare_pipe_newline_or_emphasis(text):
    escaped = escape_cell(text)
    assert "\n" not in escaped
    i = 0
    while i < len(escaped):
        if escaped[i] == "\\":
            i += 2
            continue
        assert escaped[i] not in "|*_`", (text, escaped)
        i += 1


def test_no_report_module_writes_a_table_by_itself():
    # A writer that called tabulate directly would skip the escaping: the one function is the rule.
    for path in sorted((REPO / "claimbench" / "report").glob("*.py")):
        if path.name != "mdtable.py":
            assert "tabulate" not in path.read_text(), path.name


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(CELL, CELL)
def test_claim_page_reasons_read_back(tmp_path, reason, left_out):
    spec = load_claim(CLAIMS / "adaptive_vs_sgd.yaml")
    region = spec.scope[0]
    region = dataclasses.replace(region, exceptions=(dataclasses.replace(region.exceptions[0], reason=reason),
                                                     *region.exceptions[1:]))
    out = (dataclasses.replace(spec.out_of_scope[0], reason=left_out), *spec.out_of_scope[1:])
    spec = dataclasses.replace(spec, scope=(region, *spec.scope[1:]), out_of_scope=out)
    page = claim_page(spec, spec.tier("full"), Verdict.from_checks(spec.id, "full", []), RunStore(tmp_path / "c"), [])
    headers, rows = table_after(page, "1. **Table 1**")
    assert headers == ["row", "metric", "the paper's numbers", "reason"]
    assert rows[0][3] == reason
    headers, rows = table_after(page, "### Rows of these tables the claim leaves out, and why")
    assert rows[0][3] == left_out


@SETTINGS
@given(CELL)
def test_index_page_cells_read_back(where):
    spec = load_claim(CLAIMS / "imagenet.yaml")
    spec = dataclasses.replace(spec, source={**spec.source, "where": where})
    page = index_page([spec], [Verdict.from_checks(spec.id, "full", [])], "full")
    headers, rows = table_after(page, "## Claims")
    assert rows[0][0] == f"[{spec.id}]({spec.id}.md)"  # a link the writer composed stays a link
    assert rows[0][1] == f"{spec.source['paper']}: {where}"


@SETTINGS
@given(CELL)
def test_table_page_cells_read_back(tmp_path, printed):
    table = load_table(CLAIMS / "tables" / "table09.yaml")
    cell = table.cells[0]
    metric = next(iter(cell.paper_text))
    changed = dataclasses.replace(cell, paper_text={**cell.paper_text, metric: printed})
    table = dataclasses.replace(table, cells=(changed, *table.cells[1:]))
    page = table_page(table, "full", RunStore(tmp_path / "c"), {}, None)
    headers, rows = table_after(page, "Each cell:")
    assert any(c.endswith(f" / {printed}") for row in rows for c in row), rows
