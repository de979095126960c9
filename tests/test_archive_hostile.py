"""`claimbench cache import` against archives written to deceive or exhaust it, and the cache commands
against folders they cannot read or that a killed writer left behind. An archive must prove its
numbers (re-measured from its weights) or be labelled as unproven; it never replaces an entry,
never makes the importer read a member whole before checking it, and every refusal is a message,
never a traceback."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from claimbench.cache import RunRecord, RunStore, run_key
from claimbench.cache.archive import ARCHIVE_MANIFEST, import_archive, verify_store
from claimbench.cache.entry import entry_files, with_manifest
from claimbench.cli import main
from claimbench.data.catalog import DatasetError
from claimbench.group import run_and_measure
from claimbench.runs import remeasure
from tests.helpers import REPO, archive_of, config_from, forged, import_cli
from tests.other_user import AS_ROOT, as_other_user


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunRecord:
    """One real (25-step) training on the embedded digits: weights and the numbers they give."""
    return run_and_measure(config_from(tmp_path_factory.mktemp("cfg") / "run.yaml"), "cpu")


@pytest.mark.slow
def test_genuine_numbers_are_confirmed_and_invented_ones_rejected(trained, tmp_path, capsys):
    key, genuine = forged(trained)
    rc, out, err = import_cli(archive_of(tmp_path / "genuine.tar", {key: genuine}), tmp_path / "a", capsys)
    assert rc == 0 and "1 re-measured from their weights and confirmed" in out, out + err
    record = RunStore(tmp_path / "a").get(key)
    assert record.origin == "imported" and record.verified and record.provenance_label == ""

    key, files = forged(trained, test_error=0.0)  # "test error 0, from cache"
    lie = archive_of(tmp_path / "forged.tar", {key: files})
    rc, out, err = import_cli(lie, tmp_path / "b", capsys)
    assert rc == 1 and "Traceback" not in err
    assert f"rejected {key}: metrics.json does not match its weights (test_error: stored 0.0" in err
    assert RunStore(tmp_path / "b").keys() == []
    # The guard is the re-measurement: without it the same archive is only labelled unverified.
    result = import_archive(RunStore(tmp_path / "c"), lie, remeasure=None)
    assert result.unverified and RunStore(tmp_path / "c").get(key).verified is False


def test_numbers_without_weights_are_shown_as_unverified(trained, tmp_path, capsys):
    key, files = forged(trained, weights=False, test_error=0.0)
    rc, out, err = import_cli(archive_of(tmp_path / "light.tar", {key: files}), tmp_path / "cache", capsys)
    assert rc == 0 and f"unverified: {key[:12]}: the archive holds no weights" in out
    record = RunStore(tmp_path / "cache").get(key)
    assert record.verified is False and record.provenance_label == "imported, unverified"
    assert main(["cache", "ls", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "imported, unverified" in capsys.readouterr().out
    listed = json.loads((main(["cache", "ls", "--json", "--cache-dir", str(tmp_path / "cache")]), capsys.readouterr().out)[1])
    assert listed[0]["origin"] == "imported" and listed[0]["verified"] is False


def test_unverified_label_in_reports_and_pytest_lines(tmp_path, capsys):
    from claimbench.pytest_plugin import UNVERIFIED, format_verdict, pytest_report_teststatus
    from claimbench.check.verdict import Verdict
    from claimbench.report.runs_page import runs_page, runs_table
    from claimbench.spec.claims import load_claims

    claims = tmp_path / "claims"
    shutil.copytree(REPO / "claims" / "_bases", claims / "_bases")
    shutil.copytree(REPO / "claims" / "tables", claims / "tables")
    shutil.copy(REPO / "claims" / "adam_l2_vs_wd.yaml", claims)
    spec = load_claims([claims / "adam_l2_vs_wd.yaml"])[0]
    store = RunStore(tmp_path / "cache")
    cfg = spec.tier("smoke").groups["adam_l2"].points[0].configs[0]
    metrics = {"test_error": 1.5, "sparsity_gamma": 50.0, "diverged_at": None, "steps": 3000}
    files = entry_files(RunRecord(cfg, metrics, {}, {"device": "cpu"}), run_key(cfg))
    assert import_archive(store, archive_of(tmp_path / "a.tar", {run_key(cfg): files})).unverified
    assert "(1 of 3 seeds imported, unverified)" in runs_table(spec.tier("smoke"), store)
    assert "(imported, unverified)" in runs_page([spec], "smoke", store)
    assert "1 imported, unverified" in format_verdict(spec, Verdict(spec.id, "smoke", "not reproduced", ""), 1)

    class Report:
        when, passed, user_properties = "call", True, [(UNVERIFIED, 2)]

    category, letter, (word, _markup) = pytest_report_teststatus(Report(), None)
    assert word == "PASSED (2 runs imported, unverified)"  # -v
    assert (category, letter) == ("passed", "U")  # -q: the letter, not ".", marks it
    Report.user_properties = []
    assert pytest_report_teststatus(Report(), None) is None

    # `claimbench show` and `claimbench run` of the run print the mark beside its numbers, and
    # their --json says where the numbers come from.
    key, cache = run_key(cfg), str(tmp_path / "cache")
    capsys.readouterr()
    assert main(["show", key[:12], "--cache-dir", cache]) == 0
    assert "⚠️ imported, unverified: its numbers were not measured here" in capsys.readouterr().out
    assert main(["show", key[:12], "--cache-dir", cache, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["origin"], shown["verified"]) == ("imported", False)
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    assert main(["run", str(tmp_path / "run.json"), "--cache-dir", cache, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"run {key[:12]}" in out and "(from cache; ⚠️ imported, unverified: its numbers were not measured here)" \
        in out, out
    assert main(["run", str(tmp_path / "run.json"), "--cache-dir", cache, "--device", "cpu", "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert (ran["key"], ran["cached"], ran["origin"], ran["verified"]) == (key, True, "imported", False)


@pytest.mark.slow
def test_data_absent_holds_the_entry_unverified_until_verify_can_measure_it(trained, tmp_path):
    key, files = forged(trained)
    store = RunStore(tmp_path / "cache", device="cpu")

    def no_data(record, device, data_root):
        raise DatasetError("digits: not downloaded")

    result = import_archive(store, archive_of(tmp_path / "a.tar", {key: files}), remeasure=no_data)
    assert "its data is not here" in result.unverified[key] and not store.get(key).verified
    checked = verify_store(store, remeasure)
    assert checked.verified_now == [key] and store.get(key).verified and store.has_weights(key)
    # A contradicted one found later is damage (and --repair moves it aside).
    key2, lie = forged(trained, test_error=0.0)
    other = RunStore(tmp_path / "other", device="cpu")
    import_archive(other, archive_of(tmp_path / "b.tar", {key2: lie}), remeasure=no_data)
    checked = verify_store(other, remeasure, repair=True)
    assert "does not match its weights" in checked.damaged[key2] and key2 in checked.moved
    assert other.keys() == []


def test_import_never_replaces_an_entry(trained, tmp_path, capsys):
    store = RunStore(tmp_path / "cache")
    key = run_key(trained.config)
    mine = RunRecord(trained.config, {**trained.metrics, "test_error": 42.0}, {}, {"device": "here"})
    store.put(key, mine)  # a genuine local entry without weights
    _, files = forged(trained)
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {key: files}), store.root, capsys)
    assert rc == 0 and f"skipped {key[:12]}: the cache already holds this run" in out
    kept = store.get(key)
    assert kept.metrics["test_error"] == 42.0 and kept.origin == "local" and not store.has_weights(key)


def _with(files: dict[str, bytes], key: str, **replace: bytes) -> dict[str, bytes]:
    manifest = json.loads(files["manifest.json"])
    return with_manifest({**files, **replace}, key, manifest["metrics_fingerprint"])


@pytest.mark.parametrize("case", ["metrics list", "size string", "other width, stale metrics"])
def test_malformed_entries_are_rejected_with_a_message(case, trained, tmp_path, capsys):
    key, files = forged(trained)
    if case == "metrics list":
        files = _with(files, key, **{"metrics.json": b"[1, 2, 3]"})
        expected = "metrics.json holds a list, not an object"
    elif case == "size string":
        manifest = json.loads(files["manifest.json"])
        manifest["sizes"]["metrics.json"] = "12"
        files = {**files, "manifest.json": json.dumps(manifest).encode()}
        expected = "sizes.metrics.json is '12', not a byte count"
    else:
        from dataclasses import replace

        from claimbench.data import load_dataset
        from claimbench.train.models import build_model

        data = load_dataset(trained.config.data)
        wider = replace(trained.config.model, width=0.25)
        state = build_model(wider, data.in_channels, data.image_size, data.num_classes, "digits").state_dict()
        stale = RunRecord(trained.config, trained.metrics, trained.history, trained.provenance,
                          dict(state), metrics_fingerprint="older-measurement-code")
        files = entry_files(stale, key)
        expected = "its weights do not fit its config (RuntimeError"
        # The same entry already in a cache (stale metrics: recomputed on read) is not served,
        # and left where it is (only cache verify --repair moves it).
        local = RunStore(tmp_path / "local", device="cpu", remeasure=remeasure)
        local.put_files(key, files)
        assert local.get(key) is None and local.entry_dir(key).is_dir()
        assert not (tmp_path / "local" / "corrupt").exists()
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {key: files}), tmp_path / "cache", capsys)
    assert rc == 1 and expected in err and "Traceback" not in err, err
    assert RunStore(tmp_path / "cache").keys() == []


def test_a_wrong_recorded_size_fails_verify_as_it_fails_a_read(trained, tmp_path, capsys):
    store = RunStore(tmp_path / "cache")
    key = run_key(trained.config)
    entry = store.put(key, trained)
    manifest = json.loads((entry / "manifest.json").read_bytes())
    manifest["sizes"]["history.json"] += 1
    (entry / "manifest.json").write_text(json.dumps(manifest))
    assert main(["cache", "verify", "--cache-dir", str(store.root)]) == 1
    assert "history.json has" in capsys.readouterr().err


class Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def bomb(path: Path, key: str, files: dict[str, bytes], member: str, size: int) -> Path:
    """A gzip archive whose ``member`` of ``key`` is ``size`` zero bytes (a few hundred KB packed)."""
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        def add(name, data, n=None):
            info = tarfile.TarInfo(name)
            info.size = len(data) if n is None else n
            tar.addfile(info, io.BufferedReader(Zeros(n)) if n is not None else io.BytesIO(data))

        add(ARCHIVE_MANIFEST, json.dumps({"format": 1}).encode())
        for name, data in sorted(files.items()):
            if name == member:
                add(f"entries/{key}/{name}", b"", size)
            else:
                add(f"entries/{key}/{name}", data)
    return path


@pytest.mark.parametrize("member", ["model.pt", "metrics.json"])
def test_a_gzip_bomb_member_is_refused_without_reading_it_whole(member, trained, tmp_path):
    key, files = forged(trained)
    archive = bomb(tmp_path / "bomb.tar.gz", key, files, member, 200 << 20)
    assert archive.stat().st_size < 2 << 20
    store = RunStore(tmp_path / "cache")
    tracemalloc.start()
    try:
        try:
            result = import_archive(store, archive, remeasure=None)
            outcome = result.rejected[key]
        except Exception as e:  # the archive as a whole refused
            outcome = str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"import held {peak / 2**20:.0f} MiB"
    if member == "model.pt":  # within the weights' limit, but not the size its manifest declares
        assert outcome.startswith("model.pt has 209715200 bytes in the archive, the manifest says")
    else:  # larger than any metrics.json may be: refused from its header
        assert "declares 209715200 bytes, more than the" in outcome and "nothing imported" in outcome
    assert store.keys() == []


@pytest.mark.parametrize("where", ["header", "manifest.json", "metrics.json"])
def test_deeply_nested_json_is_refused_without_recursion(where, trained, tmp_path, capsys):
    deep = b"[" * 200_000 + b"]" * 200_000
    key, files = forged(trained)
    header = None
    if where == "header":
        header = deep
    elif where == "manifest.json":
        files = {**files, "manifest.json": deep}
    else:
        files = _with(files, key, **{"metrics.json": deep})
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {key: files}, header), tmp_path / "cache", capsys)
    assert rc == 1 and "nests deeper than 32 levels" in err and "Traceback" not in err and "Recursion" not in err


def test_member_names_are_shown_escaped_and_whole(tmp_path, capsys):
    evil = "x/\x1b[2J\x1b]0;owned\x07" + "y" * 100
    archive = archive_of(tmp_path / "a.tar", {}, extra=[(evil, b"z")])
    rc, out, err = import_cli(archive, tmp_path / "cache", capsys)
    assert rc == 1 and "\x1b" not in err and "\x07" not in err
    assert f"rejected {ascii(evil)}: not an entry file" in err  # whole: not cut at 64 characters


def test_read_only_import_does_not_advise_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(RunStore, "writable", lambda self: False)
    rc, out, err = import_cli(archive_of(tmp_path / "a.tar", {}), tmp_path / "cache", capsys)
    assert rc == 1 and "read-only" in err and "cache import" not in err


def test_temporary_folders_are_not_entries_and_stale_ones_are_removed(trained, tmp_path, capsys):
    store = RunStore(tmp_path / "cache")
    key = run_key(trained.config)
    store.put(key, trained)
    other = RunRecord(trained.config, trained.metrics, {}, {})
    other_key = "ab" + key[2:]
    # What a training killed right after writing manifest.json in its temporary folder leaves.
    left = store.root / other_key[:2] / f".{other_key}-k1ll"
    fresh = store.root / key[:2] / f".{key}-busy"
    for tmp in (left, fresh):
        tmp.mkdir(parents=True)
        for name, data in entry_files(other, other_key).items():
            (tmp / name).write_bytes(data)
    old = time.time() - 3600
    for p in [left, *left.iterdir()]:
        os.utime(p, (old, old))
    args = ["--cache-dir", str(store.root)]
    assert store.keys() == [key]
    assert main(["cache", "ls", *args]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["cache", "verify", *args]) == 0 and "1 of 1 entries" in capsys.readouterr().out
    assert main(["cache", "export", str(tmp_path / "a.tar"), *args]) == 0
    assert main(["cache", "verify", "--repair", *args]) == 0
    assert f"removed {left}" in capsys.readouterr().out
    assert not left.exists() and fresh.exists()  # a writer at work is never harmed

    # A stale folder whose key another process holds locked is kept; the next write removes it
    # once the lock is free.
    for p in [fresh, *fresh.iterdir()]:
        os.utime(p, (old, old))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; "
        f"l = FileLock({str(store.root / 'locks' / (key + '.lock'))!r}); l.acquire(); print('held', flush=True); "
        "sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.remove_stale_temporaries() == [] and fresh.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    store.put(key, trained)
    assert not fresh.exists()


@pytest.fixture
def unreadable_cache():
    """A cache folder this user (or, as root, the user the CLI runs as) cannot read."""
    base = Path(tempfile.mkdtemp(prefix="claimbench-unreadable-", dir="/tmp"))
    base.chmod(0o777)
    cache = base / "cache"
    cache.mkdir()
    (cache / "ab").mkdir()
    cache.chmod(0o000)
    yield base, cache
    cache.chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["cache", "ls"], ["cache", "verify"], ["cache", "export", "{base}/out.tar"],
                                  ["plan", "--tier", "smoke"]])
def test_an_unreadable_cache_is_one_clear_error_in_every_command(argv, unreadable_cache):
    base, cache = unreadable_cache
    env = {**os.environ, "CLAIMBENCH_CACHE": str(cache), "HOME": str(base), "MPLCONFIGDIR": str(base / ".mpl"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "claimbench.cli", *[a.format(base=base) for a in argv]]
    # As root permissions do not bind: run as nobody, for whom the folder is unreadable.
    out = subprocess.run(as_other_user(cmd) if AS_ROOT else cmd, env=env, capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert f"cannot read the cache {cache}" in out.stderr and "Traceback" not in out.stderr
    assert "0 entries" not in out.stdout and not (base / "out.tar").exists()


def test_a_table_cell_whose_numbers_were_not_measured_here_is_marked(tmp_path):
    from claimbench.check.verdict import UNVERIFIED_MARK
    from claimbench.report.tables import table_page
    from claimbench.spec.table_folder import load_tables, table_files

    (table,) = [t for t in load_tables(table_files(REPO / "claims" / "tables")) if t.path.stem == "table01"]
    cell = next(c for c in table.cells if c.id == "table01/Adam L2 1e-04/CIFAR10")
    other = next(c for c in table.cells if c.id == "table01/Adam WD 1e-04/CIFAR10")
    store = RunStore(tmp_path / "cache")
    metrics = {"test_error": 10.0, "sparsity_gamma": 70.0, "sparsity_act": 71.0, "diverged_at": None, "steps": 10}
    imported = {run_key(c): entry_files(RunRecord(c, metrics, {}, {"device": "cpu"}), run_key(c)) for c in cell.configs}
    assert import_archive(store, archive_of(tmp_path / "a.tar", imported)).unverified
    for c in other.configs:  # trained here
        store.put(run_key(c), RunRecord(c, metrics, {}, {"device": "cpu"}))
    page = table_page(table, "full", store, {}, None)
    rows = {" ".join(c.strip() for c in line.split("|")[1:3]): line for line in page.splitlines() if line.startswith("| Adam")}
    assert f"{UNVERIFIED_MARK}70.0 ± 0 (n=3) / " in rows["Adam L2 1e-04"]
    assert "70.0 ± 0 (n=3) / " in rows["Adam WD 1e-04"] and UNVERIFIED_MARK not in rows["Adam WD 1e-04"]
    assert "marks a cell whose numbers include runs not measured here" in page
