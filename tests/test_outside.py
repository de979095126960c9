"""claimbench on claims outside this repository, as a researcher uses it.

A one-claim folder (claim, base, paper description: what claims/README.md's "Your own claims"
section shows) is built in a temporary directory; `claimbench verify` and `pytest` are run from there
as subprocesses of this virtualenv's installed commands, so they see claimbench as any user would: the
pytest plugin through its entry point, no conftest, no file of this repository. The claim trains
one tiny run (10 steps of a width-0.125 BasicNet on digits: seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, TINY_BASE, TINY_CLAIM, TINY_PAPER

BIN = Path(sys.executable).parent

@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A working directory outside the repository with my_claims/ (one claim, its base, its paper)."""
    root = tmp_path_factory.mktemp("outside")
    assert REPO not in root.parents
    claims = root / "my_claims"
    (claims / "_bases").mkdir(parents=True)
    (claims / "_bases" / "tiny.yaml").write_text(TINY_BASE)
    (claims / "paper.yaml").write_text(TINY_PAPER)
    (claims / "tiny.yaml").write_text(TINY_CLAIM)
    return root


def command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS", "PYTHONPATH")}
    env["CLAIMBENCH_CACHE"] = str(cwd / "cache")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def verified(outside: Path) -> subprocess.CompletedProcess:
    return command(outside, str(BIN / "claimbench"), "verify", "--tier", "smoke", "--claims-dir", "my_claims",
                   "--out", "report", "--device", "cpu")


@pytest.mark.slow
def test_verify_from_outside_the_repository(outside, verified):
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 of 1 claim files valid" in verified.stdout
    assert "trained 1, cached 0, failed 0" in verified.stdout
    assert "1 passed" in verified.stdout
    assert "wrote report/index.md: 1 holds" in verified.stdout


@pytest.mark.slow
def test_report_is_titled_from_the_folders_paper_description(outside, verified):
    assert verified.returncode == 0, verified.stdout + verified.stderr
    index = (outside / "report" / "index.md").read_text()
    assert index.startswith("# Claims of Lovelace & Turing (Fixture 2019): *A Tiny Paper*, tier `smoke`\n")
    assert "| [tiny-trains](tiny-trains.md) |" in index and "fixture2019: Table 1" in index
    assert "Mehta" not in index
    page = (outside / "report" / "tiny-trains.md").read_text()
    assert "**Verdict (smoke tier): ✅ holds (decided on 1 seed: fewer than 3, so no significance test)**" in page
    # Reports point at nothing outside the folder they describe.
    for path in (outside / "report").glob("*.md"):
        assert str(outside) not in path.read_text() and str(REPO) not in path.read_text()


@pytest.mark.slow
def test_pytest_collects_the_folder_and_reads_the_verdict_from_the_cache(outside, verified):
    assert verified.returncode == 0, verified.stdout + verified.stderr
    collected = command(outside, str(BIN / "python"), "-m", "pytest", "my_claims", "--tier", "smoke",
                        "--collect-only", "-q", "-p", "no:cacheprovider")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "my_claims/tiny.yaml::tiny-trains" in collected.stdout.splitlines()
    # The run verify trained is in the cache: pytest passes without training.
    passed = command(outside, str(BIN / "python"), "-m", "pytest", "my_claims", "--tier", "smoke", "--no-train",
                     "-p", "no:cacheprovider")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout


def test_a_misspelt_document_is_invalid_with_a_suggestion(outside, tmp_path):
    claims = tmp_path / "claims_typo"
    (claims / "_bases").mkdir(parents=True)
    (claims / "_bases" / "tiny.yaml").write_text(TINY_BASE)
    (claims / "paper.yaml").write_text(TINY_PAPER)
    (claims / "tiny.yaml").write_text(TINY_CLAIM.replace("paper: fixture2019", "paper: fixture2091"))
    result = command(tmp_path, str(BIN / "claimbench"), "validate", "--claims-dir", "claims_typo")
    assert result.returncode == 2
    assert ("claims_typo/tiny.yaml:4: source.paper: unknown document (see claims_typo/paper.yaml) 'fixture2091' "
            "(did you mean 'fixture2019'?); known: fixture2019") in result.stderr
    assert "Traceback" not in result.stderr


# --- the paper description on its own (in process: no training, milliseconds) -------------------


def test_paper_description_problems_name_file_line_and_field(tmp_path):
    from claimbench.spec.paper import load_paper
    from claimbench.spec.source import SpecError

    path = tmp_path / "paper.yaml"
    path.write_text("title: T\nauthors: Ada\nvenu: X\ndocuments:\n  main: {name: m, txt: a.txt}\n  supp: just text\n")
    with pytest.raises(SpecError) as e:
        load_paper(path)
    found = {(p.line, p.field, p.message.split(";")[0]) for p in e.value.problems}
    assert found == {
        (3, "venu", "unknown key 'venu' (did you mean 'venue'?)"),
        (1, "venue", "required, a non-empty string"),
        (2, "authors", "required, a list of names, e.g. [Dushyant Mehta, Kwang In Kim]"),
        (5, "documents.main.txt", "unknown key 'txt' (did you mean 'text'?)"),
        (6, "documents.supp", "expected a mapping {name, url (optional), text (optional)}"),
    }


def test_citation_and_text_copy(tmp_path, monkeypatch):
    from claimbench.spec.paper import cited, load_paper

    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "main.txt").write_text("Intro.\nTable 1. Sparsity.\n Figure 2. Betas.\n")
    path = tmp_path / "paper.yaml"
    path.write_text("title: T\nauthors: [Ada King Lovelace, Alan Turing, Grace Hopper]\nvenue: V 2019\ndocuments:\n"
                    "  main: {name: m, text: $TEXTS/main.txt}\n  rel: {name: r, text: texts/main.txt}\n"
                    "  none: {name: n}\n")
    paper = load_paper(path)
    assert paper.citation == "Lovelace, Turing & Hopper (V 2019)"
    assert cited("Tables 1 and 3; supplement Figures 2, 4; Fig. 5") == [
        "Table 1", "Table 3", "Figure 2", "Figure 4", "Figure 5"]
    monkeypatch.delenv("TEXTS", raising=False)
    assert paper.documents["main"].text_path() is None  # variable unset: no copy here, no warning
    assert paper.documents["none"].absent_citations("Table 9") is None
    assert paper.documents["rel"].absent_citations("Tables 1 and 3; Figure 2") == ["Table 3"]
    monkeypatch.setenv("TEXTS", str(tmp_path / "texts"))
    assert paper.documents["main"].absent_citations("Table 1, Figure 2, Figure 4") == ["Figure 4"]
    assert paper.check_source("main") is None
    assert "did you mean 'main'" in paper.check_source("mian")


def test_validate_warns_about_a_citation_the_text_lacks(tmp_path, capsys):
    from claimbench import cli

    claims = tmp_path / "c"
    (claims / "_bases").mkdir(parents=True)
    (claims / "_bases" / "tiny.yaml").write_text(TINY_BASE)
    (claims / "paper.txt").write_text("Table 1. Results.\n")
    (claims / "paper.yaml").write_text(TINY_PAPER.replace("{name: the conference paper}",
                                                     "{name: the conference paper, text: paper.txt}"))
    (claims / "tiny.yaml").write_text(TINY_CLAIM.replace("where: Table 1", "where: Table 1; Figure 3"))
    assert cli.main(["validate", "--claims-dir", str(claims)]) == 0
    err = capsys.readouterr().err
    assert "tiny.yaml: source.where: no caption of Figure 3 in the text of fixture2019" in err
    assert "Table 1" not in err


# --- the index's one-line summary of a claim ---------------------------------------------------


def observed(mean: float, paper=None) -> dict:
    return {"mean": mean, "std": 1.0, "n": 3, "values": [mean - 1, mean, mean + 1], "paper": paper}


def test_index_summary_shows_what_the_deciding_check_is_about():
    from claimbench.check.verdict import CheckResult, Verdict
    from claimbench.report.markdown import headline

    axis = CheckResult("monotonic", "reproduced", "lam rises", "", observed={
        "lam@0 sparsity_gamma": observed(0.0, 0), "lam@0.001 sparsity_gamma": observed(30.0, 50),
        "lam@0.01 sparsity_gamma": observed(80.0, 83)})
    compare = CheckResult("greater", "not reproduced", "l2 > wd", "", observed={
        "adam_l2 sparsity_gamma": observed(40.0, 70), "adam_wd sparsity_gamma": observed(45.0, 40)})
    # An axis claim: its two ends, not its first point.
    assert headline(Verdict.from_checks("c", "smoke", [axis])) == (
        "0 → 83.0", "lam@0 sparsity_gamma: 0 ± 1.0 (n=3) → lam@0.01 sparsity_gamma: 80.0 ± 1.0 (n=3)")
    # The check that decided a failed verdict, both sides of its comparison.
    assert headline(Verdict.from_checks("c", "smoke", [axis, compare])) == (
        "70.0 vs 40.0", "adam_l2 sparsity_gamma: 40.0 ± 1.0 (n=3) vs adam_wd sparsity_gamma: 45.0 ± 1.0 (n=3)")
    single = CheckResult("distribution", "reproduced", "", "", observed={"run test_error": observed(12.0)})
    assert headline(Verdict.from_checks("c", "smoke", [single])) == ("-", "run test_error: 12.0 ± 1.0 (n=3)")
