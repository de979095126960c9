"""Paper tables as data: the strict loader, the regenerated pages, and the full-tier plan union."""

import re
import shutil
from pathlib import Path

import pytest

from repro import cli
from repro.cache import RunStore, run_key
from repro.plan import plan_runs
from repro.report.tables import render_tables, smoke_analogs
from repro.spec.claims import claim_files, load_claims
from repro.spec.source import SpecError
from repro.spec.tables import load_table, load_tables, table_files
from repro.train.run import RunRecord

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "claims" / "tables"

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
    return load_claims(claim_files(ROOT / "claims"))


def write_table(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    folder = tmp_path / "claims" / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    if not (tmp_path / "claims" / "_bases").exists():
        shutil.copytree(ROOT / "claims" / "_bases", tmp_path / "claims" / "_bases")
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
    shutil.copytree(ROOT / "claims" / "_bases", tmp_path / "claims" / "_bases")
    claim = load_claims([Path(shutil.copy(ROOT / "claims" / "adam_l2_vs_wd.yaml", tmp_path / "claims"))])
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
    row = next(ln for ln in text.splitlines() if "| Adam" in ln and "L2 1e-04" in ln)
    assert f"33.0 ± 0 (n={len(analog.configs)}) / 70" in row


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
    """`repro report --tier full` writes one page per paper table, every paper number with "-"."""
    import json

    claims = tmp_path / "claims"
    shutil.copytree(ROOT / "claims" / "_bases", claims / "_bases")
    shutil.copytree(TABLES, claims / "tables")
    shutil.copy(ROOT / "claims" / "adam_l2_vs_wd.yaml", claims)
    common = ["--claims-dir", str(claims), "--cache-dir", str(tmp_path / "cache"), "--tier", "full"]
    assert cli.main(["report", *common, "--out", str(tmp_path / "out")]) == 0
    tables = load_tables(table_files(TABLES))
    index = (tmp_path / "out" / "index.md").read_text()
    for t in tables:
        page = (tmp_path / "out" / "tables" / f"{t.id}.md").read_text()
        assert f"](tables/{t.id}.md)" in index
        for c in t.cells:
            for m, text in c.paper_text.items():
                assert f" / {text}" in page, (t.id, c.id, m)
        assert not re.search(r"± .* / ", page)  # nothing of ours on an empty cache
    capsys.readouterr()
    assert cli.main(["plan", *common, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_runs"] >= 360
    run = next(r for r in plan["runs"] if "adam-l2-vs-wd" in r["claims"] and r["cells"])
    assert any(c.startswith("table01/") for c in run["cells"])


# Claims whose `paper:` value has no table cell with the same configuration and metric, and why.
NO_CELL = {
    # Table 10's caption: "Also shown are the post-pruning test error"; the claim reads it as test_error.
    ("vgg-implicit-pruning", "test_error"): "Table 10 prints the post-pruning error (pruned_test_error)",
}


def test_claims_paper_numbers_agree_with_the_table_cells(repo_claims, repo_tables):
    """A number typed in a claim and in a table spec must agree with some table cell of the same run."""
    tables = repo_tables
    by_key: dict[str, list] = {}
    for t in tables:
        for c in t.cells:
            if c.configs:
                by_key.setdefault(run_key(c.configs[0]), []).append(c)
    mismatches, unexplained = [], []
    for spec in repo_claims:
        for g in spec.tier("full").groups.values():
            for p in g.points:
                cells = by_key.get(run_key(p.configs[0]), []) if p.configs else []
                for metric, value in p.paper.items():
                    if metric == "layer_sparsity_gamma":
                        found = [[c.paper.get(f"{metric}[{i}]") for i in range(1, len(value) + 1)] for c in cells
                                 if c.paper.get(f"{metric}[1]") is not None]
                    else:
                        found = [c.paper[metric] for c in cells if c.paper.get(metric) is not None]
                    where = f"{spec.id} {g.name}@{p.axis_value} {metric}={value}"
                    if not found:
                        if (spec.id, metric) not in NO_CELL:
                            unexplained.append(where)
                    elif value not in found:
                        mismatches.append(f"{where}: tables give {found}")
    assert not mismatches and not unexplained, mismatches + unexplained


def test_named_smoke_analogs_resolve_and_bad_ones_are_rejected(tmp_path, repo_claims, repo_tables):
    from repro.report.tables import named_analogs, resolve_smoke

    named = named_analogs(repo_claims)
    refs = [c.smoke for t in repo_tables for c in t.cells if c.smoke]
    assert refs and all(resolve_smoke(r, named) is not None for r in refs), [r for r in refs if resolve_smoke(r, named) is None]
    assert resolve_smoke("narrower-net-less-sparse:width@1.25e-1", named).configs[0].model.width == 0.125
    text = SMALL.replace('{label: "B 20", set', '{label: "B 20", smoke: {CIFAR10: "no colon"}, set')
    text = text.replace('{label: "B 40", set', '{label: "B 40", smoke: {CIFAR1: "a:b"}, set')
    probs = "\n".join(problems_of(write_table(tmp_path, text)))
    assert "rows[0].smoke.CIFAR10: expected \"claim-id:run\"" in probs
    assert "rows[1].smoke.CIFAR1: unknown column 'CIFAR1' (did you mean 'CIFAR10'?)" in probs
