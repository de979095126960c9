"""What a user gets from someone else: a claims folder, a project with its own cache, a folder
that claims to be a report. Nothing from elsewhere runs code, passes for trained here, or costs a
user's file unless the user said so.

The claims folder is the one-claim `tiny` folder of tests/test_outside.py (10 steps of a
width-0.125 BasicNet on digits). Commands run in process through ``repro.cli.main``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro.cli import main
from tests.test_outside import BASE, CLAIM, PAPER

# A module that leaves a file behind when it is imported: the proof that code ran.
EVIL = """\
from pathlib import Path
Path({flag!r}).write_text("imported")
"""


def tiny_claims(folder: Path, check: str | None = None) -> Path:
    (folder / "_bases").mkdir(parents=True)
    (folder / "_bases" / "tiny.yaml").write_text(BASE)
    (folder / "paper.yaml").write_text(PAPER)
    claim = CLAIM if check is None else CLAIM.replace(
        "- {kind: distribution, a: {run: adam_l2, metric: test_error}, min: 0, max: 100}", check)
    (folder / "tiny.yaml").write_text(claim)
    return folder


# --- a claims folder's plug-ins and conftest ---------------------------------------------------------

@pytest.fixture
def hostile_folder(tmp_path, monkeypatch):
    """A claims folder whose repro.yaml names a module it ships, importable (the README's
    `PYTHONPATH=.`), with a claim whose base needs the plug-in, and a conftest.py; each writes a
    flag file when it runs."""
    claims = tiny_claims(tmp_path / "claims")
    flag = tmp_path / "imported.flag"
    (tmp_path / "evilmod.py").write_text(EVIL.format(flag=str(flag)))
    (claims / "conftest.py").write_text(EVIL.format(flag=str(tmp_path / "conftest.flag")))
    (claims / "repro.yaml").write_text("plugins: [evilmod:evilnet]\n")
    (claims / "_bases" / "evil.yaml").write_text(BASE.replace("arch: basicnet", "arch: evilnet"))
    (claims / "evil.yaml").write_text(CLAIM.replace("id: tiny-trains", "id: evil-trains")
                                      .replace("_bases/tiny.yaml", "_bases/evil.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("REPRO_ALLOW_PLUGINS", raising=False)
    monkeypatch.delenv("REPRO_PLUGINS", raising=False)
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield claims, flag


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


def test_verify_does_not_run_the_folders_conftest_or_ini(hostile_folder, capsys):
    claims, flag = hostile_folder
    (claims / "evil.yaml").unlink()
    (claims / "repro.yaml").unlink()
    # An ini file above the claims that would add an option pytest fails on, were it read.
    (claims.parent / "pytest.ini").write_text("[pytest]\nrequired_plugins = no-such-plugin-anywhere\n")
    rc = main(["verify", "--claims-dir", str(claims), "--out", "rep", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.out[-2000:] + out.err[-2000:]
    assert not (claims.parent / "conftest.flag").exists()


# --- report folders ---------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch):
    """proj/ with claims, a cache and the user's notes; an empty `.repro-report` planted in it."""
    proj = tmp_path / "proj"
    tiny_claims(proj / "claims")
    (proj / "cache").mkdir()
    (proj / "NOTES.md").write_text("notes\n")
    (proj / ".repro-report").write_text("")
    monkeypatch.delenv("REPRO_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return proj


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("out", ["proj", "proj/claims", "proj/cache", ".", "home"])
def test_a_planted_marker_never_costs_a_file(project, capsys, out, monkeypatch):
    if out == "home":
        monkeypatch.setenv("HOME", str(project))
        (project / "claims" / ".repro-report").write_text("")
        out = str(project)
    before = _files(project)
    rc = main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", out])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _files(project) == before


def test_the_claims_folder_the_cache_and_the_current_folder_are_refused_outright(project, capsys, monkeypatch):
    # Even without anything else in them: a marker that lists everything proves nothing here.
    for out, what in [("proj/claims", "the claims folder"), ("proj/cache", "the run cache"), (".", "the current folder")]:
        rc = main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", out])
        err = capsys.readouterr().err
        assert rc == 2 and what in err, err


def test_a_marker_copied_into_a_users_folder_does_not_make_it_repros(project, tmp_path, capsys):
    (project / ".repro-report").unlink()
    (project / "NOTES.md").unlink()
    rep = tmp_path / "rep"
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(rep)]) == 0
    mine = tmp_path / "mynotes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    (mine / ".repro-report").write_text((rep / ".repro-report").read_text())
    capsys.readouterr()
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(mine)]) == 2
    assert "thesis.tex" in capsys.readouterr().err and (mine / "thesis.tex").read_text() == "months of work\n"
    # repro's own folder is still replaced.
    assert main(["report", "--claims-dir", "proj/claims", "--cache-dir", "proj/cache", "--out", str(rep)]) == 0
