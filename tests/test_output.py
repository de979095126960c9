"""Output folders and the cache location: claimbench never deletes what it did not write, and stores
runs where the documentation says, also when installed as a normal (non-editable) package."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from claimbench.cache.location import CACHE_RULE, default_cache_root, user_cache_root
from claimbench.cli import main
from claimbench.report.output import MARKER
from tests.helpers import REPO


def _report(out, tmp_path, *extra):
    return main(["report", "--tier", "smoke", "-k", "beta", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 *extra])


def test_a_users_folder_given_as_out_survives(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("months of work\n")
    for command in (["report"], ["verify"], ["verify", "--dry-run"]):
        code = main([*command, "--tier", "smoke", "-k", "beta", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert code == 2, command
        assert "holds files claimbench did not write" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]
    assert (out / "chapter1.tex").read_text() == "months of work\n"
    # Nothing was trained or stored for a refused report.
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.json"))


def test_claimbenchs_own_folder_is_replaced_whole_and_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "reports"
    assert _report(out, tmp_path) == 0
    assert (out / MARKER).is_file() and (out / "index.md").is_file()
    # A page an older report wrote (its marker lists it) goes; one nobody listed keeps the folder.
    (out / "stale.md").write_text("from an older report\n")
    assert _report(out, tmp_path) == 2
    marker = (out / MARKER).read_text()
    (out / MARKER).write_text(marker.replace('files: ["', 'files: ["stale.md", "'))
    assert _report(out, tmp_path) == 0
    assert not (out / "stale.md").exists() and (out / MARKER).is_file()
    # No folder left aside, no temporary folder left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_an_empty_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "empty"
    out.mkdir()
    assert _report(out, tmp_path) == 0 and (out / MARKER).is_file()


@pytest.mark.parametrize("target", ["file", "root", "empty", "proc", "link"])
def test_out_that_cannot_be_a_report_folder_is_a_clear_error(tmp_path, monkeypatch, capsys, target):
    monkeypatch.chdir(REPO)
    if target == "file":
        out = tmp_path / "notes.txt"
        out.write_text("mine\n")
    elif target == "link":
        real = tmp_path / "real"
        real.mkdir()
        out = tmp_path / "link"
        out.symlink_to(real)
    else:
        out = {"root": "/", "empty": "", "proc": "/proc/self/claimbench-report"}[target]
    code = _report(out, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and "Traceback" not in err, err
    if target == "file":
        assert out.read_text() == "mine\n" and not (tmp_path / ".notes.txt.old").exists()
    if target == "link":
        assert out.is_symlink() and not any((tmp_path / "real").iterdir())


@pytest.mark.parametrize("flag", [["-j", "0"], ["-j", "-1"], ["--group-size", "0"], ["-j", "two"]])
def test_jobs_and_group_size_are_at_least_one(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--tier", "smoke", "-k", "beta", "--cache-dir", str(tmp_path / "c"), *flag])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "at least 1" in err or "whole number" in err


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["report"], ["verify"]])
def test_an_empty_claims_folder_exits_2(tmp_path, monkeypatch, capsys, command):
    empty = tmp_path / "noclaims"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    cache = [] if command == ["validate"] else ["--cache-dir", str(tmp_path / "c")]
    code = main([*command, "--claims-dir", str(empty), *cache])
    err = capsys.readouterr().err
    assert code == 2 and "no claim files" in err and "Traceback" not in err


# -- where runs are stored ------------------------------------------------------------------------
def test_the_cache_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAIMBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "project"
    (project / "claims").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert default_cache_root() == project / ".cache" / "runs"
    assert default_cache_root(project / "claims") == project / ".cache" / "runs"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_cache_root() == user_cache_root() == tmp_path / "xdg" / "claimbench" / "runs"
    assert default_cache_root(project / "claims") == project / ".cache" / "runs"
    monkeypatch.setenv("CLAIMBENCH_CACHE", str(tmp_path / "mine"))
    assert default_cache_root(project / "claims") == tmp_path / "mine"


def test_the_rule_is_written_the_same_everywhere(capsys):
    readme = (REPO / "README.md").read_text()
    claims_readme = (REPO / "claims" / "README.md").read_text()
    for text in (readme, claims_readme):
        assert CACHE_RULE in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "".join(capsys.readouterr().out.split()) .find("".join(CACHE_RULE.split())) >= 0


@pytest.mark.slow
def test_a_non_editable_install_stores_runs_where_the_docs_say(tmp_path):
    """Built and installed like a user's `pip install claimbench` (a wheel into a folder of its own),
    then a run stored by the installed package: it lands beside the project's claims folder, or
    in the user cache folder, never inside the installed package."""
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                            "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    project = tmp_path / "project"
    (project / "claims").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import claimbench, torch\n"
        "from claimbench.cache import RunStore, RunRecord, run_key\n"
        "from claimbench.config import RunConfig\n"
        "store = RunStore()\n"
        "cfg = RunConfig()\n"
        "entry = store.put(run_key(cfg), RunRecord(cfg, {'test_error': 1.0, 'diverged_at': None}, {}, {}, "
        "{'w': torch.zeros(2)}))\n"
        "print(claimbench.__file__)\n"
        "print(entry)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIMBENCH_CACHE", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"))
    for cwd, expected in ((project, project / ".cache" / "runs"), (elsewhere, tmp_path / "xdg" / "claimbench" / "runs")):
        ran = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        package_file, entry = (Path(line) for line in ran.stdout.split())
        assert package_file.is_relative_to(site), "the installed copy ran, not the checkout"
        assert entry.is_relative_to(expected) and entry.is_dir()
        assert not any(site.rglob("manifest.json"))
