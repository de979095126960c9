"""Claims that try to cherry-pick: each probe is a claim file a careless or hopeful author could
write, added to a copy of the shipped claims folder. `claimbench validate --against-paper` must exit 2
with a `file:line` error naming the rows or the statement at fault; the honest variant of each
probe must pass, so the error is the probe's and not the fixture's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from claimbench.cli import main
from tests.helpers import REPO


HEAD = """\
id: probe
title: a probe
claim: >
  "Adam showing the most sparsity ... amongst the ones studied"
source: {paper: cvpr2019, where: "WHERE"}
"""
RUNS = """\
tiers:
  full:
    runs:
      adam: {cell: "table01/Adam L2 1e-04/CIFAR10"}
      adadelta: {cell: "table01/Adadelta L2 1e-04/CIFAR10"}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: adam, b: adadelta, margin: 30}
  smoke: {not_run: "a probe"}
"""
# The Adam-vs-Adadelta comparison on the one lambda where "Adam showing the most sparsity" holds.
CHERRY = """\
scope:
  - table: table01
    rows: {group: Adam, label: "L2 1e-04"}
    metrics: [sparsity_gamma, sparsity_act]
    statement: {kind: greater, b: {set: {optim.name: adadelta}}, margin: 0,
                description: "Adam is sparser than Adadelta"}
"""
# Every other row of Table 1 left out, with a reason: the honest variant (a stated decision).
STATED = """\
out_of_scope:
  - {table: table01, rows: {group: [SGD, Adagrad]}, reason: "other optimizers"}
  - {table: table01, rows: {group: Adadelta, label: ["L2 1e-02", "L2 2e-03", "L2 1e-03", "L2 5e-04", "L2 2e-04"]},
     reason: "only the lambda where Adam is sparsest is claimed"}
  - {table: table01, rows: {group: Adam, label: ["L2 1e-02", "L2 2e-03", "L2 1e-03", "L2 1e-05", "L2 1e-06", "L2 0", "WD *"]},
     reason: "only the lambda where Adam is sparsest is claimed"}
"""


def write_probe(tmp_path: Path, text: str) -> tuple[Path, Path]:
    folder = tmp_path / "claims"
    shutil.copytree(REPO / "claims", folder)
    path = folder / "probe.yaml"
    path.write_text(text)
    return folder, path


def errors_of(folder: Path, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["validate", "--against-paper", "--claims-dir", str(folder)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def line_of(path: Path, start: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))


def test_a_region_that_keeps_only_the_rows_where_the_words_hold_is_an_error(tmp_path, capsys):
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + CHERRY + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    probe = [e for e in errors if "probe.yaml" in e]
    assert len(probe) == 1, errors
    assert f"probe.yaml:{line_of(path, 'scope:')}: scope: Table 1 (table01) has 66 cell(s)" in probe[0]
    # The rows that contradict the words are named, by row and column.
    assert "Adam L2 1e-02 (CIFAR10, CIFAR100)" in probe[0] and "Adam L2 2e-03 (CIFAR10, CIFAR100)" in probe[0]
    # Stating the omission with a reason is the honest variant: it passes.
    folder, path = write_probe(tmp_path / "honest", HEAD.replace("WHERE", "Table 1") + CHERRY + STATED + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 0, errors


def test_a_table_added_to_the_source_must_be_covered_too(tmp_path, capsys):
    # The same stated omissions, but the source now names supplement Table 4 as well: its rows
    # are touched and neither judged nor left out.
    text = HEAD.replace("WHERE", "Table 1; supplement Table 4") + CHERRY + STATED + RUNS
    folder, path = write_probe(tmp_path, text)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    assert any("probe.yaml" in e and "Table S4 (supp_table4) has 18 cell(s)" in e for e in errors), errors


def test_a_selector_product_with_holes_names_the_missing_combination(tmp_path, capsys):
    region = CHERRY.replace('rows: {group: Adam, label: "L2 1e-04"}', 'rows: {group: [SGD, Adam], label: "L2 1e-02"}')
    region = region.replace("{set: {optim.name: adadelta}}", '{row: "Adadelta L2 1e-02"}')
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + region + STATED + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    line = line_of(path, "    rows:")
    assert any(f"probe.yaml:{line}: scope[0].rows: table01 has no row for 2 combination(s)" in e
               and "SGD x L2 1e-02 x CIFAR10; SGD x L2 1e-02 x CIFAR100" in e for e in errors), errors


def test_an_out_of_scope_selector_with_holes_is_an_error_too(tmp_path, capsys):
    # Adam has no L2 5e-04 row (SGD and Adadelta have): the entry would leave out less than it says.
    out = ("out_of_scope:\n  - {table: table01, rows: {group: Adam, label: [\"L2 1e-02\", \"L2 5e-04\"]}, "
           "reason: \"x\"}\n")
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + CHERRY + out + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    assert any("out_of_scope[0].rows: table01 has no row for 2 combination(s) the selector names: "
               "Adam x L2 5e-04 x CIFAR10; Adam x L2 5e-04 x CIFAR100" in e
               for e in errors), errors


@pytest.mark.parametrize("statement, words", [
    ("{kind: distribution, min: 0, description: \"Adam is sparse\"}",
     "its bounds (min 0.0, max None) include every value: sparsity_gamma runs from 0 to 100"),
    ("{kind: monotonic, along: optim.lam, direction: increasing, slack: 100, description: \"sparsity grows\"}",
     "its slack 100 covers every step: sparsity_gamma runs from 0 to 100"),
    ("{kind: equal, b: {metric: sparsity_act}, tolerance: 100, description: \"alike\"}",
     "its tolerance 100 covers every value"),
    ("{kind: value, expected: 50, tolerance: 50, description: \"about half\"}",
     "50 within 50 covers every value"),
])
def test_a_statement_that_cannot_fail_is_an_error_at_its_line(tmp_path, capsys, statement, words):
    scope = ("scope:\n  - table: table01\n    rows: {group: Adam, label: \"L2 *\"}\n    metrics: [sparsity_gamma]\n"
             f"    statement: {statement}\n")
    stated = ("out_of_scope:\n  - {table: table01, rows: {group: [SGD, Adadelta, Adagrad]}, reason: \"other optimizers\"}\n"
              "  - {table: table01, rows: {group: Adam, label: \"WD *\"}, reason: \"weight decay\"}\n")
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + scope + stated + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    line = line_of(path, "  - table: table01")
    probe = [e for e in errors if "cannot fail" in e]
    assert probe and f"probe.yaml:{line}: scope[0].statement: cannot fail" in probe[0] and words in probe[0], errors


def test_the_same_statement_with_a_bound_that_can_fail_passes_that_test(tmp_path, capsys):
    scope = ("scope:\n  - table: table01\n    rows: {group: Adam, label: [\"L2 1e-02\", \"L2 2e-03\", \"L2 1e-03\"]}\n"
             "    metrics: [sparsity_gamma]\n    statement: {kind: distribution, min: 75, description: \"Adam is sparse\"}\n")
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + scope + RUNS)
    code, errors = errors_of(folder, capsys)
    assert not any("cannot fail" in e for e in errors), errors


def test_no_scope_on_a_claim_whose_runs_are_table_cells_is_refused(tmp_path, capsys):
    text = HEAD.replace("WHERE", "Figure 2") + "no_scope: The numbers are in a figure only.\n" + RUNS
    folder, path = write_probe(tmp_path, text)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    line = line_of(path, "no_scope:")
    assert any(f"probe.yaml:{line}: no_scope: no_scope is for claims no table holds, but its runs are cells of "
               "table01" in e for e in errors), errors


def test_no_scope_on_a_claim_whose_source_is_a_table_is_refused(tmp_path, capsys):
    text = (HEAD.replace("WHERE", "Table 1") + "no_scope: The numbers are in a figure only.\n"
            + "tiers:\n  full: {not_run: \"a probe\"}\n")
    folder, path = write_probe(tmp_path, text)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    assert any(f"probe.yaml:{line_of(path, 'no_scope:')}: no_scope:" in e and "names table01" in e
               for e in errors), errors


def test_a_claim_quoting_a_table_without_scope_or_no_scope_is_an_error(tmp_path, capsys):
    text = HEAD.replace("WHERE", "Table 1") + "tiers:\n  full: {not_run: \"a probe\"}\n"
    folder, path = write_probe(tmp_path, text)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    assert any(f"probe.yaml:{line_of(path, 'source:')}: scope: the claim touches the paper's tables" in e
               and "declares no scope" in e for e in errors), errors


def test_a_row_both_judged_and_out_of_scope_is_an_error(tmp_path, capsys):
    out = "out_of_scope:\n  - {table: table01, rows: {group: Adam}, reason: \"x\"}\n"
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + CHERRY + out + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    assert any(f"probe.yaml:{line_of(path, '  - {table: table01, rows: {group: Adam}')}: out_of_scope[0]: "
               "2 cell(s) both in a scope region and out of scope" in e for e in errors), errors


def test_the_summary_counts_checks_and_scope_problems_apart(tmp_path, capsys):
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + CHERRY + RUNS)
    capsys.readouterr()
    main(["validate", "--against-paper", "--claims-dir", str(folder)])
    out = capsys.readouterr().out
    assert "0 check(s) the paper itself would not pass or that cannot fail; 1 scope problem(s)" in out


def test_a_region_most_of_whose_rows_are_exceptions_must_narrow_its_words(tmp_path, capsys):
    # "Adam is sparser than Adadelta at the same L2 lambda": Table 1 contradicts it at 1e-2, 2e-3
    # and 1e-3 on both datasets and metrics; listing all 12 as exceptions keeps the false words.
    rows = [("L2 1e-02", "CIFAR10"), ("L2 2e-03", "CIFAR10"), ("L2 1e-03", "CIFAR10"),
            ("L2 1e-02", "CIFAR100"), ("L2 2e-03", "CIFAR100"), ("L2 1e-03", "CIFAR100")]
    exceptions = "".join(f'      - {{cell: "table01/Adam {label}/{col}", metric: {m}, reason: "r"}}\n'
                         for label, col in rows for m in ("sparsity_gamma", "sparsity_act"))
    scope = ("scope:\n  - table: table01\n    rows: {group: Adam, label: [\"L2 1e-02\", \"L2 2e-03\", \"L2 1e-03\", "
             "\"L2 1e-04\"]}\n    metrics: [sparsity_gamma, sparsity_act]\n"
             "    statement: {kind: greater, b: {set: {optim.name: adadelta}}, margin: 0, description: \"Adam is sparser\"}\n"
             "    exceptions:\n" + exceptions)
    stated = ("out_of_scope:\n  - {table: table01, rows: {group: [SGD, Adagrad]}, reason: \"other optimizers\"}\n"
              "  - {table: table01, rows: {group: Adadelta, label: [\"L2 5e-04\", \"L2 2e-04\"]}, reason: \"no Adam row\"}\n"
              "  - {table: table01, rows: {group: Adam, label: [\"L2 1e-05\", \"L2 1e-06\", \"L2 0\", \"WD *\"]}, "
              "reason: \"no Adadelta row\"}\n")
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + scope + stated + RUNS)
    code, errors = errors_of(folder, capsys)
    assert code == 2
    line = line_of(path, "  - table: table01")
    assert [e for e in errors if "probe.yaml" in e] == [
        f"error: {path}:{line}: scope[0]: 12 of the region's 16 rows go against the statement \"Adam is sparser\": "
        "where most rows go against the words, narrow the words (claim, title, the statement's description) to what "
        "the rows show, never the rows"], errors


def test_stated_omissions_show_the_rows_they_hide(tmp_path, capsys):
    # Leaving rows out with a reason is allowed, but what they would say is printed beside it:
    # the 12 Table 1 rows where Adadelta is the sparser (1e-2, 2e-3, 1e-3; both datasets and metrics).
    folder, path = write_probe(tmp_path, HEAD.replace("WHERE", "Table 1") + CHERRY + STATED + RUNS)
    capsys.readouterr()
    assert main(["validate", "--against-paper", "--claims-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if "probe.yaml" in line and "outside the region" in line)
    assert note.startswith(f"note: {path}:{line_of(path, '  - table: table01')}: scope[0]: outside the region, "
                           "12 out-of-scope row(s) go against \"Adam is sparser than Adadelta\""), note
    assert "sparsity_gamma 85 (Adam L2 1e-02/CIFAR10) vs 97 (Adadelta L2 1e-02/CIFAR10)" in note
