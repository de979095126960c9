"""Running claimbench as another user, for the tests of shared and unreadable caches.

As root, permissions do not bind, so those tests switch to user 65534 (nobody) with setpriv.
That user must be able to start this checkout's interpreter and import claimbench and torch from it;
a clone inside a private folder (``mktemp -d`` makes 0700 folders) keeps it out. Such a test
then says so and does not run, instead of failing for a reason it does not exist for.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

AS_ROOT = os.geteuid() == 0
OTHER_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@functools.cache
def _why_other_user_cannot_run_claimbench() -> str | None:
    if shutil.which("setpriv") is None:
        return "setpriv is missing, so the test cannot switch to another user"
    # As the tests run it: this interpreter, in the checkout, reading its claims by their full path
    # (a folder above the checkout that other users cannot enter stops only absolute paths).
    code = f"import os, claimbench, torch; os.listdir({str(REPO / 'claims' / 'tables')!r})"
    probe = subprocess.run([*OTHER_USER, sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
    return (f"user 65534 cannot run {sys.executable} with claimbench and torch ({last}): the checkout or its "
            "virtualenv lies in a folder other users cannot enter (a clone inside `mktemp -d`, which is 0700)")


def as_other_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as user 65534; skips the calling test, saying why, where that cannot work."""
    why = _why_other_user_cannot_run_claimbench()
    if why is not None:
        pytest.skip(why)
    return [*OTHER_USER, *cmd]
