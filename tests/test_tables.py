"""Paper tables as data: the strict loader, the regenerated pages, and the full-tier plan union."""

import re
import shutil
from pathlib import Path

import pytest

from claimbench import cli
from claimbench.cache import RunStore, run_key
from claimbench.plan import plan_runs
from claimbench.report.mdtable import escape_cell
from claimbench.report.tables import render_tables, smoke_analogs
from claimbench.spec.claims import claim_files, load_claims
from claimbench.spec.source import SpecError
from claimbench.spec.table_folder import load_tables, table_files
from claimbench.spec.tables import cell_paper, cell_prints, load_table
from claimbench.cache import RunRecord
from tests.helpers import REPO

TABLES = REPO / "claims" / "tables"

SMALL = """\
table: "3"
title: A small table
source: {paper: cvpr2019, where: "Table 3"}
base: {include: ../_bases/cifar10_basicnet.yaml}
seeds: [0, 1, 2]
metrics: [test_error, sparsity_gamma]
columns:
  CIFAR10: {set: {data.dataset: cifar10}}
  CIFAR100: {set: {data.dataset: cifar100}}
cells: 4
rows:
  - {label: "B 20", set: {train.batch_size: 20}, paper: {CIFAR10: [15.2, 82], CIFAR100: [45.3, 79]}}
  - {label: "B 40", set: {train.batch_size: 40}, paper: {CIFAR10: [13.10, 83], CIFAR100: [39.0, 76]}}
"""


@pytest.fixture(scope="module")
def repo_tables():
    return load_tables(table_files(TABLES))


@pytest.fixture(scope="module")
def repo_claims():
    return load_claims(claim_files(REPO / "claims"))


def write_table(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    folder = tmp_path / "claims" / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    if not (tmp_path / "claims" / "_bases").exists():
        shutil.copytree(REPO / "claims" / "_bases", tmp_path / "claims" / "_bases")
    path = folder / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_table(path)
    return [str(p) for p in e.value.problems]


# --- the repository's tables ----------------------------------------------------------------


def test_every_paper_table_loads_with_its_cell_count(repo_tables):
    tables = {t.number: t for t in repo_tables}
    assert set(tables) == {*(str(i) for i in range(1, 11)), "S1", "S2", "S3", "S4"}
    assert len(tables["1"].cells) == 70
    assert all(len(c.configs) == 3 for c in tables["1"].cells)  # CIFAR: 3 seeds
    assert all(len(c.configs) == 2 for c in tables["4"].cells)  # TinyImageNet: 2
    assert all(len(c.configs) == 1 for c in tables["5"].cells)  # ImageNet: 1
    t8 = {c.row: len(c.configs) for c in tables["8"].cells}
    assert t8 == {"TinyImageNet L2: 1e-4, B: 20": 2, "TinyImageNet L2: 1e-4, B: 40": 2, "ImageNet L2: 1e-4, B: 40": 1}
    # A few numbers typed from the paper, as printed.
    sgd = tables["1"].cell("SGD WD 1e-02", "CIFAR10")
    assert sgd.paper == {"sparsity_act": 100, "sparsity_gamma": 100, "test_error": 90.0}
    assert sgd.configs[0].optim.name == "sgd" and sgd.configs[0].optim.regularizer == "wd" and sgd.configs[0].optim.lam == 1e-2
    assert tables["9"].cell("Adam, L2: 1e-4, B: 90").paper_text["test_error"] == "30.50"
    assert tables["9"].cell("Liu et al. [14] from [15]").reference and not tables["9"].cell("Liu et al. [14] from [15]").configs


# --- strictness -----------------------------------------------------------------------------


def test_small_table_loads(tmp_path):
    t = load_table(write_table(tmp_path, SMALL))
    assert [c.id for c in t.cells] == ["t/B 20/CIFAR10", "t/B 20/CIFAR100", "t/B 40/CIFAR10", "t/B 40/CIFAR100"]
    assert t.cell("B 40", "CIFAR10").paper_text["test_error"] == "13.10"
    assert t.cell("B 20", "CIFAR100").configs[1].data.dataset == "cifar100"


def test_misspelled_keys_name_file_line_and_a_suggestion(tmp_path):
    text = SMALL.replace("metrics:", "metrcs:").replace('{label: "B 40", set', '{label: "B 40", sett')
    probs = problems_of(write_table(tmp_path, text))
    assert any(re.search(r"t\.yaml:6: metrcs: unknown key 'metrcs' \(did you mean 'metrics'\?\)", p) for p in probs), probs
    assert any(re.search(r"t\.yaml:13: rows\[1\]\.sett: unknown key 'sett' \(did you mean 'set'\?\)", p) for p in probs), probs


def test_wrong_cell_count_is_reported_on_the_cells_line(tmp_path):
    probs = problems_of(write_table(tmp_path, SMALL.replace("cells: 4", "cells: 70")))
    assert len(probs) == 1 and probs[0].endswith("t.yaml:10: cells: the rows give 4 cells, the paper's table has 70"), probs


def test_bad_cells_and_configs_are_all_reported(tmp_path):
    text = (SMALL.replace("[15.2, 82]", "[15.2]")                               # one value short
            .replace("train.batch_size: 40", "optim.nme: adam")                # a run-config typo
            .replace("test_error, sparsity_gamma", "test_eror, sparsity_gamma")  # unknown metric
            .replace("CIFAR100: [39.0, 76]", "CIFAR1000: [39.0, 76]"))          # unknown column
    probs = "\n".join(problems_of(write_table(tmp_path, text)))
    assert "t.yaml:12: rows[0].paper.CIFAR10: expected a list of 2 values" in probs
    assert "t.yaml:13: rows[1].set.optim.nme: unknown key 'nme' (did you mean 'name'?)" in probs
    assert "t.yaml:6: metrics[0]: unknown metric 'test_eror' (did you mean 'test_error'?)" in probs
    assert "rows[1].paper.CIFAR1000: unknown column 'CIFAR1000' (did you mean 'CIFAR100'?)" in probs
    assert "rows[1].paper.CIFAR100: missing" in probs


def test_duplicate_configuration_and_missing_seeds(tmp_path):
    text = SMALL.replace("train.batch_size: 40", "train.batch_size: 20").replace("seeds: [0, 1, 2]\n", "")
    probs = "\n".join(problems_of(write_table(tmp_path, text)))
    assert "same run configuration as cell 't/B 20/CIFAR10'" in probs
    assert "seeds: required" in probs


def test_validate_cli_exits_2_without_traceback(tmp_path, capsys):
    write_table(tmp_path, SMALL.replace("cells: 4", "cells: 5"))
    assert cli.main(["validate", "--claims-dir", str(tmp_path / "claims")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "cells: the rows give 4 cells, the paper's table has 5" in err


# --- rendering ------------------------------------------------------------------------------


def _record(cfg, **metrics):
    base = {"test_error": 10.0, "sparsity_gamma": 50.0}
    return RunRecord(cfg, {**base, **metrics}, {}, {"device": "cpu", "torch": "x", "train_wall_s": 1})


def test_table_page_shows_ours_beside_every_paper_number(tmp_path):
    t = load_table(write_table(tmp_path, SMALL))
    store = RunStore(tmp_path / "cache")
    for cfg, err in zip(t.cell("B 20", "CIFAR10").configs, (14.0, 15.0, 16.0)):
        store.put(run_key(cfg), _record(cfg, test_error=err, sparsity_gamma=80.0))
    pages = render_tables([t], "full", store, tmp_path / "out")
    text = (tmp_path / "out" / pages[0][1]).read_text()
    row20 = next(line for line in text.splitlines() if "B 20" in line)
    assert "15.0 ± 1.0 (n=3) / 15.2" in row20 and "80.0 ± 0 (n=3) / 82" in row20
    row40 = next(line for line in text.splitlines() if "B 40" in line)
    assert "- / 13.10" in row40 and "- / 83" in row40 and "- / 76" in row40
    assert (tmp_path / "out" / "tables" / "t.png").stat().st_size > 0


def test_table1_page_has_all_70_cells_on_an_empty_cache(tmp_path, repo_tables):
    t1 = next(t for t in repo_tables if t.number == "1")
    render_tables([t1], "full", RunStore(tmp_path / "cache"), tmp_path / "out")
    lines = [ln for ln in (tmp_path / "out" / "tables" / "table01.md").read_text().splitlines() if ln.startswith("| ") and " / " in ln]
    assert len(lines) == 35
    cells = [c.strip() for ln in lines for c in ln.strip("|").split("|")[2:]]
    assert len(cells) == 70 * 3 and all(c.startswith("- / ") for c in cells)
    # every number the paper prints is there, in the paper's order
    printed = [c.split(" / ", 1)[1] for c in cells]
    expected = [t1.cell(f"{g} {lab}".strip(), col).paper_text[m] for g, lab in t1.rows for col in t1.columns for m in t1.metrics]
    assert printed == expected


def test_smoke_tier_fills_cells_from_claim_analogs(tmp_path, repo_tables):
    (tmp_path / "claims").mkdir()
    shutil.copytree(REPO / "claims" / "_bases", tmp_path / "claims" / "_bases")
    shutil.copytree(TABLES, tmp_path / "claims" / "tables")  # the claim's full tier names table cells
    claim = load_claims([Path(shutil.copy(REPO / "claims" / "adam_l2_vs_wd.yaml", tmp_path / "claims"))])
    t1 = next(t for t in repo_tables if t.number == "1")
    analogs = smoke_analogs(claim)
    cell = t1.cell("Adam L2 1e-04", "CIFAR10")
    analog = analogs[run_key(cell.configs[0])]
    assert analog.claim == "adam-l2-vs-wd" and analog.configs[0].data.dataset == "digits"
    store = RunStore(tmp_path / "cache")
    for cfg in analog.configs:
        store.put(run_key(cfg), _record(cfg, sparsity_gamma=33.0))
    render_tables([t1], "smoke", store, tmp_path / "out", claim)
    text = (tmp_path / "out" / "tables" / "table01.md").read_text()
    assert "## Smoke analogs" in text and "`adam-l2-vs-wd`" in text
    # The paper's cell keeps the paper's number alone; the analog has a row of its own, beside
    # the setting it was trained at and the cell it stands for.
    row = next(ln for ln in text.splitlines() if "| Adam" in ln and "| L2 1e-04" in ln)
    assert "33.0" not in row and "| 70 " in row
    analog_row = next(ln for ln in text.splitlines() if "33.0 ± 0" in ln)
    assert "digits" in analog_row and "Adam L2 1e-04 (CIFAR10)" in analog_row
    assert f"(n={len(analog.configs)})" in analog_row
    assert not (tmp_path / "out" / "tables" / "table01.png").exists()  # no analog on the paper's axis


# --- plan union -----------------------------------------------------------------------------


def test_full_plan_is_the_union_of_claims_and_table_cells(tmp_path, repo_claims, repo_tables):
    claims, tables = repo_claims, repo_tables
    store = RunStore(tmp_path / "cache")
    only_claims = plan_runs(claims, "full", store, "cuda")
    plan = plan_runs(claims, "full", store, "cuda", tables=tables)
    cell_keys = {run_key(c) for t in tables for cell in t.cells for c in cell.configs}
    assert {r.key for r in plan.runs} == cell_keys | {r.key for r in only_claims.runs}
    assert len(plan.runs) >= 360
    assert len({r.key for r in plan.runs}) == len(plan.runs)
    by_key = {r.key: r for r in plan.runs}
    shared = by_key[run_key(next(t for t in tables if t.number == "1").cell("Adam L2 1e-04", "CIFAR10").configs[0])]
    assert "adam-l2-vs-wd" in shared.claims and "table01/Adam L2 1e-04/CIFAR10" in shared.cells
    assert "table06/64-1x/CIFAR10" in shared.cells and "table03/L2: 1e-4 B 40/CIFAR10" in shared.cells
    assert plan.to_dict()["runs"][0]["cells"]
    # tables are a full-tier matter: the smoke plan is the claims' alone
    assert len(plan_runs(claims, "smoke", store, "cpu", tables=tables).runs) == len(plan_runs(claims, "smoke", store, "cpu").runs)


def test_cli_report_and_plan_on_an_empty_cache(tmp_path, capsys):
    """`claimbench report --tier full` writes one page per paper table, every paper number with "-"."""
    import json

    claims = tmp_path / "claims"
    shutil.copytree(REPO / "claims" / "_bases", claims / "_bases")
    shutil.copytree(TABLES, claims / "tables")
    shutil.copy(REPO / "claims" / "adam_l2_vs_wd.yaml", claims)
    common = ["--claims-dir", str(claims), "--cache-dir", str(tmp_path / "cache"), "--tier", "full"]
    assert cli.main(["report", *common, "--out", str(tmp_path / "out")]) == 0
    tables = load_tables(table_files(TABLES))
    index = (tmp_path / "out" / "index.md").read_text()
    for t in tables:
        page = (tmp_path / "out" / "tables" / f"{t.id}.md").read_text()
        assert f"](tables/{t.id}.md)" in index
        for c in t.cells:
            for m, text in c.paper_text.items():
                assert f" / {escape_cell(text)}" in page, (t.id, c.id, m)
        assert not re.search(r"± .* / ", page)  # nothing of ours on an empty cache
    capsys.readouterr()
    assert cli.main(["plan", *common, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_runs"] >= 360
    run = next(r for r in plan["runs"] if "adam-l2-vs-wd" in r["claims"] and r["cells"])
    assert any(c.startswith("table01/") for c in run["cells"])


# --- claims naming table cells ----------------------------------------------------------------

CELL_TABLE = SMALL.replace("cells: 4", "cells: 6") + """\
  - {label: "B 80", not_run: "no such GPU", paper: {CIFAR10: [12.0, 70], CIFAR100: null}}
  - {label: "Li et al.", reference: "Li et al.'s pruning", paper: {CIFAR10: [6.6, 37], CIFAR100: null}}
"""

CELL_CLAIM = """\
id: cells
title: t
claim: c
source: {paper: cvpr2019, where: Table 3}
tiers:
  full:
    runs:
      b20: {cell: "t/B 20/CIFAR10", paper: {sparsity_act: 50}}
      along: {axis: {train.batch_size: [20, 40]}, cell: ["t/B 20/CIFAR100", "t/B 40/CIFAR100"]}
      other_seed: {cell: "t/B 40/CIFAR10", seeds: [7]}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: b20, b: along@40}
"""


def write_cell_claim(tmp_path: Path, runs: str | None = None) -> Path:
    write_table(tmp_path, CELL_TABLE)
    text = CELL_CLAIM if runs is None else re.sub(r"    runs:\n(      .*\n)+", "    runs:\n" + runs, CELL_CLAIM)
    path = tmp_path / "claims" / "cells.yaml"
    path.write_text(text)
    return path


def test_a_run_naming_a_cell_has_its_configuration_seeds_and_numbers(tmp_path):
    from claimbench.spec.claims import load_claim

    spec = load_claim(write_cell_claim(tmp_path))
    table = load_table(tmp_path / "claims" / "tables" / "t.yaml")
    full = spec.tier("full")
    b20 = full.groups["b20"].point()
    cell = table.cell("B 20", "CIFAR10")
    assert b20.cell == cell.id == "t/B 20/CIFAR10"
    assert [run_key(c) for c in b20.configs] == [run_key(c) for c in cell.configs] and len(b20.configs) == 3
    assert b20.paper == {"test_error": 15.2, "sparsity_gamma": 82, "sparsity_act": 50}  # the cell's, plus the claim's own
    along = full.groups["along"]
    assert along.axis == "train.batch_size" and [p.axis_value for p in along.points] == [20, 40]
    assert [p.paper["test_error"] for p in along.points] == [45.3, 39.0]
    assert [run_key(c) for c in along.point(40).configs] == [run_key(c) for c in table.cell("B 40", "CIFAR100").configs]
    other = full.groups["other_seed"].point()
    assert [c.train.seed for c in other.configs] == [7] and full.groups["other_seed"].seeds == (7,)
    same = table.cell("B 40", "CIFAR10").configs[0]
    assert other.configs[0].to_dict() == {**same.to_dict(), "train": {**same.to_dict()["train"], "seed": 7}}
    # dedup with the table's own runs: 4 runnable cells x 3 seeds, plus the one run at seed 7
    plan = plan_runs([spec], "full", RunStore(tmp_path / "cache"), "cuda", tables=[table])
    assert len(plan.runs) == 13
    assert next(r for r in plan.runs if run_key(cell.configs[0]) == r.key).claims == ["cells"]


@pytest.mark.parametrize("runs, field, words", [
    ('      x: {cell: "tt/B 20/CIFAR10"}\n', "runs.x.cell", "unknown table 'tt' (did you mean 't'?); known: t (a table is named by its file in tables/"),
    ('      x: {cell: "t/B 30/CIFAR10"}\n', "runs.x.cell", "t has no cell 't/B 30/CIFAR10' (did you mean"),
    ('      x: {cell: "t/B 20/CIFAR1"}\n', "runs.x.cell", "(did you mean 't/B 20/CIFAR10'?); its rows: 'B 20', 'B 40',"),
    ('      x: {cell: "B 20"}\n', "runs.x.cell", "expected a table cell as <table>/<row>[/<column>]"),
    ('      x: {cell: "t/B 80/CIFAR10"}\n', "runs.x.cell", "is not run (no such GPU): it cannot be a claim's run"),
    ('      x: {cell: "t/Li et al./CIFAR10"}\n', "runs.x.cell", "another method's number (Li et al.'s pruning)"),
    ('      x: {cell: "t/B 20/CIFAR10", paper: {test_error: 15.2}}\n', "runs.x.paper.test_error",
     "cell 't/B 20/CIFAR10' prints test_error (15.2): a number is typed once"),
    ('      x: {cell: "t/B 20/CIFAR10", set: {optim.lam: 0.1}}\n', "runs.x.set", "a variation of it is a run of its own"),
    ('      x: {cell: "t/B 20/CIFAR10", sed: [0]}\n', "runs.x.sed", "unknown key of a run with cell 'sed' (did you mean 'seeds'?)"),
    ('      x: {axis: {train.batch_size: [20, 80]}, cell: ["t/B 20/CIFAR10", "t/B 40/CIFAR10"]}\n', "runs.x.cell[1]",
     "has train.batch_size = 40, the axis says 80"),
    ('      x: {axis: {train.batch_size: [20, 40]}, cell: ["t/B 20/CIFAR10", "t/B 40/CIFAR100"]}\n', "runs.x.cell[1]",
     "differs from 't/B 20/CIFAR10' in data.dataset, not only in the axis train.batch_size"),
    ('      x: {axis: {train.batch_size: [20, 40]}, cell: "t/B 20/CIFAR10"}\n', "runs.x.cell",
     "with an axis, expected a list of 2 cells"),
    ('      x: {axis: {optim.lamb: [1, 2]}, cell: ["t/B 20/CIFAR10", "t/B 40/CIFAR10"]}\n', "runs.x.axis.optim.lamb",
     "unknown run-config field 'optim.lamb' (did you mean 'optim.lam'?)"),
])
def test_cell_mistakes_name_file_line_field_and_a_hint(tmp_path, runs, field, words):
    from claimbench.spec.claims import load_claim

    path = write_cell_claim(tmp_path, runs)
    with pytest.raises(SpecError) as e:
        load_claim(path)
    found = [p for p in e.value.problems if p.field == f"tiers.full.{field}"]
    assert found, [str(p) for p in e.value.problems]
    assert words in found[0].message, found[0].message
    assert found[0].line == 8 and found[0].file.endswith("cells.yaml")  # the run's line


def test_a_cell_needs_a_tables_folder(tmp_path):
    from claimbench.spec.claims import load_claim

    path = tmp_path / "cells.yaml"
    path.write_text(CELL_CLAIM)
    with pytest.raises(SpecError) as e:
        load_claim(path)
    assert any(p.field == "tiers.full.runs.b20.cell" and "no tables/ folder beside this claim file" in p.message
               for p in e.value.problems)


def _cells_by_config(tables) -> dict[tuple, list]:
    by: dict[tuple, list] = {}
    for t in tables:
        for c in t.cells:
            if c.configs:
                by.setdefault(tuple(run_key(x) for x in c.configs), []).append(c)
    return by


def test_repository_claim_runs_are_the_cells_they_name(repo_claims, repo_tables):
    """A run naming a cell trains exactly the cell's runs and carries every number the cell prints."""
    cells = {c.id: c for t in repo_tables for c in t.cells}
    named = [(s.id, g.name, p) for s in repo_claims for g in s.tier("full").groups.values() for p in g.points if p.cell]
    assert len(named) > 100
    for claim, group, p in named:
        cell = cells[p.cell]
        assert [run_key(c) for c in p.configs] == [run_key(c) for c in cell.configs], (claim, group, p.cell)
        assert all(p.paper.get(m) == v for m, v in cell_paper(cell).items()), (claim, group, p.cell)


def test_no_full_tier_claim_number_is_typed_beside_the_table(repo_claims, repo_tables):
    """A number is typed once: a full-tier run with the configuration of a table cell names it, and a
    number a claim adds to a cell's is one no cell of that configuration prints."""
    by_config = _cells_by_config(repo_tables)
    typed_twice = []
    for spec in repo_claims:
        for g in spec.tier("full").groups.values():
            for p in g.points:
                same = by_config.get(tuple(run_key(c) for c in p.configs), [])
                where = f"{spec.id} {g.name}" + (f"@{p.axis_value}" if p.axis_value is not None else "")
                if p.cell is None and same:
                    typed_twice.append(f"{where}: the configuration of {[c.id for c in same]}: name one as cell:")
                own = next((c for c in same if c.id == p.cell), None)
                for metric, value in p.paper.items():
                    if own is not None and cell_prints(own, metric):
                        continue
                    printed = [(c.id, cell_paper(c).get(metric)) for c in same if cell_prints(c, metric)]
                    if printed:
                        typed_twice.append(f"{where}: {metric}={value} typed in the claim, printed by {printed}")
    assert not typed_twice, typed_twice


def test_named_smoke_analogs_resolve_and_bad_ones_are_rejected(tmp_path, repo_claims, repo_tables):
    from claimbench.report.tables import named_analogs, resolve_smoke

    named = named_analogs(repo_claims)
    refs = [c.smoke for t in repo_tables for c in t.cells if c.smoke]
    assert refs and all(resolve_smoke(r, named) is not None for r in refs), [r for r in refs if resolve_smoke(r, named) is None]
    assert resolve_smoke("narrower-net-less-sparse:width@1.25e-1", named).configs[0].model.width == 0.125
    text = SMALL.replace('{label: "B 20", set', '{label: "B 20", smoke: {CIFAR10: "no colon"}, set')
    text = text.replace('{label: "B 40", set', '{label: "B 40", smoke: {CIFAR1: "a:b"}, set')
    probs = "\n".join(problems_of(write_table(tmp_path, text)))
    assert "rows[0].smoke.CIFAR10: expected \"claim-id:run\"" in probs
    assert "rows[1].smoke.CIFAR1: unknown column 'CIFAR1' (did you mean 'CIFAR10'?)" in probs
