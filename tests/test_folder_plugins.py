"""Mistakes in a claims folder's plug-in list (claimbench.yaml) are reported at claimbench.yaml's own
file:line, not at the line of every claim whose config names the plug-in."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import write_kit


@pytest.fixture
def kit(monkeypatch, tmp_path):
    from claimbench import plugins

    claims = write_kit(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CLAIMBENCH_PLUGINS", raising=False)
    # The kit is the user's own code: allowed to run, as a researcher allows their own folder.
    monkeypatch.setenv("CLAIMBENCH_ALLOW_PLUGINS", "1")
    sys.modules.pop("brokenkit", None)
    plugins._resolve_with.cache_clear()
    yield claims
    sys.modules.pop("brokenkit", None)
    plugins._resolve_with.cache_clear()


def test_a_misspelt_or_missing_plugin_is_an_error_of_claimbench_yaml(kit, monkeypatch, capsys):
    from claimbench.cli import main

    text = (kit / "claimbench.yaml").read_text()
    assert "  - brokenkit:tinynet\n" in text and "  - brokenkit:nobn\n" in text
    (kit / "claimbench.yaml").write_text(text.replace("brokenkit:tinynet", "brokenkit:tinynett")
                                    .replace("brokenkit:nobn", "brokenkt:nobn"))
    monkeypatch.chdir(kit.parent)
    assert main(["validate", "--claims-dir", "claims"]) == 2
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: claims/claimbench.yaml:3: plugins[1]: brokenkit:tinynett: module brokenkit has no attribute 'tinynett' "
        "(did you mean 'tinynet'?); its plug-ins: nantrainer, nobn, raisetrainer, shapetrainer, tinynet, tinyset",
        "error: claims/claimbench.yaml:4: plugins[2]: brokenkt:nobn: no module named 'brokenkt' can be imported here; "
        "install its package, or put the folder that holds it on PYTHONPATH",
    ], out.err
    assert "0 of 6 claim files valid" in out.out


def test_an_attribute_that_is_no_declaration_is_named(kit, monkeypatch, capsys):
    from claimbench.cli import main

    (kit / "claimbench.yaml").write_text((kit / "claimbench.yaml").read_text() + "  - brokenkit:build\n")
    monkeypatch.chdir(kit.parent)
    assert main(["validate", "--claims-dir", "claims"]) == 2
    assert ("claims/claimbench.yaml:8: plugins[6]: brokenkit:build: names a function, expected a "
            "claimbench.plugins.ModelPlugin, DatasetPlugin or TrainerPlugin") in capsys.readouterr().err
