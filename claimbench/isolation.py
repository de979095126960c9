"""How claimbench runs pytest on a claims folder it may not have written.

Out: ``isolated_pytest_args()``: the options ``claimbench verify`` and its dry run pass to pytest.

A claims folder's ``conftest.py`` is Python that pytest imports, and an ini file in or above it
(pytest.ini, tox.ini, setup.cfg, pyproject.toml) can add options and plug-ins; a folder from
someone else must not run code or steer the run that way. So pytest gets ``--noconftest``, an
empty ini (``-c`` on the null device) and the current folder as its root, named so that pytest
looks for none.
"""

from __future__ import annotations

import os
from pathlib import Path


def isolated_pytest_args() -> list[str]:
    return ["--noconftest", "-c", os.devnull, "--rootdir", str(Path.cwd()), "-o", "addopts="]
