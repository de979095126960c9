"""Runs that failed: why each one failed, kept beside the cache so checks and reports can say it.

In:  a cache root, a run key, the run's one-line summary and the reason it failed (one line).
Out: ``record_failure`` writes ``<root>/failed/<key>.json``; ``failure_of(root, key)`` reads it
     back as a ``FailedRun`` (None when there is none, or it cannot be read); ``forget_failure``
     removes it once the run is stored.

A failure record is not a result: no metrics, no weights, nothing a check could decide on. It
only turns "this run is missing" into "this run failed, and here is why", so a claim whose run
failed is an error with the reason on its page rather than "not run" with none. A record is
never trusted for more than that: a run whose entry is in the cache is served from the cache,
whatever record lies beside it, and training it again removes the record.

Writes are atomic (a temporary file renamed into place) and follow the umask, like the entries.
A cache where nothing can be written (read-only, full) loses the record, with a warning: the
command still reports the failure on its own output. No torch here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FAILED_DIR = "failed"
# A record is a few hundred bytes; anything much larger was not written by this module.
_MAX_BYTES = 64_000


@dataclass(frozen=True)
class FailedRun:
    key: str
    run: str  # the run's summary (RunConfig.summary()), as the command printed it
    reason: str  # one line: what failed and why, naming the plug-in where one is at fault
    failed_at: str


def _path(root: Path, key: str) -> Path:
    return Path(root) / FAILED_DIR / f"{key}.json"


def record_failure(root: Path, key: str, run: str, reason: str, config: dict | None = None,
                   plugins: list | None = None) -> None:
    """``config``: the run's config as a dict, and ``plugins`` what its plug-ins declared
    (``claimbench.cache.provenance``), so the failure can be reported where the plug-ins are not
    installed."""
    folder = Path(root) / FAILED_DIR
    data = json.dumps({"key": key, "run": run, "reason": reason, "config": config, "plugins": plugins,
                       "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1, sort_keys=True).encode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, _path(root, key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.warning("could not record why run %s failed in %s (%s); the report will show it as not run",
                    key[:12], folder, e.strerror or e)


def failure_of(root: Path, key: str) -> FailedRun | None:
    """The recorded failure of ``key``; None when none was recorded or the record is unreadable
    (then the run is merely missing, as it was before failures were recorded)."""
    path = _path(root, key)
    try:
        if path.stat().st_size > _MAX_BYTES:
            return None
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("key") != key:
        return None
    fields = [raw.get(name) for name in ("run", "reason", "failed_at")]
    if not all(isinstance(v, str) for v in fields):
        return None
    return FailedRun(key, *fields)


def failure_of_run(store: Any, key: str) -> FailedRun | None:
    """``failure_of`` in ``store``'s root, for the key a run has in this process: a store that
    reads runs whose plug-ins are not installed here keeps them under other keys
    (``claimbench.report.stored``) and says which (``stored_key``)."""
    stored_key = getattr(store, "stored_key", None)
    return failure_of(store.root, stored_key(key) if stored_key is not None else key)


def failed_keys(root: Path) -> list[str]:
    """The keys with a failure record."""
    try:
        return sorted(p.stem for p in (Path(root) / FAILED_DIR).glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []


def raw_failure(root: Path, key: str) -> dict | None:
    """A failure record as stored (its config and plug-ins included), or None."""
    if failure_of(root, key) is None:
        return None
    return json.loads(_path(root, key).read_bytes())


def forget_failure(root: Path, key: str) -> None:
    try:
        _path(root, key).unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache keeps an old record; the stored run is served before it anyway


def _umask() -> int:
    from claimbench.cache.permissions import umask

    return umask()
