"""At run time, validating, planning and reporting work from claim files and cached records without
loading torch (only training and measuring need it). The static side, every import of every
stage, is checked by the import-linter contracts (tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO


PROBE = """
import sys
from claimbench.cli import main
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
else:
    code = 0
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


@pytest.mark.parametrize("argv", [
    ["validate"],
    ["plan", "--tier", "full"],
    ["report", "--tier", "full", "-k", "adam-l2-vs-wd"],
])
def test_command_never_imports_torch(argv, tmp_path):
    if argv[0] in ("plan", "report"):
        argv = argv + ["--cache-dir", str(tmp_path / "cache")]
    if argv[0] == "report":
        argv = argv + ["--out", str(tmp_path / "report")]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("NO-TORCH"), (argv, out.stdout[-2000:], out.stderr[-2000:])
    assert last.split()[1] in ("0", "None"), (argv, out.stdout[-2000:], out.stderr[-2000:])
