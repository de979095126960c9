"""A failed run is a result: a researcher's broken plug-in fails its run, not the command.

One claims folder of tiny plug-ins (a 4x4 one-channel dataset of 64 images, a one-conv network,
four steps per run), four of them broken the ways a researcher's first attempts break: a trainer
that reports a NaN metric, one that returns weights of the wrong shape, one that raises mid-run,
and a network without BatchNorm. One ``claimbench verify`` (two worker processes, so the failures
cross a process boundary as they do for a user's ``-j 2``) must exit 1 without a traceback, say
per broken run one line naming the plug-in and the reason, store no entry for those runs (a
failure record instead), still decide the good claim, and write a report whose pages say why each
broken claim is an error. In-process tests pin the judge (``claimbench.run_failures.plugin_failure``): a
plug-in's fault is named, with the line of its own code; anything else is claimbench's and keeps its
traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import KIT_BASE, KIT_CASES, write_kit

BIN = Path(sys.executable).parent


def claimbench(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS", "CLAIMBENCH_PLUGINS")}
    # The broken plug-ins are the user's own code: allowed to run, as a researcher allows their own folder.
    env.update(PYTHONPATH=str(root), CLAIMBENCH_CACHE=str(root / "cache"), CLAIMBENCH_ALLOW_PLUGINS="1")
    return subprocess.run([str(BIN / "claimbench"), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    write_kit(root)
    result = claimbench(root, "verify", "--tier", "smoke", "--claims-dir", "claims", "--out", str(root / "report"),
                   "--device", "cpu", "-j", "2")
    return root, result


@pytest.mark.slow
def test_verify_fails_without_a_traceback_and_decides_the_good_claim(verified):
    root, result = verified
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out, out
    assert "trained 2, cached 0, failed 4" in result.stdout, out
    assert "4 failed, 2 passed" in result.stdout, out
    assert "wrote " in result.stdout and "4 error, 2 holds" in result.stdout, out
    # A failed run's steps never count as done.
    assert "8/8 run-steps (100%)" in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(KIT_CASES))
def test_each_broken_plugin_is_one_line_naming_it_and_the_reason(verified, case):
    root, result = verified
    reason = KIT_CASES[case][2]
    lines = [line for line in result.stderr.splitlines() if reason in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: run ") and " failed: " in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(KIT_CASES))
def test_the_claim_page_shows_the_error_and_its_reason(verified, case):
    root, _ = verified
    page = (root / "report" / f"{case}-case.md").read_text()
    assert "**Verdict (smoke tier): ⚠️ error: run " in page, page
    assert KIT_CASES[case][2] in page, page
    assert KIT_CASES[case][2] in (root / "report" / "index.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| r "))
    assert "| failed " in row and "missing" not in row, row


@pytest.mark.slow
def test_nothing_is_stored_for_a_failed_run_but_why_it_failed(verified):
    root, _ = verified
    cache = root / "cache"
    entries = [p for p in cache.glob("??/*") if (p / "manifest.json").is_file()]
    assert len(entries) == 2, entries  # the good runs' (width 4 and 8)
    records = [json.loads(p.read_text()) for p in (cache / "failed").glob("*.json")]
    assert sorted(next(c for c, (_, _, reason) in KIT_CASES.items() if reason in r["reason"]) for r in records) \
        == sorted(KIT_CASES)
    assert {r["key"] for r in records}.isdisjoint(p.name for p in entries)


@pytest.mark.slow
def test_report_alone_reads_the_failures_back(verified):
    """`claimbench report` trains nothing: the reasons come from the failure records."""
    root, _ = verified
    result = claimbench(root, "report", "--tier", "smoke", "--claims-dir", "claims", "--out", str(root / "again"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 error, 2 holds" in result.stdout
    for case, (_, _, reason) in KIT_CASES.items():
        assert reason in (root / "again" / f"{case}-case.md").read_text()


@pytest.mark.slow
def test_report_reads_what_is_stored_where_the_plugins_are_not_installed(verified):
    """The plug-ins' module made unimportable (not on PYTHONPATH): `claimbench report` still renders
    every page, the same pages as where they are installed, and says which plug-ins trained the
    runs and that they were read as stored."""
    root, _ = verified
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS", "CLAIMBENCH_PLUGINS",
                                                           "PYTHONPATH")}
    env["CLAIMBENCH_CACHE"] = str(root / "cache")
    result = subprocess.run([str(BIN / "claimbench"), "report", "--tier", "smoke", "--claims-dir", "claims", "--out",
                             str(root / "elsewhere")], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 error, 2 holds" in result.stdout
    assert "note: not installed here, read from the runs they trained: " in result.stderr
    here = sorted(p.name for p in (root / "report").glob("*.md"))
    assert sorted(p.name for p in (root / "elsewhere").glob("*.md")) == here
    note = " They are not installed where this report was written: their runs were read as stored."
    for name in here:
        page = (root / "elsewhere" / name).read_text()
        assert page.replace(note, "") == (root / "report" / name).read_text(), name
    good = (root / "elsewhere" / "good-case.md").read_text()
    assert ("Plug-ins that trained these runs: dataset `tinyset` (brokenkit:tinyset, brokenkit unversioned); "
            "model `tinynet` (brokenkit:tinynet, brokenkit unversioned)." + note) in good


@pytest.mark.slow
def test_no_page_speaks_of_a_paper_where_the_folder_gives_no_paper_numbers(verified):
    root, _ = verified
    pages = sorted((root / "report").glob("*.md"))
    assert len(pages) == 8
    for page in pages:
        assert "paper" not in page.read_text().lower(), page.name


@pytest.mark.slow
def test_labels_carry_the_settings_runs_differ_in_and_tables_what_checks_read(verified):
    root, _ = verified
    page = (root / "report" / "wider-case.md").read_text()
    assert "| narrow | tinynet tinyset adam l2=0.0001 b16 model.params.width=4 |" in page, page
    assert "| wide   | tinynet tinyset adam l2=0.0001 b16 model.params.width=8 |" in page, page
    runs = (root / "report" / "runs.md").read_text()
    assert "tinynet tinyset adam l2=0.0001 b16 s0 model.params.width=4" in runs
    assert "tinynet tinyset adam l2=0.0001 b16 s0 model.params.width=8" in runs
    # A trainer's own metric that a check reads is a column of its claim's run table.
    header = next(line for line in (root / "report" / "nan-case.md").read_text().splitlines()
                  if line.startswith("| run"))
    assert [c.strip() for c in header.strip("|").split("|")][-1] == "score"


# --- in process: whose fault is it ---------------------------------------------------------------


@pytest.fixture
def kit(monkeypatch, tmp_path):
    from claimbench import plugins

    write_kit(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", ",".join(f"brokenkit:{n}" for n in (
        "tinyset", "tinynet", "nobn", "nantrainer", "shapetrainer", "raisetrainer")))
    sys.modules.pop("brokenkit", None)
    plugins._resolve_with.cache_clear()
    yield tmp_path
    sys.modules.pop("brokenkit", None)
    plugins._resolve_with.cache_clear()


def kit_config(**sets):
    from claimbench.runconfig import run_config_from_dict

    return run_config_from_dict({"model": {"arch": sets.get("arch", "tinynet")},
                                 "data": {"dataset": "tinyset", "flip": False},
                                 "train": {"batch_size": 16, "unit": "steps", "phases": [4],
                                           **({"trainer": sets["trainer"]} if "trainer" in sets else {})}})


def test_a_plugins_fault_is_named_and_a_bug_in_claimbench_is_not(kit):
    from claimbench.group import train_group
    from claimbench.run_failures import RunFailed

    with pytest.raises(RunFailed) as e:
        train_group([kit_config(trainer="raisetrainer")], None, "cpu", None, 1)
    assert "trainer raisetrainer" in str(e.value) and "(at brokenkit.py:" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(RunFailed, match="model plug-in nobn .* has no BatchNorm2d layer"):
        train_group([kit_config(arch="nobn")], None, "cpu", None, 1)
    assert train_group([kit_config()], None, "cpu", None, 1)[0].metrics["steps"] == 4


def test_an_error_outside_the_plugins_code_is_claimbenchs_and_keeps_its_traceback(kit, monkeypatch):
    """The mutant this guard exists for: an exception raised by claimbench's own code during a plug-in
    run must not be dressed up as the plug-in's fault."""
    import claimbench.group
    from claimbench.group import train_group
    from claimbench.run_failures import plugin_failure

    def broken(*args, **kwargs):
        raise ValueError("a bug in claimbench")

    monkeypatch.setattr(claimbench.group, "measure_model", broken)
    with pytest.raises(ValueError, match="a bug in claimbench"):
        train_group([kit_config()], None, "cpu", None, 1)
    assert plugin_failure(ValueError("a bug in claimbench"), [kit_config()]) is None
    # The same error raised by a plug-in's own code is the plug-in's, at its line.
    import brokenkit

    try:
        brokenkit.build(1, 4, None)  # num_classes None: nn.Linear raises inside the plug-in's build
    except TypeError as error:
        reason = plugin_failure(error, [kit_config()])
    assert reason is not None and reason.startswith("model plug-in tinynet (brokenkit:tinynet): TypeError: ")
    assert "(at brokenkit.py:" in reason and "in build)" in reason
    # claimbench's own error raised while it handled a plug-in's exception is still claimbench's.
    try:
        try:
            brokenkit.build(1, 4, None)
        except TypeError:
            raise ValueError("a bug in claimbench's handler")  # noqa: B904  (exactly the case: no `from`)
    except ValueError as error:
        assert plugin_failure(error, [kit_config()]) is None


def test_a_failure_record_is_read_back_and_forgotten(tmp_path):
    from claimbench.cache.failures import failure_of, forget_failure, record_failure

    key = "ab" * 32
    assert failure_of(tmp_path, key) is None
    record_failure(tmp_path, key, "tinynet tinyset b16 s0", "trainer x: metric score is nan")
    got = failure_of(tmp_path, key)
    assert (got.key, got.run, got.reason) == (key, "tinynet tinyset b16 s0", "trainer x: metric score is nan")
    assert failure_of(tmp_path, "cd" * 32) is None
    # A record under another key's name is not this key's.
    (tmp_path / "failed" / f"{'cd' * 32}.json").write_text((tmp_path / "failed" / f"{key}.json").read_text())
    assert failure_of(tmp_path, "cd" * 32) is None
    forget_failure(tmp_path, key)
    assert failure_of(tmp_path, key) is None


@pytest.mark.slow
def test_where_a_config_was_trained_by_two_versions_of_a_plugin_the_newest_is_read(tmp_path):
    """The plug-in's code changed and its run was trained again (a new key): read without the
    plug-in, the config finds both entries, reads the newer one and says so."""
    write_kit(tmp_path)
    first = claimbench(tmp_path, "train", "--tier", "smoke", "--claims-dir", "claims", "-k", "good", "--device", "cpu")
    assert first.returncode == 0, first.stdout + first.stderr
    kit = tmp_path / "brokenkit.py"
    kit.write_text(kit.read_text().replace("padding=1), nn.BatchNorm2d(width)", "padding=0), nn.BatchNorm2d(width)"))
    second = claimbench(tmp_path, "train", "--tier", "smoke", "--claims-dir", "claims", "-k", "good", "--device", "cpu")
    assert "trained 1, cached 0" in second.stdout, second.stdout + second.stderr
    entries = sorted(p for p in (tmp_path / "cache").glob("??/*") if (p / "manifest.json").is_file())
    assert len(entries) == 2
    newest = max(entries, key=lambda p: json.loads((p / "provenance.json").read_text())["finished_at"])
    kit.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTEST_ADDOPTS", "CLAIMBENCH_PLUGINS",
                                                           "PYTHONPATH")}
    env["CLAIMBENCH_CACHE"] = str(tmp_path / "cache")
    # The other claims name plug-ins none of these runs used: only this claim's file is read.
    result = subprocess.run([str(BIN / "claimbench"), "report", "claims/good.yaml", "--tier", "smoke", "--claims-dir",
                             "claims", "--out", str(tmp_path / "report")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: 1 configs were trained by more than one version of a plug-in's code" in result.stderr
    assert f"| {newest.name[:12]} |" in (tmp_path / "report" / "runs.md").read_text()


def test_a_label_carries_the_settings_it_does_not_show_and_only_those():
    """Derived by changing a setting and seeing whether the label changes, in any run's context:
    a slope shows on a leaky network's label, so it is not repeated; nor is a learning rate other
    than the optimizer's base rate, which the label shows; the base rate set explicitly is not."""
    from claimbench.runconfig import run_config_from_dict
    from claimbench.report.runs_page import unshown_settings

    base = {"model": {"width": 0.125}, "data": {"dataset": "digits"}}
    relu = run_config_from_dict(base)
    leaky = run_config_from_dict({**base, "model": {"width": 0.125, "activation": "leaky_relu", "negative_slope": 0.1}})
    fast = run_config_from_dict({**base, "optim": {"lr": 0.01}})
    reseeded = run_config_from_dict({**base, "train": {"seed": 3}})
    assert unshown_settings([relu, leaky]) == ["", ""]
    assert unshown_settings([relu, fast]) == ["", ""]
    base_rate = run_config_from_dict({**base, "optim": {"lr": 0.001}})  # Adam's base rate, written out
    assert unshown_settings([relu, base_rate]) == [" optim.lr=None", " optim.lr=0.001"]
    assert unshown_settings([relu, reseeded]) == ["", ""]  # seeds are averaged over, never labelled
    assert unshown_settings([relu]) == [""]


def test_a_metric_beyond_float_range_or_a_history_too_deep_is_a_refusal_not_a_crash():
    """Two results a trainer can return that once escaped as OverflowError and RecursionError (a
    bug of claimbench's, with its traceback) instead of failing the run with a reason."""
    from claimbench.plugins import TrainerResult
    from claimbench.train.trainer import result_problems

    deep: object = 1.0
    for _ in range(100_000):
        deep = [deep]
    problems = result_problems(TrainerResult({}, {"acc": 10**400}, {"loss": deep}), ("acc",))
    assert problems == ["metric acc is an integer beyond float range: a metric must be finite (a diverged run is not "
                        "recorded)", "history is nested too deep to be stored as JSON"]
    assert result_problems(TrainerResult({}, {"acc": 0.5}, {"loss": [[1.0]]}), ("acc",)) == []


@pytest.mark.parametrize("trainer, reason", [
    ("nantrainer", KIT_CASES["nan"][2]),
    ("raisetrainer", KIT_CASES["raise"][2]),
], ids=["nan", "raise"])
def test_run_with_a_refused_trainer_is_one_line_and_stores_nothing(kit, capsys, trainer, reason):
    """`claimbench run` of one config whose trainer is refused: the run fails, not claimbench. One
    line names the run (its key and label), the plug-in and the reason; no traceback; exit 1; no
    entry in the cache, only the failure record the reports read."""
    from claimbench.cache import RunStore, run_key
    from claimbench.cache.failures import failure_of
    from claimbench.cli import main
    from claimbench.spec.runfile import load_run_config

    (kit / "run.yaml").write_text(KIT_BASE.replace("snapshots: 1}", f"snapshots: 1, trainer: {trainer}}}") + "\n")
    config = load_run_config(kit / "run.yaml", [])
    assert config.train.trainer == trainer
    cache = kit / "cache"
    rc = main(["run", str(kit / "run.yaml"), "--cache-dir", str(cache), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1, captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    key = run_key(config)
    assert lines == [line for line in lines if reason in line] and len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: run {key[:12]} failed: {config.summary()}: "), lines[0]
    assert captured.out == ""
    assert RunStore(cache).keys() == []
    assert reason in failure_of(cache, key).reason
