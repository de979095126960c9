"""Scope: the region of the paper's tables a claim's words cover, judged on every row of it.

`claimbench validate --against-paper` must name each row that goes against a claim's statement unless
the claim lists it as an exception with a reason, refuse exceptions that no longer contradict, and
the claim's report page must show the region and its exceptions with the paper's numbers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from claimbench.cache import RunStore
from claimbench.check.oracle import check_against_paper, scope_rows
from claimbench.check.verdict import Verdict
from claimbench.cli import main
from claimbench.report.markdown import claim_page, index_page
from claimbench.report.mdtable import escape_cell, parse_markdown_table
from claimbench.report.tables import render_tables
from claimbench.spec.claims import claim_files, load_claim, load_claims
from claimbench.spec.source import SpecError
from claimbench.spec.table_folder import load_tables, table_files
from tests.helpers import REPO

CLAIMS = REPO / "claims"
NO_SPARSITY = "no_sparsity_without_regularization.yaml"
# The exception the audit found hidden: Adam's sparsity by activation falls 88 -> 82 from L2 2e-3
# to 1e-2 on CIFAR-10, against "sparsity increasing with increasing L2".
HIDDEN = '      - {cell: "table01/Adam L2 1e-02/CIFAR10", metric: sparsity_act,'


def copy_claims(tmp_path: Path) -> Path:
    """The shipped claims folder (tables, bases, paper.yaml included) in a place a test may edit."""
    folder = tmp_path / "claims"
    shutil.copytree(CLAIMS, folder)
    return folder


def drop_line(path: Path, start: str) -> int:
    """Remove the exception line starting with ``start`` (and its continuation); its line number."""
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith(start))
    end = index + 1
    while end < len(lines) and lines[end].startswith("        "):
        end += 1
    path.write_text("".join(lines[:index] + lines[end:]))
    return index + 1


def test_every_shipped_claim_declares_a_scope_or_says_why_not():
    specs = load_claims(claim_files(CLAIMS))
    assert len(specs) == 25
    for spec in specs:
        assert bool(spec.scope) != bool(spec.no_scope), spec.id


def test_shipped_claims_pass_against_the_paper_with_their_scopes(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["validate", "--against-paper"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "error:" not in err
    # One note per scoped claim: its region count, rows judged and exceptions.
    assert re.search(r"no_sparsity_without_regularization\.yaml:\d+: scope: 3 region\(s\), \d+ rows judged "
                     r"on the paper's numbers, 2 exception\(s\)", out), out
    assert out.count(" rows judged on the paper's numbers") == 23


def test_a_removed_exception_fails_naming_the_row_numbers_and_line(tmp_path, capsys):
    folder = copy_claims(tmp_path)
    path = folder / NO_SPARSITY
    drop_line(path, HIDDEN)
    # The region's "- table:" line: two above its statement (table, metrics, statement).
    region_line = next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                       if "statement: {kind: monotonic" in line) - 2
    assert main(["validate", "--claims-dir", str(folder)]) == 0  # the file itself is well formed
    capsys.readouterr()
    assert main(["validate", "--against-paper", "--claims-dir", str(folder)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert f"{NO_SPARSITY}:{region_line}: scope[1]:" in errors[0]
    assert "'table01/Adam L2 1e-02/CIFAR10'" in errors[0]
    assert "sparsity_act 88 (Adam L2 2e-03/CIFAR10) -> 82 (Adam L2 1e-02/CIFAR10)" in errors[0]


def test_a_stale_exception_is_an_error_at_its_line(tmp_path):
    folder = copy_claims(tmp_path)
    path = folder / NO_SPARSITY
    text = path.read_text()
    # Adam L2 0 on CIFAR-100 shows no sparsity by activation (0%): listing it is stale.
    stale = ('      - {cell: "table01/Adam L2 0/CIFAR100", metric: sparsity_act, reason: "not true"}\n')
    anchor = '      - {cell: "table01/Adam L2 0/CIFAR10", metric: sparsity_act,'
    assert anchor in text
    path.write_text(text.replace(anchor, stale + anchor, 1))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if l == stale.rstrip("\n"))
    findings = [f for f in check_against_paper(load_claim(path)) if f.fatal]
    assert len(findings) == 1, findings
    assert findings[0].line == line and "stale exception" in findings[0].message
    assert "sparsity_act 0" in findings[0].message


def test_a_claim_on_table_cells_without_scope_is_an_error(tmp_path):
    folder = copy_claims(tmp_path)
    path = folder / "imagenet.yaml"
    text = path.read_text()
    head, rest = text.split("\nscope:\n", 1)
    path.write_text(head + "\n" + rest[rest.index("tiers:"):])
    findings = [f for f in check_against_paper(load_claim(path)) if f.fatal]
    assert [f.field for f in findings] == ["scope"] and "declares no scope" in findings[0].message


@pytest.mark.parametrize("region, field, words", [
    ("{table: table1, metrics: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, description: x}}",
     "scope[0].table", "unknown table 'table1' (did you mean"),
    ("{table: table05, metric: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, description: x}}",
     "scope[0].metric", "did you mean 'metrics'"),
    ("{table: table05, metrics: [sparsity], statement: {kind: value, expected: 0, tolerance: 2, description: x}}",
     "scope[0].metrics", "unknown metric printed by table05 'sparsity'"),
    ("{table: table05, rows: {label: B 65}, metrics: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, description: x}}",
     "scope[0].rows.label", "did you mean 'B 64'"),
    ("{table: table05, metrics: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, descripton: x}}",
     "scope[0].statement.descripton", "did you mean 'description'"),
    ("{table: table05, metrics: [sparsity_gamma], statement: {kind: greater, b: {set: {optim.name: sgd}}, description: x}}",
     "scope[0].statement.b.set", "has no cell with the configuration"),
    ("{table: table05, metrics: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, description: x},"
     " exceptions: [{cell: table05/B 65, reason: r}]}",
     "scope[0].exceptions[0].cell", "did you mean 'table05/B 64'"),
    ("{table: table08, metrics: [sparsity_gamma], statement: {kind: value, expected: 0, tolerance: 2, description: x}}",
     "scope[0].metrics", "the paper prints no sparsity_gamma for 'table08/ImageNet L2: 1e-4, B: 40'"),
])
def test_scope_schema_is_strict_with_file_line_errors(tmp_path, region, field, words):
    folder = copy_claims(tmp_path)
    path = folder / "imagenet.yaml"
    text = path.read_text()
    head, rest = text.split("\nscope:\n", 1)
    path.write_text(head + f"\nscope:\n  - {region}\n" + rest[rest.index("tiers:"):])
    with pytest.raises(SpecError) as e:
        load_claim(path)
    problems = [p for p in e.value.problems if p.field == field]
    assert problems and words in problems[0].message, [str(p) for p in e.value.problems]
    assert problems[0].line == head.count("\n") + 3


def test_the_claim_page_shows_scope_exceptions_and_assumptions(tmp_path):
    store = RunStore(tmp_path / "cache")
    spec = load_claim(CLAIMS / NO_SPARSITY)
    verdict = Verdict.from_checks(spec.id, "full", [])
    page = claim_page(spec, spec.tier("full"), verdict, store, [])
    assert "## What the claim covers in the paper's tables" in page
    assert "sparsity grows with the L2 / weight-decay lambda" in page
    assert escape_cell("sparsity_act 88 (Adam L2 2e-03/CIFAR10) -> 82 (Adam L2 1e-02/CIFAR10)") in page
    assert "by activation falls from 88 to 82" in page  # the stated reason
    vgg = load_claim(CLAIMS / "vgg.yaml")
    page = claim_page(vgg, vgg.tier("full"), Verdict.from_checks(vgg.id, "full", []), store, [])
    assert "**Assumed:** Table 7's \"Test Err\" row is the test error before pruning" in page
    no_table = load_claim(CLAIMS / "low_gradient_decay.yaml")
    page = claim_page(no_table, no_table.tier("full"), Verdict.from_checks(no_table.id, "full", []), store, [])
    assert "**No table region:** The low-gradient simulation is drawn in Figure 4" in page


def test_the_claim_page_shows_what_is_out_of_scope_and_why(tmp_path):
    spec = load_claim(CLAIMS / "collapse_large_lambda.yaml")
    page = claim_page(spec, spec.tier("full"), Verdict.from_checks(spec.id, "full", []), RunStore(tmp_path / "c"), [])
    section = page.split("### Rows of these tables the claim leaves out, and why\n", 1)[1]
    lines = section.lstrip("\n").splitlines()
    table = "\n".join(lines[:next(i for i, line in enumerate(lines) if not line.startswith("|"))])
    headers, rows = parse_markdown_table(table)
    assert headers == ["table", "rows", "cells", "reason"]
    # Each entry with its reason read back whole, and the cells it leaves out counted.
    assert [r[3] for r in rows] == [o.reason for o in spec.out_of_scope]
    assert [int(r[2]) for r in rows] == [len(o.cells) for o in spec.out_of_scope]
    assert "No other setting collapses" in rows[0][3]


def test_no_claim_page_cuts_a_reason(tmp_path):
    # Reasons hold |gamma|: an unescaped pipe ends the cell and the rest of the reason is lost.
    store = RunStore(tmp_path / "c")
    cut = 0
    for spec in load_claims(claim_files(CLAIMS)):
        page = claim_page(spec, spec.tier("full"), Verdict.from_checks(spec.id, "full", []), store, [])
        reasons = [e.reason for r in spec.scope for e in r.exceptions] + [o.reason for o in spec.out_of_scope]
        lines = [line.strip() for line in page.splitlines() if line.strip().startswith("|")]
        cells = [c for line in lines for c in parse_markdown_table(line + "\n|-|\n")[0]]
        for reason in reasons:
            cut += reason not in cells
    assert cut == 0


def test_the_index_marks_claims_with_exceptions():
    specs = [load_claim(CLAIMS / NO_SPARSITY), load_claim(CLAIMS / "imagenet.yaml"),
             load_claim(CLAIMS / "harder_task.yaml")]
    verdicts = [Verdict.from_checks(s.id, "full", []) for s in specs]
    index = index_page(specs, verdicts, "full")
    rows = {line.split("|")[1].strip(): line for line in index.splitlines() if line.startswith("| [")}
    total = sum(len(scope_rows(r)) for r in specs[0].scope)
    assert f"⚠️ 2 of {total} (stated exceptions)" in rows["[sparsity-needs-regularization](sparsity-needs-regularization.md)"]
    assert "| 0 of 2" in rows["[imagenet-basicnet-not-sparse](imagenet-basicnet-not-sparse.md)"]
    assert "no table region" in rows["[harder-task-less-sparse](harder-task-less-sparse.md)"]


def test_the_table_page_marks_assumed_cells(tmp_path):
    tables = [t for t in load_tables(table_files(CLAIMS / "tables")) if t.id in ("table07", "supp_table4")]
    claims = [load_claim(CLAIMS / "vgg.yaml"), load_claim(CLAIMS / "adamax_rmsprop.yaml")]
    render_tables(tables, "full", RunStore(tmp_path / "cache"), tmp_path / "out", claims)
    t7 = (tmp_path / "out" / "tables" / "table07.md").read_text()
    assert "B: 40 [A1]" in t7 and "Li et al. [13] [A" not in t7
    assert "**[A1]** Table 7's \"Test Err\" row is the test error before pruning" in t7 and "(claim `vgg-implicit-pruning`)" in t7
    s4 = (tmp_path / "out" / "tables" / "supp_table4.md").read_text()
    assert re.search(r"\| Adamax +\| L2 1e-02 \[A1\]", s4) and re.search(r"\| AMSGrad +\| L2 1e-02 +\|", s4)
    assert "Adamax trains with base learning rate 2e-3" in s4


def test_the_index_counts_cells_left_out():
    spec = load_claim(CLAIMS / "collapse_large_lambda.yaml")
    index = index_page([spec], [Verdict.from_checks(spec.id, "full", [])], "full")
    row = next(line for line in index.splitlines() if line.startswith("| [collapse-at-large-lambda]"))
    assert "0 of 14; 62 cells left out (reasons on its page)" in row
