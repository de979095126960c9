"""The GitHub Actions workflow (.github/workflows/ci.yml) is valid and does what the README says:
`make test` with the run cache (.cache/runs) kept between builds, keyed by the training-code
fingerprint. Syntax is checked by check-jsonschema (a test dependency) against the GitHub
workflow schema it ships (SchemaStore's), offline."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from claimbench.cli import main
from tests.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_workflow_passes_the_schema_linter():
    done = lint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "ci.yml"
    # A job without runs-on and a step that is both an action and a script.
    text = WORKFLOW.read_text().replace("    runs-on: ubuntu-latest\n", "")
    text = text.replace("      - uses: actions/checkout@v4\n", "      - uses: actions/checkout@v4\n        run: echo\n")
    broken.write_text(text)
    assert lint(broken).returncode != 0


def test_workflow_runs_make_test_with_the_run_cache_keyed_by_the_fingerprint(capsys):
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["test"]["steps"]
    runs = [s.get("run", "") for s in steps]
    # make test's stages, each a step of its own, in make test's order.
    stages = [runs.index(f"make {stage}") for stage in ("unit", "golden", "e2e", "claims")]
    assert stages == sorted(stages)
    fingerprint = next(s for s in steps if s.get("id") == "fingerprint")
    assert "claimbench cache fingerprint" in fingerprint["run"]
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    for step in (restore, save):
        assert step["with"]["path"] == ".cache/runs"
        assert "steps.fingerprint.outputs.training" in step["with"]["key"]
    # Restored before the tests run; saved after them even when they failed.
    assert steps.index(restore) < stages[0] and stages[-1] < steps.index(save)
    assert save["if"].startswith("always()")
    assert main(["cache", "fingerprint"]) == 0
    assert re.fullmatch(r"semantics-[0-9]+\n", capsys.readouterr().out)  # a cache key part, safe in a key


def test_workflow_uploads_the_reports_even_when_the_tests_fail():
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["test"]["steps"]
    runs = [s.get("run", "") for s in steps]
    report = next(i for i, r in enumerate(runs) if "claimbench report --tier smoke" in r)
    upload = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert runs.index("make claims") < report < upload
    assert steps[report]["if"] == "always()" and steps[upload]["if"] == "always()"
    out = steps[report]["run"].split("--out", 1)[1].split()[0]
    assert steps[upload]["with"]["path"].rstrip("/") in out


def test_a_job_lints_the_workflows_with_actionlint_at_a_pinned_release():
    """GitHub's runners can download actionlint (this machine cannot: no registry ships it); the
    job pins one release, the same in the script's address and its version argument."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["actionlint"]["steps"]
    download = next(s for s in steps if "download-actionlint.bash" in s.get("run", ""))
    tag, version = re.search(r"/actionlint/v(\d+\.\d+\.\d+)/scripts/download-actionlint\.bash\) (\S+)$",
                             download["run"]).groups()
    assert tag == version
    lint_step = steps[steps.index(download) + 1]
    assert lint_step["run"].startswith(f"${{{{ steps.{download['id']}.outputs.executable }}}}")
