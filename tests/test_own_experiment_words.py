"""A researcher's own experiment, read as one: its checks' thresholds are what is expected, and no
message speaks of a paper; what `claimbench run` shows while it trains; and run labels that tell
apart runs differing only in a trainer's own settings (``train.params``).

The folders here quote no paper number anywhere, so their pages are an experiment's
(``claimbench.report.paper_numbers.paper_to_reproduce`` is False for them).
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from claimbench.cache import RunRecord, RunStore, run_key
from claimbench.report import render_reports
from claimbench.spec.claims import claim_files, load_claims
from tests.helpers import KIT, KIT_BASE, OWN_RUN_BASE, Runs, per_seed

pytest_plugins = ["pytester"]

EXPERIMENT = """\
title: My digits network
authors: [A. Researcher]
venue: lab notebook
documents:
  notebook: {name: the lab notebook}
"""


def claim(cid: str, checks: str) -> str:
    return textwrap.dedent(f"""\
        id: {cid}
        title: My network, {cid}
        claim: "my network's error is what I expect"
        source: {{paper: notebook, where: "2026-12, page 5"}}
        tiers:
          smoke:
            why: one short run
            base: {OWN_RUN_BASE}
            seeds: [0]
            runs:
              mine: {{}}
            checks:
        """) + "".join(f"      - {c}\n" for c in checks.splitlines())


NEAR = claim("near-expected", "{kind: value, a: {run: mine, metric: test_error}, expected: 12, tolerance: 3}")
BOUNDED = claim("bounded", "{kind: distribution, a: {run: mine, metric: test_error}, min: 5, max: 20}")
NO_EXPECTED = claim("no-expected", "{kind: value, a: {run: mine, metric: test_error}, tolerance: 3}")


def _metrics(error: float) -> dict:
    return {"sparsity_gamma": 1.0, "sparsity_act": 0.5, "test_error": error, "pruned_test_error": error,
            "train_loss": 0.1, "test_loss": 0.2, "conv_params_pruned_pct": 1.0,
            "layer_sparsity_gamma": [0, 0, 5, 60, 70, 55, 70], "diverged_at": None}


def pages(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.md"))}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split("|")]


def index_rows(index: str) -> dict[str, list[str]]:
    """The index's claims table: the header under "" and each claim's row under its id."""
    lines = [line for line in index.splitlines() if line.startswith("| ") and not line.startswith("|--")]
    rows = {"": cells(lines[0])}
    for line in lines[1:]:
        found = re.match(r"\| \[([^\]]+)\]", line)
        if found:
            rows[found.group(1)] = cells(line)
    return rows


@pytest.fixture
def experiment(tmp_path):
    """Three claims about one's own experiment, a cache holding their one run (test error 11)."""
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "paper.yaml").write_text(EXPERIMENT)
    for name, text in (("near", NEAR), ("bounded", BOUNDED), ("noexp", NO_EXPECTED)):
        (folder / f"{name}.yaml").write_text(text)
    specs = load_claims(claim_files(folder))
    store = RunStore(tmp_path / "cache")
    for spec in specs:
        for cfg in spec.tier("smoke").configs():
            store.put(run_key(cfg), RunRecord(cfg, _metrics(11.0), {}, {"device": "cpu", "torch": "x", "train_wall_s": 1}))
    return specs, store


# --- 1. an experiment's thresholds read as expected; nothing speaks of a paper ------------------------


def test_an_experiments_index_shows_each_checks_own_threshold_as_expected(experiment, tmp_path):
    specs, store = experiment
    render_reports(specs, "smoke", store, tmp_path / "report")
    written = pages(tmp_path / "report")
    for name, text in written.items():
        assert "paper" not in text.lower(), name
    rows = index_rows(written["index.md"])
    header = rows[""]
    assert header == ["claim", "source", "verdict", "expected", "measured (mean ± std, n)"]
    expected = {cid: row[header.index("expected")] for cid, row in rows.items() if cid}
    assert expected == {"near-expected": "12.0 ± 3.0", "bounded": ">= 5.0 and &lt;= 20.0", "no-expected": "-"}
    # Before any run exists, the column says what the first check will hold the runs to.
    render_reports(specs, "smoke", RunStore(tmp_path / "empty"), tmp_path / "pending")
    rows = index_rows((tmp_path / "pending" / "index.md").read_text())
    assert rows["near-expected"][rows[""].index("expected")] == "12.0 ± 3.0"
    assert rows["bounded"][rows[""].index("expected")] == ">= 5.0 and &lt;= 20.0"


def test_a_value_check_without_expected_asks_for_expected_not_a_paper_number(experiment, tmp_path):
    specs, store = experiment
    render_reports(specs, "smoke", store, tmp_path / "report")
    page = (tmp_path / "report" / "no-expected.md").read_text()
    assert "**Verdict (smoke tier): ⚠️ error: no expected value for mine test_error: give 'expected'**" in page, page
    assert "paper" not in page.lower()
    # Its page before the run exists: the rule names what is missing, and no paper.
    render_reports(specs, "smoke", RunStore(tmp_path / "empty"), tmp_path / "pending")
    pending = (tmp_path / "pending" / "no-expected.md").read_text()
    assert "`|mean mine test_error - expected| <= 3.0; no expected value: give 'expected'`" in pending, pending
    assert "paper" not in pending.lower()


def test_the_pytest_line_of_a_value_check_without_expected_names_no_paper(pytester):
    claims = pytester.mkdir("claims")
    (claims / "paper.yaml").write_text(EXPERIMENT)
    (claims / "noexp.yaml").write_text(NO_EXPECTED)
    (spec,) = load_claims(claim_files(claims))
    store = RunStore(pytester.path / "cache")
    for cfg in spec.tier("smoke").configs():
        store.put(run_key(cfg), RunRecord(cfg, _metrics(11.0), {}, {}))
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("claims", "--tier", "smoke", "--claimbench-cache", str(store.root), "--no-train",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "reason: no expected value for mine test_error: give 'expected'" in text, text
    assert "paper number" not in text and "the paper" not in text, text


def test_a_value_check_without_expected_offers_a_paper_number_only_where_the_claims_are_a_papers():
    from claimbench.check.kinds import Observations, check_claim_tier
    from claimbench.spec.checks import parse_check_params
    from claimbench.spec.claims import CheckSpec

    runs = Runs().add("mine", per_seed("test_error", [10, 11, 12]))
    typed, problems = parse_check_params("value", {"kind": "value", "a": {"run": "mine", "metric": "test_error"},
                                                   "tolerance": 3}, runs.groups)
    assert problems == []
    spec = CheckSpec("value", typed, 7, "tiers.smoke.checks[0]")
    metrics = lambda group, value: runs.metrics[(group.name, value)]  # noqa: E731
    (papers,) = check_claim_tier([spec], Observations(runs.groups, metrics))
    assert papers.reason == "no expected value: give 'expected' or a paper number for mine test_error"
    (own,) = check_claim_tier([spec], Observations(runs.groups, metrics, with_paper=False))
    assert own.reason == "no expected value for mine test_error: give 'expected'"


# --- 2. `claimbench run` shows progress while it trains ------------------------------------------------


TINY_RUN = """\
model: {arch: basicnet, width: 0.0625}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {batch_size: 16, unit: steps, phases: [6, 2], snapshots: 1}
"""


@pytest.mark.slow
def test_claimbench_run_prints_progress_while_it_trains(tmp_path, monkeypatch, capsys):
    from claimbench.cli import main

    # A line at every step it reports (a log's cadence, not a terminal's bar: stderr is captured here).
    monkeypatch.setenv("CLAIMBENCH_PROGRESS_EVERY_S", "0")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN)
    assert main(["run", str(config), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    key = re.search(r"^run ([0-9a-f]{12}) ", out, re.M)
    assert key and "(trained now)" in out, out
    lines = [line for line in err.splitlines() if line.startswith(f"training run {key.group(1)}: ")]
    assert len(lines) >= 2, err  # while it trains, not only once it is done
    done = [int(re.search(r": (\d+)/8 run-steps", line).group(1)) for line in lines]
    assert done == sorted(done) and done[0] < 8 and done[-1] == 8, lines
    assert "basicnetx0.0625 digits adam l2=0.01 b16 s0: step 8/8;" in lines[-1], lines[-1]
    # From the cache it trains nothing, and shows no progress.
    assert main(["run", str(config), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "(from cache)" in out and "training run" not in err, err


# --- 3. run labels tell apart runs that differ only in the trainer's own settings ----------------------


# A trainer with typed settings of its own (train.params), beside the tiny dataset and network.
FIELD_KIT = KIT + '''

@dataclass(frozen=True)
class RoundFields:
    rounds: int = 1


def train_rounds(run):
    return TrainerResult(run.model.state_dict(), {})


roundtrainer = TrainerPlugin(name="roundtrainer", train=train_rounds, fields=RoundFields)
'''

ROUNDS = textwrap.dedent(f"""\
    id: more-rounds
    title: More rounds of my trainer
    claim: "two rounds train as one does"
    source: {{paper: notebook, where: H4}}
    tiers:
      smoke:
        why: four steps of a one-conv network on 64 images, one round and two
        base: {KIT_BASE}
        seeds: [0]
        runs:
          once: {{set: {{train.trainer: roundtrainer}}}}
          twice: {{set: {{train.trainer: roundtrainer, train.params.rounds: 2}}}}
        checks:
          - {{kind: distribution, a: {{run: twice, metric: test_error}}, min: 0, max: 100}}
    """)


@pytest.fixture
def rounds_kit(monkeypatch, tmp_path):
    from claimbench import plugins

    (tmp_path / "roundkit.py").write_text(FIELD_KIT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", ",".join(f"roundkit:{n}" for n in ("tinyset", "tinynet", "roundtrainer")))
    sys.modules.pop("roundkit", None)
    plugins._resolve_with.cache_clear()
    yield tmp_path
    sys.modules.pop("roundkit", None)
    plugins._resolve_with.cache_clear()


def test_labels_carry_the_trainer_settings_runs_differ_in(rounds_kit):
    folder = rounds_kit / "claims"
    folder.mkdir()
    (folder / "paper.yaml").write_text(EXPERIMENT)
    (folder / "rounds.yaml").write_text(ROUNDS)
    (spec,) = load_claims(claim_files(folder))
    configs = spec.tier("smoke").configs()
    assert len({run_key(c) for c in configs}) == 2 and len({c.summary() for c in configs}) == 1
    store = RunStore(rounds_kit / "cache")
    for cfg in configs:
        store.put(run_key(cfg), RunRecord(cfg, _metrics(40.0), {}, {"device": "cpu", "torch": "x", "train_wall_s": 1}))
    render_reports([spec], "smoke", store, rounds_kit / "report")
    label = "tinynet tinyset adam l2=0.0001 trainer=roundtrainer b16"
    page = (rounds_kit / "report" / "more-rounds.md").read_text()
    assert f"| once  | {label} train.params.rounds=1 |" in page, page
    assert f"| twice | {label} train.params.rounds=2 |" in page, page
    runs = (rounds_kit / "report" / "runs.md").read_text()
    assert f"{label} s0 train.params.rounds=1" in runs, runs
    assert f"{label} s0 train.params.rounds=2" in runs, runs
