"""What a user gets from someone else: a claims folder, a project with its own cache, a folder
that claims to be a report. Nothing from elsewhere runs code, passes for trained here, or costs a
user's file unless the user said so.

The claims folder is the one-claim `tiny` folder that tests/test_outside.py runs too (TINY_CLAIM,
TINY_BASE and TINY_PAPER of tests/helpers.py: 10 steps of a width-0.125 BasicNet on digits). Commands run in process through ``claimbench.cli.main``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from claimbench.cli import main
from tests.helpers import REPO, TINY_BASE, TINY_CLAIM, TINY_PAPER

# A module that leaves a file behind when it is imported: the proof that code ran.
EVIL = """\
from pathlib import Path
Path({flag!r}).write_text("imported")
"""


def tiny_claims(folder: Path, check: str | None = None) -> Path:
    (folder / "_bases").mkdir(parents=True)
    (folder / "_bases" / "tiny.yaml").write_text(TINY_BASE)
    (folder / "paper.yaml").write_text(TINY_PAPER)
    claim = TINY_CLAIM if check is None else TINY_CLAIM.replace(
        "- {kind: distribution, a: {run: adam_l2, metric: test_error}, min: 0, max: 100}", check)
    (folder / "tiny.yaml").write_text(claim)
    return folder


# --- a claims folder's plug-ins and conftest ---------------------------------------------------------

PLUGIN_ENV = ("CLAIMBENCH_ALLOW_PLUGINS", "CLAIMBENCH_PLUGINS")


@pytest.fixture
def plugin_env_restored():
    """Fails the test whose teardown leaves the plug-in variables other than it found them.

    `--allow-plugins` and a folder's claimbench.yaml write os.environ directly (so that workers
    inherit them); a test that let them through would run every later in-process test of the
    pytest process with plug-ins allowed. Set up before monkeypatch, so it looks after monkeypatch
    has undone its changes."""
    before = {name: os.environ.get(name) for name in PLUGIN_ENV}
    yield
    after = {name: os.environ.get(name) for name in PLUGIN_ENV}
    for name, value in before.items():  # put them back first, so one failure does not spread
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    assert after == before, "a test left the plug-in environment changed for the tests after it"


def clear_env(monkeypatch, name: str) -> None:
    """Unset ``name`` for this test and have monkeypatch restore it afterwards, even when it was
    unset to begin with: delenv(raising=False) of an absent variable records nothing, so what the
    code under test writes to os.environ would outlive the test."""
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)


@pytest.fixture
def hostile_folder(plugin_env_restored, tmp_path, monkeypatch):
    """A claims folder whose claimbench.yaml names a module it ships, importable (the README's
    `PYTHONPATH=.`), with a claim whose base needs the plug-in, and a conftest.py; each writes a
    flag file when it runs."""
    from claimbench import plugins

    claims = tiny_claims(tmp_path / "claims")
    flag = tmp_path / "imported.flag"
    (tmp_path / "evilmod.py").write_text(EVIL.format(flag=str(flag)))
    (claims / "conftest.py").write_text(EVIL.format(flag=str(tmp_path / "conftest.flag")))
    (claims / "claimbench.yaml").write_text("plugins: [evilmod:evilnet]\n")
    (claims / "_bases" / "evil.yaml").write_text(TINY_BASE.replace("arch: basicnet", "arch: evilnet"))
    (claims / "evil.yaml").write_text(TINY_CLAIM.replace("id: tiny-trains", "id: evil-trains")
                                      .replace("_bases/tiny.yaml", "_bases/evil.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in PLUGIN_ENV:
        clear_env(monkeypatch, name)
    monkeypatch.setenv("CLAIMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield claims, flag
    # The module and what was resolved through it belong to this test's folder only.
    sys.modules.pop("evilmod", None)
    plugins._resolve_with.cache_clear()


def test_reading_a_claims_folder_imports_nothing_it_names(hostile_folder, capsys, caplog):
    claims, flag = hostile_folder
    assert main(["validate", "--claims-dir", str(claims)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "unknown architecture 'evilnet'" in out.err
    assert "names plug-ins (evilmod:evilnet): not imported" in caplog.text
    assert "--allow-plugins" in caplog.text
    assert main(["plan", "--claims-dir", str(claims), "-k", "tiny"]) in (0, 2)
    assert main(["report", "--claims-dir", str(claims), "-k", "tiny", "--out", "rep"]) in (0, 2)
    assert not flag.exists(), "a module named by the claims folder was imported without the user's consent"


def test_allow_plugins_imports_them(hostile_folder, capsys):
    claims, flag = hostile_folder
    main(["validate", "--claims-dir", str(claims), "--allow-plugins"])
    assert flag.exists()


@pytest.mark.slow
def test_verify_does_not_run_the_folders_conftest_or_ini(hostile_folder, capsys):
    claims, flag = hostile_folder
    (claims / "evil.yaml").unlink()
    (claims / "claimbench.yaml").unlink()
    # An ini file above the claims that would add an option pytest fails on, were it read.
    (claims.parent / "pytest.ini").write_text("[pytest]\nrequired_plugins = no-such-plugin-anywhere\n")
    rc = main(["verify", "--claims-dir", str(claims), "--out", "rep", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.out[-2000:] + out.err[-2000:]
    assert not (claims.parent / "conftest.flag").exists()


# --- report folders ---------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch):
    """proj/ with claims, a cache and the user's notes; an empty `.claimbench-report` planted in it."""
    proj = tmp_path / "proj"
    tiny_claims(proj / "claims")
    (proj / "cache").mkdir()
    (proj / "NOTES.md").write_text("notes\n")
    (proj / ".claimbench-report").write_text("")
    monkeypatch.delenv("CLAIMBENCH_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return proj


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("command", [["report"], ["verify", "--device", "cpu"], ["verify", "--dry-run", "--device", "cpu"]],
                         ids=["report", "verify", "verify-dry-run"])
@pytest.mark.parametrize("out", ["proj", "proj/claims", "proj/cache", ".", "home"])
def test_a_planted_marker_never_costs_a_file(project, capsys, out, command, monkeypatch):
    # verify writes its report into --out too: it checks the folder before it validates or trains.
    if out == "home":
        monkeypatch.setenv("HOME", str(project))
        (project / "claims" / ".claimbench-report").write_text("")
        out = str(project)
    before = _files(project)
    rc = main([*command, "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", out])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _files(project) == before


def test_the_claims_folder_the_cache_and_the_current_folder_are_refused_outright(project, capsys, monkeypatch):
    # Even without anything else in them: a marker that lists everything proves nothing here.
    for out, what in [("proj/claims", "the claims folder"), ("proj/cache", "the run cache"), (".", "the current folder")]:
        rc = main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", out])
        err = capsys.readouterr().err
        assert rc == 2 and what in err, err


def test_a_marker_copied_into_a_users_folder_does_not_make_it_claimbenchs(project, tmp_path, capsys):
    (project / ".claimbench-report").unlink()
    (project / "NOTES.md").unlink()
    rep = tmp_path / "rep"
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(rep)]) == 0
    mine = tmp_path / "mynotes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    (mine / ".claimbench-report").write_text((rep / ".claimbench-report").read_text())
    capsys.readouterr()
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(mine)]) == 2
    assert "thesis.tex" in capsys.readouterr().err and (mine / "thesis.tex").read_text() == "months of work\n"
    # claimbench's own folder is still replaced.
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(rep)]) == 0


# --- caches this user did not fill, and numbers not measured here -----------------------------------

ZERO = "- {kind: value, a: adam_l2, metric: test_error, expected: 0, tolerance: 1}"


def _recompute_manifest(entry: Path) -> None:
    """What a forger does after editing a file: new checksums and sizes in the manifest (the
    trained-here mark, if any, is kept as it was: a forger cannot make a new one)."""
    import hashlib

    manifest = json.loads((entry / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (entry / name).read_bytes()
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
        manifest["sizes"][name] = len(data)
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory) -> Path:
    """A cache holding the tiny claim's one run, trained here (about 10 s)."""
    root = tmp_path_factory.mktemp("trained")
    claims = tiny_claims(root / "claims")
    cache = root / "cache"
    assert main(["train", "--claims-dir", str(claims), "--cache-dir", str(cache), "--device", "cpu"]) == 0
    return cache


@pytest.fixture
def shipped_project(tmp_path, trained_cache, monkeypatch):
    """proj/ as someone else ships it: the `zero` claim (test error 0, which the real run does not
    reach) and .cache/runs holding its run with test_error edited to 0, manifest recomputed."""
    proj = tmp_path / "proj"
    tiny_claims(proj / "claims", check=ZERO)
    import shutil

    shutil.copytree(trained_cache, proj / ".cache" / "runs", ignore=shutil.ignore_patterns("locks"))
    (entry,) = [p for p in (proj / ".cache" / "runs").glob("??/*") if p.is_dir()]
    metrics = json.loads((entry / "metrics.json").read_text())
    metrics["test_error"] = 0.0
    (entry / "metrics.json").write_text(json.dumps(metrics))
    _recompute_manifest(entry)
    for name in ("CLAIMBENCH_CACHE", *PLUGIN_ENV):
        clear_env(monkeypatch, name)
    monkeypatch.chdir(proj)
    return proj, entry.name


@pytest.mark.slow
def test_a_shipped_cache_cannot_reproduce_a_claim_unmarked(shipped_project, capsys):
    proj, key = shipped_project
    assert main(["report", "--claims-dir", "claims", "--out", "rep"]) == 0
    out = capsys.readouterr().out
    assert "1 holds (1 of them on unverified runs" in out
    index = (proj / "rep" / "index.md").read_text()
    page = (proj / "rep" / "tiny-trains.md").read_text()
    assert "⚠️ ✅ holds (on 1 unverified run" in index
    assert "**Verdict (smoke tier): ⚠️ ✅ holds (on 1 unverified run" in page
    assert "- ⚠️ **holds** —" in page and "These checks read runs whose numbers were not measured here" in page
    assert "not trained here, unverified" in (proj / "rep" / "runs.md").read_text()
    # cache ls never says "here" for it.
    assert main(["cache", "ls", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["origin"] == "found" and listed["verified"] is False
    assert main(["cache", "ls"]) == 0
    assert "not here, unverified" in capsys.readouterr().out
    assert main(["show", key[:12], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["origin"] == "found" and shown["verified"] is False
    # verify does not succeed on it, and says why; the user may accept it.
    assert main(["verify", "--claims-dir", "claims", "--out", "rep", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "1 claim(s) holding only on unverified runs" in err and "Traceback" not in err
    assert main(["verify", "--claims-dir", "claims", "--out", "rep", "--device", "cpu", "--allow-unverified"]) == 0
    capsys.readouterr()
    # `claimbench cache verify` re-measures it from its weights and finds the edit.
    assert main(["cache", "verify", "--device", "cpu"]) == 1
    found = capsys.readouterr()
    assert "metrics.json does not match its weights (test_error: stored 0.0" in found.out + found.err


@pytest.mark.slow
def test_a_cache_trained_by_this_user_is_here_and_one_of_another_user_is_not(trained_cache, tmp_path, monkeypatch,
                                                                             capsys):
    import shutil

    shutil.copytree(trained_cache, tmp_path / "copy")
    assert main(["cache", "ls", "--json", "--cache-dir", str(tmp_path / "copy")]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["origin"] == "local" and listed["verified"] is True
    # Another user (another key): the same untouched entry is not theirs.
    monkeypatch.setenv("CLAIMBENCH_TRAINED_HERE_KEY", str(tmp_path / "other.key"))
    assert main(["cache", "ls", "--json", "--cache-dir", str(tmp_path / "copy")]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["origin"] == "found" and listed["verified"] is False
    # Re-measured from its weights by `claimbench cache verify`, it is confirmed (an import, verified).
    assert main(["cache", "verify", "--device", "cpu", "--cache-dir", str(tmp_path / "copy")]) == 0
    assert "re-measured from its weights and confirmed" in capsys.readouterr().out
    assert main(["cache", "ls", "--json", "--cache-dir", str(tmp_path / "copy")]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["origin"] == "imported" and listed["verified"] is True


@pytest.mark.slow
def test_a_trainers_own_metrics_in_an_archive_are_never_confirmed(tmp_path, capsys):
    from claimbench.cache import RunStore
    from tests.helpers import archive_of, config_from, forged, import_cli
    from claimbench.group import run_and_measure

    record = run_and_measure(config_from(tmp_path / "run.yaml"), "cpu")
    # The archive claims a number the weights cannot give, listed as a trainer's own.
    record.provenance = {**record.provenance, "trainer": {"name": "fit", "metrics": ["acc"]}}
    key, files = forged(record, acc=99.5)
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {key: files}), tmp_path / "cache", capsys)
    assert rc == 0 and "Traceback" not in err
    assert "0 re-measured from their weights and confirmed" in out
    assert "trainer's own metrics (acc) cannot be re-measured" in out
    assert RunStore(tmp_path / "cache").get(key).verified is False


# --- the gpu-check record: data in the cache root, checked for shape on every read ------------------

def _kind(**off):
    return {"dataset": "digits", "arch": "basicnet", "precision": "fp32", "switched_off": off}


@pytest.mark.parametrize("record", [
    "{not json",
    {"MACHINE": {"kinds": {"k": {**_kind(), "optimizers": "adam"}}}},
    {"MACHINE": {"complete": True}},
    {"MACHINE": {"complete": True, "kinds": {"k": _kind(bogus="why")}}},
    {"MACHINE": {"complete": True, "kinds": {"k": {**_kind(), "switched_off": ["kernels"]}}}},
    {"MACHINE": {"complete": True, "kinds": {"k": {"switched_off": {}}}}},
    {"MACHINE": {"complete": True, "kinds": {"k": _kind(resume="")}}},
    ["a list"],
])
def test_a_malformed_gpu_check_record_is_ignored_with_one_line(record, tmp_path, caplog):
    from claimbench.gpu_check import RECORD_FILE, GroupKind, MachineKey, SwitchedOff, read_record, split_by_record

    machine = MachineKey.here("cpu").id
    text = record if isinstance(record, str) else json.dumps(record).replace("MACHINE", machine)
    (tmp_path / RECORD_FILE).write_text(text)
    assert read_record(tmp_path) == {}
    kind = GroupKind("digits", "basicnet", ("adam",), False, True)
    # Never "already checked" on a record that says nothing.
    assert split_by_record([kind], tmp_path, "cpu") == ([], [kind.id])
    assert SwitchedOff.load(tmp_path, "cpu").kinds == {}
    assert "ignored, not a gpu-check record claimbench wrote" in caplog.text


def _marked(entry: dict) -> dict:
    """A machine's findings as this user's claimbench writes them: with its mark."""
    from claimbench.cache.trained_here import record_mark
    from claimbench.gpu_check.record import MARK

    return {**entry, MARK: record_mark(entry)}


def test_a_well_formed_gpu_check_record_is_read(tmp_path):
    from claimbench.gpu_check import RECORD_FILE, GroupKind, MachineKey, SwitchedOff, split_by_record

    machine = MachineKey.here("cpu").id
    # An older record's "complete" is left alone; it covers the kinds it names.
    (tmp_path / RECORD_FILE).write_text(json.dumps({machine: _marked({"complete": True, "kinds": {"k": _kind(kernels="off")}})}))
    kind = GroupKind("digits", "basicnet", ("adam",), False, True)
    assert split_by_record([kind], tmp_path, "cpu") == ([], [kind.id])
    (tmp_path / RECORD_FILE).write_text(json.dumps({machine: _marked({"kinds": {"k": {**_kind(kernels="off"),
                                                                                      "optimizers": ["adam", "sgd"]}}})}))
    assert split_by_record([kind], tmp_path, "cpu") == ([kind.id], [])
    assert SwitchedOff.load(tmp_path, "cpu").kinds == {"k": {"kernels": "off"}}


# --- numbers beyond float range, and export to no file -----------------------------------------------

HUGE = 10 ** 400


def test_an_integer_beyond_float_range_is_no_number_anywhere():
    from claimbench.cache.entry import metrics_problem
    from claimbench.check.verdict import finite_number

    assert finite_number(HUGE) is False and finite_number(-HUGE) is False and finite_number(3) is True
    assert "test_error is int" in metrics_problem({"test_error": HUGE})
    assert "layer_sparsity_gamma" in metrics_problem({"layer_sparsity_gamma": [1.0, HUGE]})
    assert metrics_problem({"test_error": 5, "steps": 10}) is None


def test_an_archive_entry_holding_an_integer_beyond_float_range_is_refused_and_no_read_crashes(tmp_path, capsys,
                                                                                                caplog):
    """A weightless archive entry whose test_error is 10**400: once it imported as unverified and
    then `report` and `show` ended in an OverflowError traceback."""
    from claimbench.cache import RunRecord, RunStore
    from claimbench.runconfig import run_config_from_dict
    from tests.helpers import archive_of, forged, import_cli

    claims = tiny_claims(tmp_path / "claims")
    cache = tmp_path / "cache"
    # The tiny claim's own run (its key, from the plan), so that report and show look it up.
    assert main(["plan", "--claims-dir", str(claims), "--cache-dir", str(cache), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    record = RunRecord(run_config_from_dict(run["config"]), {"test_error": HUGE, "steps": 10, "diverged_at": None},
                       {}, {})
    key, files = forged(record, weights=False)
    assert key == run["key"]
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {key: files}), cache, capsys)
    assert rc == 1 and "Traceback" not in err, err
    assert f"rejected {key}: metrics.json: test_error is int '1000" in err and "1 rejected" in out
    assert RunStore(cache).keys() == []
    # A cache that holds it anyway (copied in whole, as a shipped project's): every read calls it
    # damaged, none converts it.
    RunStore(cache).put_files(key, files)
    caplog.clear()
    rc = main(["report", "--claims-dir", str(claims), "--cache-dir", str(cache), "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert rc == 0 and "1 not run" in out and "Traceback" not in err, err
    assert "test_error is int" in caplog.text
    assert main(["show", key[:12], "--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("field", ["expected", "tolerance"])
def test_validate_refuses_an_integer_beyond_float_range_with_file_and_line(tmp_path, monkeypatch, capsys, field):
    check = ZERO.replace("expected: 0", f"expected: {HUGE}" if field == "expected" else "expected: 0") \
        .replace("tolerance: 1", f"tolerance: {HUGE}" if field == "tolerance" else "tolerance: 1")
    claims = tiny_claims(tmp_path / "claims", check=check)
    assert main(["validate", "--claims-dir", str(claims)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "tiny.yaml:" in err and "within float range" in err


@pytest.mark.parametrize("target", ["", "/", "."])
def test_cache_export_to_no_file_is_a_clear_error(target, tmp_path, capsys):
    assert main(["cache", "export", target, "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "name the archive file to write" in err and "Traceback" not in err


@pytest.mark.slow
def test_one_entry_needing_a_missing_plugin_does_not_stop_an_import(tmp_path, capsys):
    import hashlib

    from claimbench.cache import RunStore
    from claimbench.group import run_and_measure
    from tests.helpers import archive_of, config_from, forged, import_cli

    record = run_and_measure(config_from(tmp_path / "run.yaml"), "cpu")
    key, genuine = forged(record)
    plugin_key, plugin_files = forged(record)
    config = json.loads(plugin_files["config.json"])
    config["train"]["trainer"] = "nosuchtrainer"
    plugin_files["config.json"] = json.dumps(config).encode()
    manifest = json.loads(plugin_files["manifest.json"])
    manifest["files"]["config.json"] = hashlib.sha256(plugin_files["config.json"]).hexdigest()
    manifest["sizes"]["config.json"] = len(plugin_files["config.json"])
    fake_key = "0" * 64
    manifest["key"] = fake_key
    plugin_files["manifest.json"] = json.dumps(manifest).encode()
    archive = archive_of(tmp_path / "a.tar", {fake_key: plugin_files, key: genuine})
    rc, out, err = import_cli(archive, tmp_path / "cache", capsys)
    assert "Traceback" not in err and f"rejected {fake_key}: skipped, cannot be read here" in err, err
    assert rc == 1 and RunStore(tmp_path / "cache").keys() == [key]


@pytest.mark.slow
def test_an_entry_cache_verify_proved_false_is_never_served_again(shipped_project, capsys, caplog):
    proj, key = shipped_project
    assert main(["cache", "verify", "--device", "cpu"]) == 1
    capsys.readouterr()
    # Without --repair it stays where it is, but no read serves it: the claim is not run.
    assert main(["report", "--claims-dir", "claims", "--out", "rep"]) == 0
    assert "1 not run" in capsys.readouterr().out
    assert "its numbers were contradicted by its weights" in caplog.text
    assert main(["show", key[:12], "--json"]) == 1
    assert "is damaged" in capsys.readouterr().err
    # cache ls lists it with the reason in its problem column, plain and --json.
    assert main(["cache", "ls"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(key[:12]))
    assert "contradicted by its weights" in row, row
    assert main(["cache", "ls", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert "contradicted by its weights" in (listed["problem"] or "")
    # `claimbench run` of its config trains it anew (on a copy of the cache: the entry stays for
    # --repair below) and never prints the contradicted 0.
    shutil.copytree(proj / ".cache" / "runs", proj / "copy", ignore=shutil.ignore_patterns("locks"))
    entry = proj / ".cache" / "runs" / key[:2] / key
    (proj / "run.json").write_text((entry / "config.json").read_text())
    assert main(["run", "run.json", "--cache-dir", "copy", "--device", "cpu", "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert ran["key"] == key and ran["cached"] is False and ran["origin"] == "local"
    assert ran["metrics"]["test_error"] > 0
    assert main(["cache", "verify", "--repair", "--device", "cpu"]) == 1
    capsys.readouterr()
    assert main(["cache", "ls", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("depth", [32, 100_000])
def test_a_history_the_cache_could_not_read_back_is_refused_before_it_is_stored(depth, tmp_path):
    from claimbench.cache import RunRecord, RunStore, run_key
    from claimbench.cache.entry import CacheError
    from tests.helpers import config_from

    config = config_from(tmp_path / "run.yaml")
    deep: object = 1.0
    for _ in range(depth):
        deep = [deep]
    store = RunStore(tmp_path / "cache")
    record = RunRecord(config, {"test_error": 1.0, "steps": 25, "diverged_at": None}, {"loss": deep}, {})
    with pytest.raises(CacheError, match="deeper than 32 levels"):
        store.put(run_key(config), record)
    assert store.keys() == []
    # Within the limits the same record is stored and read back.
    store.put(run_key(config), RunRecord(config, record.metrics, {"loss": [[1.0]]}, {}))
    assert store.get(run_key(config)) is not None


BIG_HISTORY = """\
from claimbench.plugins import TrainerPlugin, TrainerResult


def train(run):
    return TrainerResult(state_dict=run.model.state_dict(), history={"loss": [0.5] * 2000})


big = TrainerPlugin(name="big", train=train)
"""


@pytest.mark.slow
def test_a_trainer_history_over_the_size_limit_is_refused_before_it_is_stored(tmp_path, monkeypatch, capsys):
    """Stored, a history over history.json's limit was judged damaged on every later read and
    trained again each time. The limit is lowered here so that a 12 kB history crosses it instead
    of a 64 MiB one."""
    from claimbench import plugins
    from claimbench.cache import RunStore, entry

    (tmp_path / "big_trainer.py").write_text(BIG_HISTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "big_trainer:big")
    monkeypatch.setitem(entry.SIZE_LIMITS, "history.json", 4096)
    sys.modules.pop("big_trainer", None)
    plugins._resolve_with.cache_clear()
    (tmp_path / "run.yaml").write_text("model: {width: 0.0625, pool_after: [1, 3]}\n"
                                       "train: {unit: steps, phases: [4], batch_size: 8, trainer: big}\n")
    cache = tmp_path / "cache"
    try:
        rc = main(["run", str(tmp_path / "run.yaml"), "--cache-dir", str(cache), "--device", "cpu"])
    finally:
        sys.modules.pop("big_trainer", None)
        plugins._resolve_with.cache_clear()
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "cannot be stored: its history.json has" in err and "more than the 4096" in err
    assert RunStore(cache).keys() == [] and not (cache / "corrupt").exists()


CHEAT = """\
import torch
from claimbench.plugins import TrainerPlugin, TrainerResult


def train(run):
    with torch.no_grad():
        predictions = run.model.eval()(run.data.test_x).argmax(1)
    run.data.test_y.copy_(predictions)  # in place: the labels now agree with the model
    return TrainerResult(state_dict=run.model.state_dict())


cheat = TrainerPlugin(name="cheat", train=train)
"""


@pytest.mark.slow
def test_a_trainer_writing_into_its_data_does_not_change_what_claimbench_measures(tmp_path, monkeypatch):
    import sys

    from claimbench import plugins
    from claimbench.runconfig import run_config_from_dict
    from claimbench.group import run_and_measure

    (tmp_path / "cheat_trainer.py").write_text(CHEAT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "cheat_trainer:cheat")
    sys.modules.pop("cheat_trainer", None)
    plugins._resolve_with.cache_clear()
    try:
        config = run_config_from_dict({"model": {"width": 0.0625, "pool_after": [1, 3]},
                                       "train": {"unit": "steps", "phases": [4], "batch_size": 8, "trainer": "cheat"}})
        record = run_and_measure(config, "cpu")
    finally:
        sys.modules.pop("cheat_trainer", None)
        plugins._resolve_with.cache_clear()
    assert record.metrics["test_error"] > 20  # an untrained network on the real labels, not 0


# A trainer returning finite weights whose forward pass gives NaN: {suffix} set to {value}.
HUGE_WEIGHTS = """\
from claimbench.plugins import TrainerPlugin, TrainerResult


def train(run):
    state = {{k: (v.clone().fill_({value}) if k.endswith("{suffix}") else v) for k, v in run.model.state_dict().items()}}
    return TrainerResult(state_dict=state)


huge = TrainerPlugin(name="huge", train=train)
"""


@pytest.mark.slow
@pytest.mark.parametrize("suffix, value", [("conv.weight", "3e38"),  # overflows to inf, then inf - inf
                                           ("running_var", "-1.0")])  # BatchNorm: sqrt of a negative variance
def test_finite_weights_that_compute_nan_are_a_diverged_run(suffix, value, tmp_path, monkeypatch):
    import sys

    from claimbench import plugins
    from claimbench.runconfig import run_config_from_dict
    from claimbench.group import run_and_measure

    (tmp_path / "huge_trainer.py").write_text(HUGE_WEIGHTS.format(suffix=suffix, value=value))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLAIMBENCH_PLUGINS", "huge_trainer:huge")
    sys.modules.pop("huge_trainer", None)
    plugins._resolve_with.cache_clear()
    try:
        config = run_config_from_dict({"model": {"width": 0.0625, "pool_after": [1, 3]},
                                       "train": {"unit": "steps", "phases": [4], "batch_size": 8, "trainer": "huge"}})
        record = run_and_measure(config, "cpu")
    finally:
        sys.modules.pop("huge_trainer", None)
        plugins._resolve_with.cache_clear()
    assert record.diverged and "test_error" not in record.metrics


def test_a_papers_text_is_read_only_inside_the_folder_or_where_the_user_points(tmp_path, monkeypatch, caplog):
    from claimbench.spec.paper import TEXT_LIMIT, load_paper

    folder, outside = tmp_path / "claims", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (outside / "main.txt").write_text("Table 1. Sparsity.\n")
    (folder / "inside.txt").write_text("Table 1. Sparsity.\n")
    (folder / "paper.yaml").write_text(
        "title: T\nauthors: [Ada Lovelace]\nvenue: V 2019\ndocuments:\n"
        f"  abs: {{name: a, text: {outside / 'main.txt'}}}\n  up: {{name: u, text: ../elsewhere/main.txt}}\n"
        "  home: {name: h, text: ~/.bashrc}\n  env: {name: e, text: $CLAIMBENCH_PAPERS/main.txt}\n"
        "  in: {name: i, text: inside.txt}\n")
    monkeypatch.setenv("CLAIMBENCH_PAPERS", str(outside))
    paper = load_paper(folder / "paper.yaml")
    for doc in ("abs", "up", "home"):
        assert paper.documents[doc].text_path() is None, doc
        assert paper.documents[doc].absent_citations("Table 1") is None
    assert "is outside the claims folder" in caplog.text
    assert paper.documents["env"].absent_citations("Table 1") == []
    assert paper.documents["in"].absent_citations("Table 1") == []
    # A huge copy is read no further than the limit: a caption past it is not seen.
    with open(folder / "inside.txt", "wb") as f:
        f.truncate(TEXT_LIMIT + 10)
        f.seek(TEXT_LIMIT + 10)
        f.write(b"\nTable 2. Late.\n")
    assert paper.documents["in"].absent_citations("Table 2") == ["Table 2"]


@pytest.mark.parametrize("override, field", [("train.snapshots=1000000000000", "train.snapshots"),
                                             (f"train.phases=[{HUGE}]", "train.phases")])
def test_run_lengths_beyond_any_real_run_are_refused_before_training(override, field, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(TINY_BASE)
    rc = main(["run", str(tmp_path / "run.yaml"), "--set", override, "--cache-dir", str(tmp_path / "c"),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and field in err and "Traceback" not in err, err


@pytest.mark.slow
def test_export_leaves_out_what_it_cannot_read_and_never_launders_a_found_entry(shipped_project, tmp_path, capsys):
    import hashlib
    import tarfile

    from claimbench.cache import RunStore

    proj, key = shipped_project
    store = RunStore(proj / ".cache" / "runs")
    # An entry of a plug-in not installed here, beside the found one.
    entry = store.entry_dir(key)
    files = {p.name: p.read_bytes() for p in entry.iterdir()}
    config = json.loads(files["config.json"])
    config["train"]["trainer"] = "nosuchtrainer"
    files["config.json"] = json.dumps(config).encode()
    manifest = json.loads(files["manifest.json"])
    manifest.update(key="0" * 64)
    manifest["files"]["config.json"] = hashlib.sha256(files["config.json"]).hexdigest()
    manifest["sizes"]["config.json"] = len(files["config.json"])
    files["manifest.json"] = json.dumps(manifest).encode()
    store.put_files("0" * 64, files)
    out = tmp_path / "light.tar"
    assert main(["cache", "export", str(out), "--no-weights"]) == 1
    err = capsys.readouterr().err
    assert "not readable here" in err and "Traceback" not in err
    assert not (tmp_path / ".light.tar.partial").exists()
    with tarfile.open(out) as tar:
        names = tar.getnames()
        shipped = json.loads(tar.extractfile(f"entries/{key}/manifest.json").read())
    assert not any(n.startswith("entries/" + "0" * 64) for n in names)
    # Re-written without weights, the found entry does not come out carrying this user's mark.
    assert "trained_here" not in shipped and shipped["origin"]["verified"] is False


def test_the_key_file_kept_under_the_working_name_still_marks_entries_trained_before_the_rename(tmp_path,
                                                                                                monkeypatch):
    from claimbench.cache import trained_here

    monkeypatch.delenv(trained_here.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert trained_here.key_file() == tmp_path / "claimbench" / "trained-here.key"
    earlier = tmp_path / "repro" / "trained-here.key"
    earlier.parent.mkdir()
    earlier.write_text("k" * 64)
    assert trained_here.key_file() == earlier
    # Once the new file exists it is the one read.
    (tmp_path / "claimbench").mkdir()
    (tmp_path / "claimbench" / "trained-here.key").write_text("n" * 64)
    assert trained_here.key_file() == tmp_path / "claimbench" / "trained-here.key"


@pytest.mark.parametrize("value", [str(HUGE), ".inf"])
def test_a_table_number_beyond_float_range_is_refused_at_its_line(value, tmp_path, capsys):
    """A table's paper number is plotted against the runs (float(...)): 10**400 passed validate and
    crashed the report."""
    claims = tmp_path / "claims"
    shutil.copytree(REPO / "claims", claims)
    table = claims / "tables" / "table01.yaml"
    text = table.read_text()
    assert text.count("CIFAR10: [54, 54, 30.9]") == 1  # SGD L2 2e-03
    table.write_text(text.replace("CIFAR10: [54, 54, 30.9]", f"CIFAR10: [{value}, 54, 30.9]"))
    assert main(["validate", "--claims-dir", str(claims)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate(table.read_text().splitlines(), 1) if value in t)
    assert "Traceback" not in err and f"table01.yaml:{line}:" in err and "not a finite number a float can hold" in err
