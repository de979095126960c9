"""The process umask, read in one place for everything the cache writes.

In:  nothing (the umask the process has when first asked).
Out: ``umask()``. Whatever the cache writes (entries, lock files, side records) gets the
     permissions this mask allows (``0o666 & ~umask()`` for files, ``0o777 & ~umask()`` for
     folders), not the 0700 of ``tempfile.mkdtemp``/``mkstemp``, so a group sharing a cache
     (umask 002) can read, write and lock each other's files.

The mask is read once and kept: ``os.umask`` can only be read by setting it, and setting it for
a moment on every write would change it for the other threads of the process meanwhile.
"""

from __future__ import annotations

import os

_UMASK: int | None = None


def umask() -> int:
    """The process umask (read once; os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK
