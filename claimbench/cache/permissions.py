"""The process umask, read in one place for everything the cache writes.

In:  nothing (the umask the process has when first asked).
Out: ``umask()``. Whatever the cache writes (entries, lock files, side records) gets the
     permissions this mask allows (``0o666 & ~umask()`` for files, ``0o777 & ~umask()`` for
     folders), not the 0700 of ``tempfile.mkdtemp``/``mkstemp``, so a group sharing a cache
     (umask 002) can read, write and lock each other's files.

The mask is read once and kept, from ``/proc/self/status`` where Linux (4.7 and later) reports
it: ``os.umask`` can only be read by setting it, and a file another thread creates in that moment
gets the wrong mode. Elsewhere it is read that way, once.
"""

from __future__ import annotations

import os
from pathlib import Path

_UMASK: int | None = None


def umask() -> int:
    """The process umask, read once."""
    global _UMASK
    if _UMASK is None:
        _UMASK = _from_proc()
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def _from_proc() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None
