"""The small JSON records kept beside the runs in the cache root, written one way.

In:  a record's path (``<cache>/step-times.json``, ``<cache>/gpu-check.json``,
     ``<cache>/simulations/<k>/<key>.json``) and what to write, or for a merge a function from the
     record as it is now to the record as it should be.
Out: ``write_json(path, value)``: the file replaced whole; ``update_json(path, change, read)``: a
     read-modify-write under the record's lock, returning what was written.

Why one writer: several processes share a cache (parallel jobs, two users of a group cache).
A record is written to a temporary file in its folder and renamed over the old one, so a reader
sees the old record or the new one, never half of either. A merge (read, change, write) holds a
lock file beside the record (``.<name>.lock``) from the read to the rename, so two writers that
merge at once both land: without it the second rename drops what the first added. Files and
locks get the permissions the process umask allows, as the run store's entries do, so a group
sharing a cache (umask 002) can replace each other's records (the umask as
``claimbench.cache.permissions`` reads it, never by setting it where /proc tells it). No torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from claimbench.cache.permissions import umask

# How long a merge waits for another process's merge of the same record; one holds the lock for
# the milliseconds of a read and a rename, so a wait this long means a stuck holder.
LOCK_TIMEOUT_S = 120.0


def file_mode() -> int:
    """The mode a new record (and its lock) gets: read and write as far as the umask allows."""
    return 0o666 & ~umask()


def write_json(path: Path, value: Any, **dump: Any) -> Path:
    """Replace ``path`` with ``value`` as JSON (``dump``: ``json.dumps`` options). Raises OSError
    where the folder cannot be written; the temporary file is removed then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:32]}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), file_mode())  # mkstemp makes 0600: others sharing the cache could not read it
            f.write(json.dumps(value, **dump))
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the bytes it names
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def lock_for(path: Path) -> FileLock:
    """The lock a merge of ``path`` holds: ``.<name>.lock`` beside it (the folder must exist)."""
    path = Path(path)
    return FileLock(str(path.with_name(f".{path.name}.lock")), timeout=LOCK_TIMEOUT_S, mode=file_mode())


def read_json_or_none(path: Path) -> Any:
    """The record at ``path``, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def update_json(path: Path, change: Callable[[Any], Any], read: Callable[[Path], Any] = read_json_or_none,
                **dump: Any) -> Any:
    """Merge into the record at ``path``: ``change(read(path))`` written in its place, with the
    record's lock held from the read to the rename (no other merge can slip in between and be
    lost). Returns what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_for(path):
        value = change(read(path))
        write_json(path, value, **dump)
    return value
