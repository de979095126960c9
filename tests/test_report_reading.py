"""Reports read as a reader reads them: generated pages, checked for what would mislead at a glance.

Two reports are generated once per module: the full tier of the repository's claims and tables on
an empty cache (nothing run), and a smoke-tier report of a few claims from a fabricated cache
(RunRecords with chosen metrics put under their run keys). Each test below reads the markdown for
one kind of defect: paper numbers re-rounded, doubled prefixes, unlabelled header cells, markers
lost, internal references, a not-run claim that hides its checks, arithmetic that does not add up,
few-seed verdicts that look like three-seed ones, scaled analogs placed in the paper's cells, and
an index that does not open with what happened.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from claimbench import cli
from claimbench.cache import RunRecord, RunStore, run_key
from claimbench.report import render_reports
from claimbench.report.mdtable import escape_cell
from claimbench.spec.claims import claim_files, load_claim, load_claims
from claimbench.spec.source import SpecError
from claimbench.spec.table_folder import load_tables, table_files
from claimbench.spec.tables import load_table
from tests.helpers import OWN_RUN_BASE, REPO

pytest_plugins = ["pytester"]

CLAIMS = REPO / "claims"

# Chosen so that the at_most check of adam-l2-vs-wd compares means 1.996 and 1.492: rounded on
# their own to one decimal they read "2.0 - 1.5 = 0.504".
ADAM_L2_ERR = [1.990, 1.996, 2.002]
ADAM_WD_ERR = [1.490, 1.492, 1.494]


def _metrics(sparsity: float, error: float) -> dict:
    return {"sparsity_gamma": sparsity, "sparsity_act": sparsity - 1, "test_error": error,
            "pruned_test_error": error, "train_loss": 0.1, "test_loss": 0.2, "conv_params_pruned_pct": sparsity,
            "layer_sparsity_gamma": [0, 0, 5, 60, 70, 55, 70], "diverged_at": None}


def fabricate(store: RunStore, spec, values: dict[str, list[tuple[float, float]]]) -> None:
    """Put one record per seed of each named smoke run group: (sparsity, error) per seed."""
    for group, per_seed in values.items():
        configs = spec.tier("smoke").groups[group].points[0].configs
        assert len(configs) == len(per_seed), (spec.id, group)
        for cfg, (sparsity, error) in zip(configs, per_seed):
            store.put(run_key(cfg), RunRecord(cfg, _metrics(sparsity, error), {},
                                              {"device": "cpu", "torch": "x", "train_wall_s": 1}))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "report"
    cache = tmp_path_factory.mktemp("empty-cache")
    assert cli.main(["report", "--tier", "full", "--claims-dir", str(CLAIMS), "--cache-dir", str(cache),
                     "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def smoke_specs():
    names = ["adam_l2_vs_wd.yaml", "adaptive_vs_sgd.yaml", "beta_init.yaml", "imagenet.yaml"]
    return load_claims([CLAIMS / n for n in names])


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, smoke_specs) -> Path:
    """adam-l2-vs-wd on three seeds; adaptive-sparser-than-sgd reproduced with one seed on one of
    its runs; beta-init waiting for four runs; imagenet-basicnet-not-sparse not run by design."""
    by_id = {s.id: s for s in smoke_specs}
    store = RunStore(tmp_path_factory.mktemp("smoke-cache"))
    fabricate(store, by_id["adam-l2-vs-wd"], {
        "adam_l2": list(zip([50.0, 52.0, 49.0], ADAM_L2_ERR)),
        "adam_wd": list(zip([20.0, 22.0, 25.0], ADAM_WD_ERR))})
    # adaptive-sparser-than-sgd's adam is the same configuration as adam_l2 above (one run key).
    fabricate(store, by_id["adaptive-sparser-than-sgd"], {
        "sgd": [(1.0, 2.0), (1.4, 2.0), (1.2, 2.0)], "adagrad": [(60.0, 2.0), (62.0, 2.0), (61.0, 2.0)],
        "adadelta": [(74.0, 1.8)]})
    out = tmp_path_factory.mktemp("smoke") / "report"
    render_reports(smoke_specs, "smoke", store, out, load_tables(table_files(CLAIMS / "tables")))
    return out


def pages(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.md"))}


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a page: rows of cells, the header first (the |---| line dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|[-:| ]+\|", line):
                current.append([c.strip() for c in line.strip()[1:-1].split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def index_rows(index: str) -> dict[str, str]:
    return {m.group(1): line for line in index.splitlines() if (m := re.match(r"\| \[([^\]]+)\]", line))}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split("|")]


# --- 1. the paper's numbers as printed, claim pages too ------------------------------------------


def test_claim_pages_show_table_cell_numbers_as_printed(full_report):
    from claimbench.spec.table_folder import folder_tables

    tables = folder_tables(CLAIMS)
    checked = 0
    for spec in load_claims(claim_files(CLAIMS)):
        tier = spec.tier("full")
        if tier.not_run:
            continue
        page = (full_report / f"{spec.id}.md").read_text()
        for group in tier.groups.values():
            for point in group.points:
                if not point.cell:
                    continue
                cell = tables.find_cell(point.cell)[0]
                for metric, text in cell.paper_text.items():
                    if "[" not in metric:  # per-layer numbers are shown as one list
                        assert f"paper {escape_cell(text)}" in page, (spec.id, point.cell, metric, text)
                        checked += 1
    assert checked > 100
    # The examples readers met re-rounded: 1.98 read "2.0", 0.10 read "0.1", 46 read "46.0".
    pruning = (full_report / "pruning-keeps-error.md").read_text()
    assert "paper 1.98" in pruning and "paper 0.10" in pruning and "paper 2.0 " not in pruning
    assert "paper 30.50" in (full_report / "vgg-tinyimagenet-imagenet.md").read_text()
    assert "paper 46.0" not in (full_report / "beta-init.md").read_text()


def test_claim_typed_numbers_are_not_reformatted(smoke_report):
    page = (smoke_report / "adam-l2-vs-wd.md").read_text()
    assert "/ paper 70 |" in page and "/ paper 10.5 |" in page and "paper 70.0" not in page
    # The index shows the deciding check's paper numbers the same way.
    assert "70 vs 40" in cells(index_rows((smoke_report / "index.md").read_text())["adam-l2-vs-wd"])


# --- 2. no doubled prefixes ------------------------------------------------------------------------


def test_no_doubled_prefix(full_report, smoke_report):
    for folder in (full_report, smoke_report):
        for name, text in pages(folder).items():
            assert not re.search(r"not run: *not run", text), name
    index = (full_report / "index.md").read_text()
    assert "➖ not run: 6 of 6 runs missing" in index_rows(index)["activation-agrees-with-gamma"]
    page = (full_report / "pruning-keeps-error.md").read_text()
    assert "**Verdict (full tier): ➖ not run: 9 of 9 runs missing" in page
    assert "➖ not run: 4 of 7 runs missing" in index_rows((smoke_report / "index.md").read_text())["beta-init"]


# --- 3. every header cell labelled, no empty leading column ----------------------------------------


def test_every_table_header_is_labelled_and_no_leading_column_is_empty(full_report, smoke_report):
    seen = 0
    for folder in (full_report, smoke_report):
        for name, text in pages(folder).items():
            for table in markdown_tables(text):
                header, body = table[0], table[1:]
                assert all(header), (name, header)
                assert any(row[0] for row in body), (name, header, "empty first column")
                seen += 1
    assert seen > 60
    # Tables without row groups (5, 9, S3) have a single row column; transposed ones name it too.
    for table_id in ("table05", "table09", "supp_table3"):
        header = markdown_tables((full_report / "tables" / f"{table_id}.md").read_text())[0][0]
        assert header[0] == "row" and "group" not in header, (table_id, header)
    assert markdown_tables((full_report / "tables" / "table01.md").read_text())[0][0][:2] == ["group", "row"]
    assert markdown_tables((full_report / "tables" / "table07.md").read_text())[0][0][0] == "metric"


# --- 4. the paper's markers kept, with their meaning ----------------------------------------------


def test_markers_are_kept_with_their_meaning(full_report, smoke_report):
    for folder in (full_report, smoke_report):
        page = (folder / "tables" / "table09.md").read_text()
        liu = next(line for line in page.splitlines() if line.startswith("| Liu et al."))
        assert "31.38\\*" in liu
        assert "`*` = Liu et al.'s post-pruning error is after fine-tuning" in page
    marked = [(t, c, m) for t in load_tables(table_files(CLAIMS / "tables")) for c in t.cells
              for m, text in c.paper_text.items() if not re.fullmatch(r"-?[\d.]+", text)]
    assert [(t.id, c.row, m, c.paper_text[m]) for t, c, m in marked] == \
        [("table09", "Liu et al. [14] from [15]", "pruned_test_error", "31.38*")]
    assert marked[0][1].paper[marked[0][2]] == 31.38  # the number is read without its marker


MARKED = """\
table: "3"
title: A marked table
source: {paper: cvpr2019, where: "Table 3"}
base: {include: ../_bases/cifar10_basicnet.yaml}
seeds: [0]
metrics: [test_error]
MARKERS
cells: 1
rows:
  - {label: "B 20", set: {train.batch_size: 20}, paper: [VALUE]}
"""


@pytest.mark.parametrize("markers, value, problem", [
    ("", '"15.2*"', "expected a number or null, got '15.2*' (a marker is declared under markers: first"),
    ('markers: {"*": "after fine-tuning"}', "15.2", "marker '*' is declared but no number of the table carries it"),
    ('markers: {"†": "after fine-tuning"}', '"15.2*"', "got '15.2*'"),
])
def test_markers_must_be_declared_and_used(tmp_path, markers, value, problem):
    (tmp_path / "claims" / "tables").mkdir(parents=True)
    shutil.copytree(CLAIMS / "_bases", tmp_path / "claims" / "_bases")
    path = tmp_path / "claims" / "tables" / "t.yaml"
    path.write_text(MARKED.replace("MARKERS", markers).replace("VALUE", value))
    with pytest.raises(SpecError) as e:
        load_table(path)
    assert problem in str(e.value)
    path.write_text(MARKED.replace("MARKERS", 'markers: {"*": "after fine-tuning"}').replace("VALUE", '"15.2*"'))
    cell = load_table(path).cells[0]
    assert (cell.paper["test_error"], cell.paper_text["test_error"]) == (15.2, "15.2*")


# --- 5. no references to internal reviews ----------------------------------------------------------


def test_no_page_points_at_internal_reviews(full_report, smoke_report):
    for folder in (full_report, smoke_report):
        for name, text in pages(folder).items():
            assert not re.search(r"\baudit|\breview|\bissue \d|issue #", text, re.IGNORECASE), name
        # A catalogue number the reader has no catalogue for is not a column of the index.
        assert "finding" not in markdown_tables((folder / "index.md").read_text())[0][0]


# --- 6. a claim not run shows what it would check, with the paper's numbers ----------------------


def test_not_run_claims_show_their_checks_with_the_papers_numbers(full_report):
    for spec in load_claims(claim_files(CLAIMS)):
        tier = spec.tier("full")
        page = (full_report / f"{spec.id}.md").read_text()
        if tier.not_run:
            continue
        section = page.split("## Checks", 1)[1].split("\n## ", 1)[0]
        bullets = [line for line in section.splitlines() if line.startswith("- ")]
        assert len(bullets) == len(tier.checks) and all("**not run yet**" in b for b in bullets), spec.id
        assert section.count("the paper") >= len(tier.checks), spec.id
    pruning = (full_report / "pruning-keeps-error.md").read_text()
    assert "c10_adam_l2_1e3 pruned_test_error = 13.5, c10_adam_l2_1e3 test_error = 13.1" in pruning
    assert "`mean c10_adam_l2_1e3 pruned_test_error <= mean c10_adam_l2_1e3 test_error + 0.5" in pruning
    # A tier that is never run points at the tier that runs, with that tier's checks.
    harder = (full_report / "harder-task-less-sparse.md").read_text()
    assert "## What the `smoke` tier checks instead" in harder
    assert "clean sparsity_gamma = 70, cluttered sparsity_gamma = 57" in harder


def test_index_shows_the_papers_numbers_of_a_claim_not_run(full_report):
    rows = index_rows((full_report / "index.md").read_text())
    assert "70 vs 40" in cells(rows["adam-l2-vs-wd"])
    assert "10.5 vs 10.5" in cells(rows["pruning-keeps-error"])


# --- 7. arithmetic shown at the precision it was decided at --------------------------------------

ARITH = re.compile(r"`\|?(-?[\d.]+) - (-?[\d.]+)\|? = (-?[\d.]+);")


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def test_shown_operands_give_the_shown_result(smoke_report):
    page = (smoke_report / "adam-l2-vs-wd.md").read_text()
    assert "`1.996 - 1.492 = 0.504; need <= 2.0" in page  # was "2.0 - 1.5 = 0.504"
    lines = [m for text in pages(smoke_report).values() for m in ARITH.finditer(text)]
    assert len(lines) >= 5
    for m in lines:
        a, b, result = m.groups()
        d = max(_decimals(x) for x in (a, b, result))
        assert all(_decimals(x) == d or float(x) == 0 for x in (a, b, result)), m.group(0)
        assert round(abs(float(a) - float(b)), d) == round(abs(float(result)), d), m.group(0)


def test_a_result_is_never_shown_on_the_wrong_side_of_its_bound():
    from claimbench.check.verdict import show_arithmetic

    # 40.04 - 20 = 20.04 > 20: at one decimal it would read "40.0 - 20.0 = 20.0; need > 20".
    shown = show_arithmetic([40.04, 20.0], lambda v: [v[0] - v[1]], ((0, 20.0),))
    assert (shown.operands, shown.results) == (("40.04", "20.00"), ("20.04",))


# --- 8. few-seed verdicts say so, in the index and on pytest's line ------------------------------


def test_few_seed_verdict_says_so_in_the_index(smoke_report):
    rows = index_rows((smoke_report / "index.md").read_text())
    assert "✅ reproduced (decided on 1 seed: fewer than 3, so no significance test)" in rows["adaptive-sparser-than-sgd"]
    assert "decided on" not in rows["adam-l2-vs-wd"]  # three seeds on every side
    page = (smoke_report / "adaptive-sparser-than-sgd.md").read_text()
    assert "This verdict was decided on 1 seed" in page


FEW_SEEDS_CLAIM = """\
id: one-seed
title: One seed a side
claim: "fabricated"
source: {paper: main, where: Table 1}
tiers:
  smoke:
    why: fabricated runs, never trained
    base: {model: {arch: basicnet, width: 0.125}, data: {dataset: digits}, train: {unit: steps, phases: [20]}}
    seeds: [0]
    runs:
      adam_l2: {set: {optim.regularizer: l2}, paper: {sparsity_gamma: 70}}
      adam_wd: {set: {optim.regularizer: wd}, paper: {sparsity_gamma: 40}}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}
"""


def test_few_seed_verdict_says_so_on_pytests_line(pytester):
    claims = pytester.mkdir("claims")
    (claims / "paper.yaml").write_text("title: A fixture paper\nauthors: [A B]\nvenue: Fixture 2019\n"
                                       "documents:\n  main: {name: the main paper}\n")
    path = claims / "one.yaml"
    path.write_text(FEW_SEEDS_CLAIM)
    spec = load_claim(path)
    store = RunStore(pytester.path / "cache")
    for group, sparsity in (("adam_l2", 60.0), ("adam_wd", 20.0)):
        cfg = spec.tier("smoke").groups[group].points[0].configs[0]
        store.put(run_key(cfg), RunRecord(cfg, _metrics(sparsity, 2.0), {}, {}))
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("claims", "--tier", "smoke", "--claimbench-cache", str(store.root), "--no-train",
                                "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*one-seed PASSED (decided on 1 seed: fewer than 3, so no significance test)*"])


# --- 9. smoke analogs never in the paper's cells or on its axis ----------------------------------


def test_smoke_analogs_sit_in_their_own_table(smoke_report):
    page = (smoke_report / "tables" / "table01.md").read_text()
    paper_table, analogs = markdown_tables(page)[:2]
    # The paper's table holds the paper's numbers alone: no mean ± std, no n, in any cell.
    assert not any("±" in cell or "n=" in cell for row in paper_table for cell in row)
    adam = next(row for row in paper_table if row[:2] == ["Adam", "L2 1e-04"])
    assert adam[2:5] == ["71", "70", "10.5"]
    # The analog: its own row, its setting named (digits, width, lambda), the cells it stands for.
    assert analogs[0][:3] == ["smoke analog (claim: run)", "its setting (smoke analog, not the paper's)",
                              "stands for (paper cells)"]
    row = next(r for r in analogs if "adam-l2-vs-wd" in r[0] and "l2=" in r[1])
    assert row[1].startswith("digits, basicnet width 0.375, adam l2=0.01") and "seeds 0, 1, 2" in row[1]
    assert "Adam L2 1e-04 (CIFAR10)" in row[2] and "50.3 ± 1.5 (n=3)" in row


def test_no_plot_puts_an_analog_on_the_papers_axis(smoke_report, full_report):
    assert not list((smoke_report / "tables").glob("*.png"))
    assert "No plot of ours against the paper at this tier" in (smoke_report / "tables" / "table01.md").read_text()
    assert (full_report / "tables" / "table01.png").exists()  # the full tier trains the paper's settings


# --- 10. the index opens with a summary, then the claims, then the tables ------------------------


def test_index_leads_with_a_summary(full_report, smoke_report):
    smoke = (smoke_report / "index.md").read_text()
    first = smoke.split("\n\n")[1]
    assert first.startswith("This report checks 4 findings of the paper")
    assert "2 reproduced at the `smoke` tier (1 of them decided on fewer than 3 seeds" in first
    assert "1 cannot be run at this tier: ImageNet cannot be embedded (imagenet-basicnet-not-sparse)" in first
    assert "1 is not run yet because its runs are not in this cache" in first
    full = (full_report / "index.md").read_text()
    first = full.split("\n\n")[1]
    assert "0 reproduced at the `full` tier" in first and "harder-task-less-sparse" in first
    assert "24 are not run yet" in first
    for text in (smoke, full):
        assert text.index("This report checks") < text.index("## Claims") < text.index("## The paper's tables")


OWN_CLAIM = """\
id: own-net-trains
title: My network trains
claim: "a network trained on digits is better than chance"
source: {paper: lab-notebook, where: "2026-12, page 3"}
tiers:
  smoke:
    why: one short run; my own experiment, no paper behind it
    base: {model: {width: 0.125}, data: {dataset: digits}, optim: {name: adam},
           train: {batch_size: 16, unit: steps, phases: [8, 2], snapshots: 1}}
    seeds: [0]
    runs:
      mine: {}
    checks:
      - {kind: distribution, a: {run: mine, metric: test_error}, min: 0, max: 90}
"""


def test_a_folder_without_paper_numbers_gets_pages_without_a_paper(tmp_path):
    """Claims about one's own experiment: no paper column (the check's own bounds are what is
    expected instead), no paper-scale wording, right plurals."""
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "own.yaml").write_text(OWN_CLAIM)
    specs = load_claims([folder / "own.yaml"])
    render_reports(specs, "smoke", RunStore(tmp_path / "cache"), tmp_path / "report")
    index = (tmp_path / "report" / "index.md").read_text()
    header = next(line for line in index.splitlines() if line.startswith("| claim"))
    assert cells(header) == ["claim", "source", "verdict", "expected", "measured (mean ± std, n)"]
    row = next(line for line in index.splitlines() if line.startswith("| [own-net-trains]"))
    assert cells(row)[3] == ">= 0 and &lt;= 90.0"
    assert "paper" not in index.lower().replace("paper rows", "")
    assert "1 claim:" in index and "1 of 1 run missing" in index and "1 claims" not in index


# --- 11. claims about one's own experiment read as an experiment's, not as a paper's -------------

EXPERIMENT = """\
title: Sparsity in my digits network
authors: [A. Researcher]
venue: lab notebook
documents:
  notebook: {name: the lab notebook}
"""
TRAINS = f"""\
id: net-trains
title: My network trains
claim: "a network trained on digits is better than chance"
source: {{paper: notebook, where: "2026-12, page 3"}}
tiers:
  smoke:
    why: one short run
    base: {OWN_RUN_BASE}
    seeds: [0]
    runs:
      mine: {{}}
    checks:
      - {{kind: distribution, a: {{run: mine, metric: test_error}}, min: 0, max: 90}}
"""
SPARSER = f"""\
id: l2-sparser
title: L2 switches off more units of my network
claim: "with L2 more BatchNorm scales of my network are near zero than without"
source: {{paper: notebook, where: "2026-12, page 4"}}
assume:
  - text: Adam at its default learning rate.
    reason: the notebook does not record the rate.
tiers:
  smoke:
    why: three seeds of a short run each way
    base: {OWN_RUN_BASE}
    seeds: [0, 1, 2]
    runs:
      l2: {{set: {{optim.regularizer: l2, optim.lam: 0.01}}}}
      none: {{set: {{optim.regularizer: none, optim.lam: 0}}}}
    checks:
      - {{kind: greater, metric: sparsity_gamma, a: l2, b: none, margin: 0}}
"""


@pytest.fixture
def experiment(tmp_path):
    """A claims folder about one's own experiment (no paper numbers anywhere) and a cache holding
    its runs, fabricated: net-trains holds, l2-sparser does not (less sparse with L2)."""
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "paper.yaml").write_text(EXPERIMENT)
    (folder / "trains.yaml").write_text(TRAINS)
    (folder / "sparser.yaml").write_text(SPARSER)
    by_id = {s.id: s for s in load_claims(claim_files(folder))}
    store = RunStore(tmp_path / "cache")
    fabricate(store, by_id["net-trains"], {"mine": [(5.0, 10.0)]})
    fabricate(store, by_id["l2-sparser"], {"l2": [(1.0, 9.0), (2.0, 9.0), (1.5, 9.0)],
                                           "none": [(30.0, 9.0), (31.0, 9.0), (29.0, 9.0)]})
    return folder, by_id, tmp_path / "cache"


def test_an_experiments_pages_say_holds_and_never_paper_or_reproduced(experiment, tmp_path, capsys):
    folder, _, cache = experiment
    out = tmp_path / "report"
    assert cli.main(["report", "--tier", "smoke", "--claims-dir", str(folder), "--cache-dir", str(cache),
                     "--out", str(out)]) == 0
    # The console's tally is in the pages' words too.
    assert "wrote " in (said := capsys.readouterr().out) and "1 does not hold, 1 holds" in said
    assert "reproduc" not in said
    written = pages(out)
    assert set(written) == {"index.md", "net-trains.md", "l2-sparser.md", "runs.md"}
    for name, text in written.items():
        assert "paper" not in text.lower() and "reproduc" not in text.lower(), name
    assert "**Verdict (smoke tier): ✅ holds (decided on 1 seed" in written["net-trains.md"]
    assert "- **holds** —" in written["net-trains.md"]
    assert "**Verdict (smoke tier): ❌ does not hold" in written["l2-sparser.md"]
    assert "- **does not hold** —" in written["l2-sparser.md"]
    assert "## Settings assumed\n" in written["l2-sparser.md"]
    index = written["index.md"]
    assert "2 claims: 1 does not hold, 1 holds." in index
    assert "1 holds at the `smoke` tier (1 of them decided on fewer than 3 seeds" in index and "1 does not hold." in index
    # Run tables show our numbers only.
    for page in ("net-trains.md", "l2-sparser.md"):
        assert "## Runs (mean ± std over seeds)" in written[page]


def test_an_experiments_verdict_lines_in_pytest_say_does_not_hold(experiment):
    from claimbench.check.evaluate import evaluate_claim
    from claimbench.pytest_plugin import format_verdict

    _, by_id, cache = experiment
    spec = by_id["l2-sparser"]
    verdict = evaluate_claim(spec, "smoke", RunStore(cache))
    assert verdict.status == "not reproduced"  # the machine-readable value is the same
    assert verdict.to_dict()["status"] == "not reproduced"
    text = format_verdict(spec, verdict)
    assert "at tier smoke: DOES NOT HOLD" in text and "[does not hold]" in text
    assert "reproduc" not in text.lower() and "paper" not in text.lower()


def test_a_papers_claim_that_quotes_no_number_still_reads_as_the_papers():
    """l2-adam-low-gradient-decay quotes no number at any tier (a simulation): its words come from
    its folder, whose other claims quote the paper, so alone it is still 'reproduced'."""
    from claimbench.check.verdict import Verdict
    from claimbench.pytest_plugin import format_verdict
    from claimbench.report.markdown import index_page
    from claimbench.report.paper_numbers import paper_to_reproduce, quotes_a_paper

    spec = load_claim(CLAIMS / "low_gradient_decay.yaml")
    assert not quotes_a_paper(spec) and paper_to_reproduce([spec])
    verdict = Verdict(spec.id, "smoke", "not reproduced")
    assert "at tier smoke: NOT REPRODUCED" in format_verdict(spec, verdict)
    assert "❌ not reproduced" in index_page([spec], [verdict], "smoke")
