"""`claimbench` against shared, read-only and shipped caches: what a second user, a read-only mount, a
closed pipe, an out-of-memory and an archive round trip look like from the command line. Every
case ends with a message and an exit code, never a traceback."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

from claimbench.cache import RunRecord, RunStore, run_key, training_identity
from claimbench.cli import main
from claimbench.runconfig import run_config_from_dict
from claimbench.report import render_reports
from claimbench.spec.claims import load_claims
from tests.helpers import REPO, config_from
from tests.other_user import AS_ROOT, as_other_user


@pytest.fixture
def shared_dir():
    """A folder another user can traverse (pytest's own tmp folders are private to this user)."""
    path = Path(tempfile.mkdtemp(prefix="claimbench-shared-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    path.chmod(0o755)
    shutil.rmtree(path)


def cli(args: list[str], cache: Path, home: Path, other_user: bool = False, shell_suffix: str = ""):
    """Run the CLI in a fresh process, as another user (``other_user``) when asked."""
    env = {**os.environ, "CLAIMBENCH_CACHE": str(cache), "HOME": str(home), "MPLCONFIGDIR": str(home / ".mpl"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "claimbench.cli", *args]
    if other_user:
        cmd = as_other_user(cmd)
    if shell_suffix:
        cmd = " ".join(map(str, cmd)) + shell_suffix
    return subprocess.run(cmd, env=env, capture_output=True, text=True, shell=bool(shell_suffix), cwd=REPO,
                          timeout=300)


def fake_record(config, value: float, provenance: dict | None = None) -> RunRecord:
    metrics = {"test_error": value, "sparsity_gamma": value, "diverged_at": None, "steps": 25}
    return RunRecord(config, metrics, {"loss": [1.0]}, provenance or {"device": "cpu"}, {"w": torch.ones(3)})


def measured_record(config, provenance: dict) -> RunRecord:
    """A record whose numbers are what its (untrained) weights measure: an import re-measures
    weights and refuses numbers they do not give, so a shipped entry must carry real ones."""
    from claimbench.data import load_dataset
    from claimbench.train.models import build_model
    from claimbench.runs import remeasure

    torch.manual_seed(config.train.seed)
    data = load_dataset(config.data)
    model = build_model(config.model, data.in_channels, data.image_size, data.num_classes, config.data.dataset)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    unmeasured = RunRecord(config, {"diverged_at": None, "steps": 0}, {}, provenance, state)
    return RunRecord(config, remeasure(unmeasured, "cpu"), {}, provenance, state)


def make_read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.mark.slow
def test_read_only_cache_serves_what_it_holds_and_says_what_it_cannot(shared_dir):
    cache = shared_dir / "cache"
    store = RunStore(cache)
    cfg = config_from(shared_dir / "run.yaml")
    store.put(run_key(cfg), fake_record(cfg, 1.25))
    damaged_cfg = run_config_from_dict({**cfg.to_dict(), "optim": {**cfg.to_dict()["optim"], "lam": 0.5}})
    damaged = store.put(run_key(damaged_cfg), fake_record(damaged_cfg, 9.0))
    os.truncate(damaged / "model.pt", 10)
    make_read_only(cache)
    # As root, permissions do not bind: read as another user, for whom the cache is read-only.
    served = cli(["run", str(shared_dir / "run.yaml"), "--json"], cache, shared_dir, other_user=AS_ROOT)
    assert served.returncode == 0, served.stderr
    out = json.loads(served.stdout)
    assert out["cached"] is True and out["metrics"]["test_error"] == 1.25

    missing = cli(["run", str(shared_dir / "run.yaml"), "--set", "optim.lam=0.25"], cache, shared_dir,
                  other_user=AS_ROOT)
    assert missing.returncode == 1
    assert "read-only" in missing.stderr and "cannot be stored" in missing.stderr
    assert missing.stderr.count("read-only") == 1 and "Traceback" not in missing.stderr

    shown = cli(["show", run_key(damaged_cfg)[:12]], cache, shared_dir, other_user=AS_ROOT)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert "damaged" in shown.stderr and "stays where it is" in shown.stderr and "9.0" not in shown.stdout
    assert damaged.is_dir() and not (cache / "corrupt").exists()


@pytest.mark.slow
def test_train_on_a_read_only_cache_says_so_once_and_trains_nothing(shared_dir):
    """Runs that could not be stored are not trained at all (hours lost otherwise), and the
    reason is said once, not once per group."""
    cache = shared_dir / "cache"
    cache.mkdir()
    make_read_only(cache)
    out = cli(["train", "--tier", "smoke", "-k", "adam-l2-vs-wd"], cache, shared_dir, other_user=AS_ROOT)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "trained 0, cached 0, failed 6" in out.stdout
    assert out.stderr.count("is read-only") == 1 and "cannot be stored" in out.stderr
    assert out.stderr.count("not trained (read-only cache)") == 6
    assert not any(p.is_file() for p in cache.rglob("*") if "lock" not in p.name)


def test_an_entry_written_by_one_user_is_served_to_another(shared_dir):
    """Entries follow the umask (not mkdtemp's 0700): a second user reads them, no false
    'damaged, moved aside'."""
    cache = shared_dir / "cache"
    cfg = config_from(shared_dir / "run.yaml")
    old = os.umask(0o022)
    try:
        import claimbench.cache.permissions as permissions

        permissions._UMASK = None
        RunStore(cache).put(run_key(cfg), fake_record(cfg, 2.5))
    finally:
        os.umask(old)
        permissions._UMASK = None
    entry = RunStore(cache).entry_dir(run_key(cfg))
    assert all(p.stat().st_mode & 0o005 for p in [entry, *entry.iterdir()])  # others may read
    if not AS_ROOT:
        return  # switching to another user needs root; the modes above are what that user needs
    shown = cli(["show", run_key(cfg)[:12], "--json"], cache, shared_dir, other_user=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["metrics"]["test_error"] == 2.5 and "damaged" not in shown.stderr


def test_broken_pipe_ends_quietly(tmp_path):
    cfg = config_from(tmp_path / "run.yaml")
    RunStore(tmp_path / "cache").put(run_key(cfg), fake_record(cfg, 1.0, {"note": "x" * 300_000}))
    done = cli(["show", run_key(cfg)[:12]], tmp_path / "cache", tmp_path, shell_suffix=" | head -1")
    assert done.stdout.startswith("run ") and done.stderr == ""


def test_cpu_out_of_memory_is_a_message(tmp_path, monkeypatch, capsys):
    def allocate(self):
        torch.empty(1 << 60, dtype=torch.uint8)  # the real CPU allocator error

    monkeypatch.setattr(RunStore, "keys", allocate)
    assert main(["show", "abc", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error: CPU out of memory" in err and "Traceback" not in err


def test_ls_and_verify(tmp_path, capsys):
    store = RunStore(tmp_path / "cache")
    cfg = config_from(tmp_path / "run.yaml")
    good = run_key(cfg)
    store.put(good, fake_record(cfg, 1.0))
    other = run_config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": 1}})
    bad = store.put(run_key(other), fake_record(other, 2.0))
    data = bytearray((bad / "model.pt").read_bytes())
    data[-30] ^= 0xFF  # same size: only a full check sees it
    (bad / "model.pt").write_bytes(bytes(data))
    args = ["--cache-dir", str(store.root)]
    assert main(["cache", "ls", *args]) == 0
    out = capsys.readouterr().out
    assert good[:12] in out and "2 entries" in out
    assert main(["cache", "ls", "--json", *args]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["key"] for e in listed} == {good, run_key(other)} and all(e["current_training_identity"] for e in listed)
    assert main(["cache", "verify", *args]) == 1
    captured = capsys.readouterr()
    assert f"damaged: {run_key(other)[:12]}: checksum mismatch in model.pt" in captured.err
    assert "1 of 2 entries" in captured.out
    assert main(["cache", "fingerprint"]) == 0
    assert capsys.readouterr().out.strip() == training_identity()
    assert main(["cache", "fingerprint", "--code"]) == 0
    assert len(capsys.readouterr().out.strip()) == 16


def _claims(tmp_path: Path) -> Path:
    dest = tmp_path / "claims"
    shutil.copytree(REPO / "claims" / "_bases", dest / "_bases")
    shutil.copytree(REPO / "claims" / "tables", dest / "tables")  # the full tier names table cells
    shutil.copy(REPO / "claims" / "adam_l2_vs_wd.yaml", dest)
    return dest


@pytest.mark.slow
def test_export_import_round_trip_gives_the_same_report(tmp_path, capsys):
    claims = _claims(tmp_path)
    specs = load_claims(sorted(claims.glob("*.yaml")))
    lab = RunStore(tmp_path / "lab")
    for group in ("adam_l2", "adam_wd"):
        for cfg in specs[0].tier("smoke").groups[group].points[0].configs:
            lab.put(run_key(cfg), measured_record(cfg, {"device": "cpu", "torch": "x", "train_wall_s": 1}))
    stray = config_from(tmp_path / "run.yaml")
    lab.put(run_key(stray), fake_record(stray, 3.0))  # not needed by the claim: not exported
    archive = tmp_path / "smoke.tar.gz"
    assert main(["cache", "export", str(archive), "--tier", "smoke", "-k", "adam-l2", "--claims-dir", str(claims),
                 "--cache-dir", str(lab.root)]) == 0
    assert "6 runs" in capsys.readouterr().out
    laptop = RunStore(tmp_path / "laptop")
    assert main(["cache", "import", str(archive), "--cache-dir", str(laptop.root)]) == 0
    assert "imported 6 runs" in capsys.readouterr().out  # each re-measured from its weights and confirmed
    assert all(laptop.get(k).verified and laptop.get(k).origin == "imported" for k in laptop.keys())
    assert sorted(laptop.keys()) == sorted(k for k in lab.keys() if k != run_key(stray))
    render_reports(specs, "smoke", lab, tmp_path / "a")
    render_reports(specs, "smoke", laptop, tmp_path / "b")
    for page in sorted((tmp_path / "a").glob("*.md")):
        assert page.read_text() == (tmp_path / "b" / page.name).read_text(), page.name
    key = laptop.keys()[0]
    shipped, kept = laptop.get(key, with_weights=True).state_dict, lab.get(key, with_weights=True).state_dict
    assert shipped.keys() == kept.keys() and all(torch.equal(shipped[n], kept[n]) for n in kept)
    # Importing again adds nothing; --no-weights archives carry metrics only.
    assert main(["cache", "import", str(archive), "--cache-dir", str(laptop.root)]) == 0
    assert "imported 0 runs" in capsys.readouterr().out
    light = tmp_path / "light.tar"
    assert main(["cache", "export", str(light), "--no-weights", "--cache-dir", str(lab.root)]) == 0
    assert "7 runs (without weights)" in capsys.readouterr().out
    with tarfile.open(light) as tar:
        assert not [n for n in tar.getnames() if n.endswith("model.pt")]
    empty = RunStore(tmp_path / "light-cache")
    assert main(["cache", "import", str(light), "--cache-dir", str(empty.root)]) == 0
    assert empty.get(run_key(stray)).metrics["test_error"] == 3.0 and not empty.has_weights(run_key(stray))


def test_import_rejects_tampered_and_foreign_members(tmp_path, capsys):
    store = RunStore(tmp_path / "src")
    cfg = config_from(tmp_path / "run.yaml")
    key = run_key(cfg)
    store.put(key, fake_record(cfg, 1.0))
    archive = tmp_path / "a.tar"
    assert main(["cache", "export", str(archive), "--cache-dir", str(store.root)]) == 0
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()
            if member.name.endswith("metrics.json"):
                data = data.replace(b"1.0", b"0.1")
                member.size = len(data)
            dst.addfile(member, __import__("io").BytesIO(data))
        evil = tarfile.TarInfo("../../outside.txt")
        evil.size = 1
        dst.addfile(evil, __import__("io").BytesIO(b"x"))
    capsys.readouterr()
    target = RunStore(tmp_path / "dst")
    assert main(["cache", "import", str(tampered), "--cache-dir", str(target.root)]) == 1
    err = capsys.readouterr().err
    assert f"rejected {key}: checksum mismatch in metrics.json" in err and "../../outside.txt" in err
    assert target.keys() == [] and not (tmp_path / "outside.txt").exists()
    (tmp_path / "junk.tar").write_bytes(b"not an archive")
    assert main(["cache", "import", str(tmp_path / "junk.tar"), "--cache-dir", str(target.root)]) == 1
    assert "not a readable claimbench cache archive" in capsys.readouterr().err
