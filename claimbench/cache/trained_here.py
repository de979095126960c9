"""Which cache entries this user trained: a mark that a copied or edited entry cannot carry.

In:  an entry's key and the checksums its manifest lists.
Out: ``trained_here_mark(key, files)``: the mark claimbench writes into the manifest of every entry it
     trains (``manifest["trained_here"]``); ``is_trained_here(manifest, key)``: whether a stored
     manifest carries a mark this user's claimbench made for exactly these files.

A cache is a folder anyone can fill: a project may ship its ``.cache/runs`` (the default cache
beside its claims), and a manifest's checksums are recomputed in a minute after an edit. So
"trained here" cannot be read from the entry alone. The mark is an HMAC-SHA256, under a secret
kept outside every cache (``$CLAIMBENCH_TRAINED_HERE_KEY``, default
``~/.config/claimbench/trained-here.key`` of the account, made on the first training, readable by its
owner only),
of the key and the checksums of every file of the entry. An entry without a valid mark and not
imported by ``claimbench cache import`` was found in the cache, not trained by this user: it is
served like an unverified import (``RunRecord.origin == "found"``), marked wherever its numbers
decide, until ``claimbench cache verify`` re-measures it from its weights. A group sharing one cache
shares the mark by pointing ``$CLAIMBENCH_TRAINED_HERE_KEY`` at one key file all of them can read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

KEY_ENV = "CLAIMBENCH_TRAINED_HERE_KEY"
MARK_FIELD = "trained_here"

# Secrets read in this process, by key file: one read per file, whoever asks.
_secrets: dict[Path, bytes] = {}


def key_file() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    # The account's own home, not $HOME: a tool that points $HOME elsewhere for a while (pytest's
    # pytester, a sandbox) must not make this user's runs look like someone else's.
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path(_account_home()) / ".config")
    path = config / "claimbench" / "trained-here.key"
    # Before it had a name of its own, claimbench kept the key under its working name; reading
    # that file keeps every entry trained then marked as trained here after an upgrade.
    earlier = config / "repro" / "trained-here.key"
    if not path.exists() and earlier.is_file():
        return earlier
    return path


def _account_home() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):  # no passwd entry (some containers), or not POSIX
        return str(Path.home())


def _secret(create: bool) -> bytes | None:
    path = key_file()
    if path in _secrets:
        return _secrets[path] or None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        data = _create(path)
        if data is None:
            return None
    except OSError as e:
        log.warning("cannot read %s (%s): no entry is known as trained here", path, e.strerror or e)
        return None
    data = data.strip()
    if len(data) < 32:
        log.warning("%s holds no key (fewer than 32 bytes): no entry is known as trained here; remove it and "
                    "claimbench makes a new one", path)
        return None
    _secrets[path] = data
    return data


def _create(path: Path) -> bytes | None:
    """A new secret at ``path`` (0600); the one another process made first if it won the race."""
    data = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return path.read_bytes()
        except OSError:
            return None
    except OSError as e:
        log.warning("cannot create %s (%s): runs trained now are not marked as trained here", path, e.strerror or e)
        _secrets[path] = b""  # said once per process, not once per run stored
        return None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def _message(key: str, files: dict[str, str]) -> bytes:
    return (key + "\n" + json.dumps(files, sort_keys=True)).encode()


def _sign(message: bytes) -> str | None:
    """This user's mark for ``message`` (None when no secret can be kept)."""
    secret = _secret(create=True)
    return hmac.new(secret, message, hashlib.sha256).hexdigest() if secret else None


def _signed_here(message: bytes, mark: object) -> bool:
    """Whether ``mark`` is the one this user's claimbench made for ``message``."""
    secret = _secret(create=False)
    if not isinstance(mark, str) or secret is None:
        return False
    return hmac.compare_digest(mark, hmac.new(secret, message, hashlib.sha256).hexdigest())


def trained_here_mark(key: str, files: dict[str, str]) -> str | None:
    """The mark for an entry this process trained (None when no secret can be kept)."""
    return _sign(_message(key, files))


def record_mark(record: dict) -> str | None:
    """The mark for a side record this process writes (a machine's gpu-check findings): the same
    secret over the record's canonical JSON, so a record a project ships cannot pass for one this
    user's claimbench wrote. None when no secret can be kept."""
    return _sign(json.dumps(record, sort_keys=True).encode())


def is_marked_here(record: dict, mark: object) -> bool:
    """Whether ``mark`` is the one this user's claimbench made for ``record``."""
    return _signed_here(json.dumps(record, sort_keys=True).encode(), mark)


def is_trained_here(manifest: dict, key: str) -> bool:
    mark = manifest.get(MARK_FIELD)
    return isinstance(mark, str) and _signed_here(_message(key, manifest["files"]), mark)
