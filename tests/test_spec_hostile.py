"""Hostile input to the claim, table and run-file parsers: each case is a clear problem naming
file, line and field, exit 2 from the CLI, and no traceback (nor a hang).

Each test writes a real claim (claims/beta_init.yaml, its full tier dropped so that it needs no
paper tables) into a claims folder under tmp_path, with the bad part put in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from claimbench import cli
from claimbench.spec import source as source_module
from claimbench.spec.claims import load_claim
from claimbench.spec.metrics import TOP5_MIN_CLASSES
from claimbench.spec.source import MAX_ALIAS_NODES, SpecError, load_source, safe_loader
from claimbench.spec.tables import load_table
from tests.helpers import REPO

CLAIMS = REPO / "claims"
CLAIM = "beta_init.yaml"
# Ten levels of nine aliases each: 9^10 (3.5 billion) strings in under 400 bytes.
BOMB_ANCHORS = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
# Aliases add 90, 819 and 7,380 nodes on the lines of l1..l3; the first alias of l4 passes 10,000.
OVER = "l4: &a4"


def bomb(indent: str) -> str:
    """A block mapping of the ten anchors, each line indented by ``indent``."""
    return "".join(f"\n{indent}l{i}: {a}" for i, a in enumerate(BOMB_ANCHORS))


def claims_dir(tmp_path: Path) -> Path:
    """A claims folder with the repository's paper description and bases."""
    folder = tmp_path / "claims"
    folder.mkdir(parents=True)
    shutil.copy(CLAIMS / "paper.yaml", folder)
    shutil.copytree(CLAIMS / "_bases", folder / "_bases")
    return folder


def claim_text() -> str:
    """beta_init.yaml without its full tier (which names cells of the paper's tables)."""
    text = (CLAIMS / CLAIM).read_text()
    start, end = text.index("  full:\n"), text.index("  smoke:\n")
    return text[:start] + text[end:]


def write_claim(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = claim_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    folder = claims_dir(tmp_path)
    if "scope:" in text:  # the claim's scope names the paper's tables
        shutil.copytree(CLAIMS / "tables", folder / "tables")
    path = folder / CLAIM
    path.write_text(text)
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def validate(path: Path, capsys) -> tuple[int, str]:
    """``claimbench validate <path>``: exit code and stderr, which never holds a traceback."""
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def problems_of(load, path: Path) -> list:
    with pytest.raises(SpecError) as info:
        load(path)
    return info.value.problems


def test_the_base_claim_is_valid(tmp_path, capsys):
    path = write_claim(tmp_path)
    load_claim(path)
    assert validate(path, capsys)[0] == 0


# --- alias bombs ---------------------------------------------------------------------------

NOTES = "notes: >\n"
DESCRIPTION = "b: baseline, tolerance: 8}"
PAPER = "baseline: {paper: {sparsity_gamma: 46}}"

# The CLI runs in a child process: without the limit the bomb hangs or fills memory, which must
# fail this test (killed after GUARD_S seconds, at most 2 GiB more memory), not hang the suite.
CHILD = """
import resource, sys, time, yaml
from claimbench import cli
from claimbench.spec import source
if sys.argv[2] == "run":
    import claimbench.runs  # torch: imported before the clock starts
source.YAML_LOADER = source.safe_loader(getattr(yaml, sys.argv[1]))
size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), size + (2 << 30)))
start = time.monotonic()
code = cli.main(sys.argv[2:])
print(f"\\nelapsed {time.monotonic() - start:.3f}")
sys.exit(code)
"""
GUARD_S = 60


def cli_child(loader: str, argv: list[str]) -> tuple[int, str]:
    """``claimbench <argv>`` in a child process with the ``loader`` class of PyYAML: exit code and
    output; it must finish within 5 seconds (importing aside) and print no traceback."""
    done = subprocess.run([sys.executable, "-c", CHILD, loader, *argv], capture_output=True, text=True,
                          timeout=GUARD_S, cwd=REPO)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert float(done.stdout.rsplit("elapsed ", 1)[1]) < 5, output
    return done.returncode, output


@pytest.fixture(params=["CSafeLoader", "SafeLoader"])
def loader(request, monkeypatch):
    """libyaml's loader (where PyYAML has it) and the pure-Python one, in this process and in
    the CLI's child process."""
    if not hasattr(yaml, request.param):
        pytest.skip("PyYAML built without libyaml")
    monkeypatch.setattr(source_module, "YAML_LOADER", safe_loader(getattr(yaml, request.param)))
    return request.param


@pytest.mark.parametrize("where", ["notes", "description", "paper", "base", "paper.yaml"])
def test_alias_bomb_is_an_error_within_seconds(tmp_path, loader, where):
    if where == "notes":
        path = write_claim(tmp_path, (NOTES, "notes:" + bomb("  ") + "\nold_notes: >\n"))
        bad, line = path, line_of(path, OVER)
    elif where == "description":
        path = write_claim(tmp_path, (DESCRIPTION, DESCRIPTION[:-1] + ", description: {" + ", ".join(
            f"l{i}: {a}" for i, a in enumerate(BOMB_ANCHORS)) + "}}"))
        bad, line = path, line_of(path, "description: {")
    elif where == "paper":
        path = write_claim(tmp_path, (PAPER, "baseline:\n        paper:\n          sparsity_gamma: 46" + bomb(" " * 10)))
        bad, line = path, line_of(path, OVER)
    elif where == "base":
        path = write_claim(tmp_path)
        base = path.parent / "_bases" / "smoke_digits.yaml"
        base.write_text(base.read_text() + "extra:" + bomb("  ") + "\n")
        bad, line = base, line_of(base, OVER)
    else:
        path = write_claim(tmp_path)
        bad = path.parent / "paper.yaml"
        bad.write_text(bad.read_text() + "extra:" + bomb("  ") + "\n")
        line = line_of(bad, OVER)
    code, output = cli_child(loader, ["validate", str(path)])
    assert code == 2
    assert f"{bad.name}:{line}: " in output and f"more than {MAX_ALIAS_NODES:,} nodes" in output
    if where == "base":  # and where the claim includes that file
        assert f"{path.name}:{line_of(path, 'base: {include:')}: tiers.smoke.base.include: included" in output


def test_alias_bomb_problem_names_its_field(tmp_path, loader):
    path = write_claim(tmp_path, (NOTES, "notes:" + bomb("  ") + "\nold_notes: >\n"))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, OVER), "notes.l4[0]") and "aliases" in p.message


@pytest.mark.slow
def test_a_run_file_and_a_set_value_with_an_alias_bomb(tmp_path, loader):
    run_file = tmp_path / "run.yaml"
    run_file.write_text("model: {width: 0.125}\nextra:" + bomb("  ") + "\n")
    cache = str(tmp_path / "cache")
    code, output = cli_child(loader, ["run", str(run_file), "--cache-dir", cache])
    assert code == 2 and f"run.yaml:{line_of(run_file, OVER)}: extra.l4[0]: aliases" in output
    flow = "{" + ", ".join(f"l{i}: {a}" for i, a in enumerate(BOMB_ANCHORS)) + "}"
    code, output = cli_child(loader, ["run", "--set", f"model.fc_hidden={flow}", "--cache-dir", cache])
    assert code == 2 and "--set: model.fc_hidden: aliases" in output


def test_small_aliases_still_read(tmp_path, loader):
    """Reuse within the budget is fine: the limit counts nodes, not aliases."""
    path = tmp_path / "ok.yaml"
    path.write_text("a: &x [1, 2, 3]\nb: [*x, *x, *x]\nc: 1e-4\nd: '1e-4'\n")
    assert load_source(path).data == {"a": [1, 2, 3], "b": [[1, 2, 3]] * 3, "c": 1e-4, "d": "1e-4"}


def test_recursive_alias_is_an_error(tmp_path, loader):
    path = tmp_path / "r.yaml"
    path.write_text("model: &m\n  width: 0.5\n  again: *m\n")
    (p,) = problems_of(load_source, path)
    assert (p.line, p.field) == (3, "model.again") and "recursive data" in p.message


# --- duplicate keys ------------------------------------------------------------------------


def test_a_key_written_twice_is_an_error(tmp_path, capsys, loader):
    path = write_claim(tmp_path, ("      beta_p1: {set: {model.bn_beta_init: 1.0}",
                                  "      beta_p1: {set: {model.bn_beta_init: 1.0, model.bn_beta_init: 2.0}"))
    line = line_of(path, "beta_p1: {set")
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line, "tiers.smoke.runs.beta_p1.set.model.bn_beta_init")
    assert "'model.bn_beta_init' is written twice" in p.message
    code, err = validate(path, capsys)
    assert code == 2 and f"{CLAIM}:{line}: tiers.smoke.runs.beta_p1.set.model.bn_beta_init: key" in err


def test_a_top_level_key_written_twice_names_both_lines(tmp_path):
    path = write_claim(tmp_path, ("finding: 15\n", "finding: 15\nfinding: 16\n"))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (3, "finding") and "also on line 2" in p.message


# --- strings are not numbers ---------------------------------------------------------------


@pytest.mark.parametrize("old, new, field", [
    ("baseline: {paper: {sparsity_gamma: 46}}", "baseline: {paper: {sparsity_gamma: '46'}}",
     "tiers.smoke.runs.baseline.paper.sparsity_gamma"),
    ("b: baseline, tolerance: 8}", "b: baseline, tolerance: '10.5'}", "tiers.smoke.checks[0].tolerance"),
    ("b: baseline, margin: 3}", 'b: baseline, margin: "3"}', "tiers.smoke.checks[1].margin"),
])
def test_a_number_written_as_text_is_an_error(tmp_path, capsys, old, new, field):
    path = write_claim(tmp_path, (old, new))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, new), field)
    assert "got the text" in p.message and "without quotes" in p.message
    code, err = validate(path, capsys)
    assert code == 2 and f"{CLAIM}:{p.line}: {field}: " in err


def test_a_number_without_a_dot_is_still_a_number(tmp_path):
    path = write_claim(tmp_path, ("b: baseline, tolerance: 8}", "b: baseline, tolerance: 8e0}"))
    check = load_claim(path).tier("smoke").checks[0]
    assert check.params.tolerance == 8.0


# --- includes ------------------------------------------------------------------------------

TABLE = """\
table: "1"
title: t
source: {paper: cvpr2019, where: "Table 1"}
base: {include: ../_bases/smoke_digits.yaml}
seeds: [0]
metrics: [sparsity_gamma, test_error]
cells: 1
rows:
  - {label: a, set: {optim.lam: 1.0e-3}, paper: [50, 10.5]}
"""


def write_table(tmp_path: Path, text: str) -> Path:
    """tables/table01.yaml of a claims folder (with a valid claim: `claimbench validate` reads the
    tables of a folder of claims)."""
    folder = write_claim(tmp_path).parent / "tables"
    folder.mkdir(exist_ok=True)
    for other in folder.glob("*.yaml"):
        other.unlink()  # only the table under test (the claim's scope then names no table of it)
    path = folder / "table01.yaml"
    path.write_text(text)
    return path


def test_a_table_include_may_not_leave_the_claims_folder(tmp_path, capsys):
    load_table(write_table(tmp_path / "ok", TABLE))
    secret = tmp_path / "secret.yaml"
    secret.write_text("password_of_root: hunter2\n")
    path = write_table(tmp_path, TABLE.replace("../_bases/smoke_digits.yaml", "../../secret.yaml"))
    (p,) = problems_of(load_table, path)
    assert (p.line, p.field) == (4, "base.include") and "outside the claims folder" in p.message
    assert cli.main(["validate", "--claims-dir", str(path.parent.parent)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "password_of_root" not in out + err
    assert "table01.yaml:4: base.include: '../../secret.yaml' is outside the claims folder" in err


def test_an_include_cycle_names_the_claim_line_and_the_cycle(tmp_path, capsys):
    path = write_claim(tmp_path)
    bases = path.parent / "_bases"
    (bases / "smoke_digits.yaml").write_text("include: loop.yaml\nmodel: {width: 0.375}\n")
    (bases / "loop.yaml").write_text("include: smoke_digits.yaml\n")
    line = line_of(path, "base: {include:")
    (p,) = problems_of(load_claim, path)
    assert (Path(p.file).name, p.line, p.field) == (CLAIM, line, "tiers.smoke.base.include")
    assert "loop.yaml:1: include: 'smoke_digits.yaml' includes itself" in p.message
    code, err = validate(path, capsys)
    assert code == 2 and f"{CLAIM}:{line}: tiers.smoke.base.include: included " in err


def test_a_missing_include_names_the_claim_line(tmp_path, capsys):
    path = write_claim(tmp_path, ("_bases/smoke_digits.yaml", "_bases/no_such_base.yaml"))
    line = line_of(path, "base: {include:")
    code, err = validate(path, capsys)
    assert code == 2
    assert f"{CLAIM}:{line}: tiers.smoke.base.include: included " in err
    assert "no_such_base.yaml: cannot read" in err


def test_a_problem_inside_an_included_file_names_both_files(tmp_path):
    path = write_claim(tmp_path)
    base = path.parent / "_bases" / "smoke_digits.yaml"
    base.write_text(base.read_text().replace("data: {dataset: digits}", "data: {dataset: digits}\ndata: {}"))
    (p,) = problems_of(load_claim, path)
    assert (Path(p.file).name, p.line, p.field) == (CLAIM, line_of(path, "base: {include:"), "tiers.smoke.base.include")
    assert f"smoke_digits.yaml:{line_of(base, 'data: {}')}: data: key 'data' is written twice" in p.message


# --- seeds ---------------------------------------------------------------------------------


def test_a_seed_beyond_what_torch_and_numpy_take_is_a_config_error(tmp_path, capsys):
    assert cli.main(["run", "--set", f"train.seed={2 ** 64}", "--cache-dir", str(tmp_path / "c")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "OverflowError" not in out + err
    assert f"--set: train.seed: a seed is 0 <= seed < 2**32" in err and str(2 ** 64) in err
    assert cli.main(["run", "--set", "data.data_seed=-1", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "data.data_seed: a seed is 0 <= seed < 2**32" in capsys.readouterr().err


def test_a_claim_seed_out_of_range_names_the_seed(tmp_path, capsys):
    path = write_claim(tmp_path, ("    seeds: [0, 1, 2]", f"    seeds: [0, {2 ** 64}, 2]"))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, "seeds: [0, 1"), "tiers.smoke.seeds[1]") and "2**32" in p.message
    assert validate(path, capsys)[0] == 2


# --- what a configuration cannot record ----------------------------------------------------


def test_top5_error_on_ten_classes_is_rejected(tmp_path, capsys):
    new = "b: baseline, tolerance: 8}\n      - {kind: greater, metric: test_error_top5, a: beta_p1, b: baseline}"
    path = write_claim(tmp_path, ("b: baseline, tolerance: 8}", new))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, "test_error_top5"), "tiers.smoke.checks[1].metric")
    assert "more than 100 classes; digits has 10" in p.message
    code, err = validate(path, capsys)
    assert code == 2 and f"{CLAIM}:{p.line}: tiers.smoke.checks[1].metric: test_error_top5" in err


def test_top5_paper_value_on_ten_classes_is_rejected(tmp_path):
    path = write_claim(tmp_path, ("{paper: {sparsity_gamma: 46}}", "{paper: {sparsity_gamma: 46, test_error_top5: 3}}"))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, "test_error_top5"), "tiers.smoke.runs.baseline.paper.test_error_top5")


def test_layers_beyond_the_network_are_rejected(tmp_path, capsys):
    new = ("b: baseline, tolerance: 8}\n      - {kind: greater, metric: layer_sparsity_gamma, "
           "a: {run: beta_p1, layers: [9, 42]}, b: {run: baseline, layers: [1]}}")
    path = write_claim(tmp_path, ("b: baseline, tolerance: 8}", new))
    (p,) = problems_of(load_claim, path)
    assert (p.line, p.field) == (line_of(path, "[9, 42]"), "tiers.smoke.checks[1].a.layers")
    assert "basicnet has 7 conv layers (C1..C7); no C9, C42" in p.message
    code, err = validate(path, capsys)
    assert code == 2 and f"{CLAIM}:{p.line}: tiers.smoke.checks[1].a.layers: basicnet has 7" in err


def test_layer_pattern_and_per_layer_paper_lists_beyond_the_network(tmp_path):
    new = ("b: baseline, tolerance: 8}\n      - {kind: layer_pattern, run: baseline, metric: layer_sparsity_gamma, "
           "layers: [7], than: [8]}")
    path = write_claim(tmp_path, ("b: baseline, tolerance: 8}", new),
                       ("{paper: {sparsity_gamma: 46}}", "{paper: {layer_sparsity_gamma: [1, 2, 3, 4, 5, 6, 7, 8, 9]}}"))
    problems = {p.field: p for p in problems_of(load_claim, path)}
    assert "no C8" in problems["tiers.smoke.checks[1].than"].message
    assert "9 per-layer numbers, but basicnet has 7" in problems["tiers.smoke.runs.baseline.paper.layer_sparsity_gamma"].message


def test_a_table_metric_the_cells_cannot_record(tmp_path, capsys):
    path = write_table(tmp_path, TABLE.replace("metrics: [sparsity_gamma, test_error]",
                                               'metrics: [test_error_top5, "layer_sparsity_gamma[8]"]'))
    problems = {p.field: p for p in problems_of(load_table, path)}
    assert problems["rows[0].paper[0]"].line == 9 and "more than 100 classes" in problems["rows[0].paper[0]"].message
    assert "no C8" in problems["rows[0].paper[1]"].message
    assert cli.main(["validate", "--claims-dir", str(path.parent.parent)]) == 2
    assert "table01.yaml:9: rows[0].paper[0]: test_error_top5" in capsys.readouterr().err


def test_top5_threshold_is_the_measurements():
    """The schema's class threshold for top-5 errors is the one measurement uses."""
    from claimbench.measure import metrics as measured

    assert measured.TOP5_MIN_CLASSES == TOP5_MIN_CLASSES
