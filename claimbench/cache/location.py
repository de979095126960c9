"""Where the run cache lives when nobody says: one rule, written once.

In:  the environment and the claims folder in use (if any).
Out: ``default_cache_root(claims_dir)``, a folder that is never inside the installed package.

The rule (README, claims/README, ``--help`` and the pytest option all quote ``CACHE_RULE``):
1. ``$CLAIMBENCH_CACHE`` when it is set and not empty;
2. else ``.cache/runs`` in the project folder, the folder that holds the claims folder in use
   (``--claims-dir``, default ``./claims``; under pytest, pytest's root folder), when that
   claims folder exists;
3. else the user's cache folder: ``platformdirs.user_cache_dir("claimbench")/runs``
   (``~/.cache/claimbench/runs`` on Linux, honouring ``$XDG_CACHE_HOME``).

The folder above the package was used before: in a clone that is the checkout, but in a normal
install it is site-packages, where runs would vanish with the next upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_RULE = ("$CLAIMBENCH_CACHE, else .cache/runs beside the claims folder (in the project that holds it), "
              "else the user cache folder (~/.cache/claimbench/runs on Linux)")


def user_cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("claimbench")) / "runs"


def default_cache_root(claims_dir: Path | None = None, project: Path | None = None) -> Path:
    """The cache root by ``CACHE_RULE``. ``claims_dir``: the claims folder in use (default
    ``./claims``); ``project``: the project folder when the caller knows it (pytest's root)."""
    env = os.environ.get("CLAIMBENCH_CACHE")
    if env:
        return Path(env)
    if project is not None:
        return Path(project).resolve() / ".cache" / "runs"
    claims = Path("claims") if claims_dir is None else Path(claims_dir)
    if claims.is_dir():
        return claims.resolve().parent / ".cache" / "runs"
    return user_cache_root()
