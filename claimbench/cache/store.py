"""Content-addressed store of finished runs, safe to share, to read-only mount and to ship.

In:  a cache root (default: ``location.default_cache_root``), keys from ``keys.run_key`` and
     ``RunRecord`` values.
Out: the same records back without training, for as long as neither the config nor the
     behaviour of the training code changes; metrics brought up to date with the measurement
     code from the stored weights.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding config.json, metrics.json,
history.json, provenance.json, optionally model.pt (the weights, a plain tensor state dict) and
manifest.json (format, key, the training and metrics fingerprints, sha256 and size of every other
file). It is written into a temporary directory and renamed into place, so a reader sees a whole
entry or none.

A read serves an entry only if the manifest's key is the key asked for, ``config.json`` hashes
to that key under the identities the manifest records (and equals the requested config, when one
is given), and every file served matches its checksum; model.pt is checked by size on every read
and by checksum whenever the weights are loaded (``torch.load(weights_only=True,
map_location="cpu")``: no pickled code runs). Anything else is damage: the entry is reported and
treated as missing, so it is retrained. Reads never move entries: only ``claimbench cache verify
--repair`` moves a damaged entry to ``<root>/corrupt/``, and so does storing a freshly trained run
under the key of a damaged one. An entry that cannot be read here (a plug-in missing or of
another version, a key of an older claimbench's scheme) is listed with the reason and left in place;
an entry trained under an older training identity is simply never asked for (its key differs)
and stays until ``claimbench cache prune``. An entry this user may not read is an error, not damage.
On a read-only cache a run the cache lacks is one clear ``CacheError`` (new runs cannot be
stored there).

Every JSON file is checked before it is used: size and nesting depth before it is parsed, then
its shape (the manifest's fields, a metrics dict whose known metrics have the catalogue's types,
dict-valued history and provenance). Entries added by ``claimbench cache import`` say so in their
manifest (``origin``: imported, and whether their metrics were re-measured from their weights
here); entries this user trained carry a mark only this user's claimbench can make
(``claimbench.cache.trained_here``); any other entry was found in the cache (a project's shipped cache,
a copy, an edit) and is served as unverified (origin "found"). A read carries that into
``RunRecord.origin``/``verified``.

Temporary folders (``<root>/<xx>/.<key>-*``) are never entries. One left by a writer that was
killed is removed by the next write, or by ``claimbench cache verify --repair``, once it is older than
``STALE_TEMPORARY_S`` and its key's lock is free, so a writer still at work is never harmed.

Entries whose metrics were computed by other measurement code (``keys.metrics_fingerprint``)
have their metrics recomputed from the stored weights and the data on read (logged; the entry is
rewritten when the cache is writable). Entries without weights keep their metrics, with a
warning.

Sharing: directories and files get the permissions the umask allows (not mkdtemp's 0700), lock
files too, so a group sharing a cache (umask 002) can read, write and lock each other's entries.
``ensure_runs`` holds a cross-process file lock per key, so processes that need the same run
train it once.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from filelock import FileLock, Timeout

from claimbench.cache.keys import (
    CACHE_FORMAT,
    metrics_fingerprint,
    plugin_identity,
    run_key,
    training_code_fingerprint,
    training_identity,
)
from claimbench.cache.location import default_cache_root
from claimbench.cache.trained_here import MARK_FIELD, is_trained_here, trained_here_mark
from claimbench.cache.record import RunRecord
from claimbench.config import ConfigError, RunConfig, plugins_used, run_config_from_dict
from claimbench.spec.metrics import PER_FEATURE, PER_LAYER, RUN_METRICS

log = logging.getLogger(__name__)

JSON_FILES = ("config.json", "metrics.json", "history.json", "provenance.json")
WEIGHTS = "model.pt"
ENTRY_FILES = (*JSON_FILES, WEIGHTS)
_DENIED = (errno.EACCES, errno.EPERM)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
_KEY = re.compile(r"[0-9a-f]{64}")

# Limits on an entry's files. Real entries stay far below them (a full-tier history is a few
# MB; VGG-16 with an ImageNet head is ~550 MB of weights); they exist so that a damaged file or
# a hostile archive is refused before it is parsed or held in memory whole.
SIZE_LIMITS = {"config.json": 1 << 20, "metrics.json": 16 << 20, "history.json": 64 << 20,
               "provenance.json": 1 << 20, "manifest.json": 1 << 20, WEIGHTS: 1 << 30}
# No entry file nests deeper than 4; json.loads recurses once per level, so a file nested
# thousands deep would end in RecursionError instead of a message.
MAX_JSON_DEPTH = 32
# A temporary entry folder this old whose key is not locked was left by a killed writer (a
# writer holds the key's lock while it writes, and writing an entry takes seconds).
STALE_TEMPORARY_S = 600


# The command that brings stored metrics up to date with the measurement code (it hands the store
# a ``remeasure``); reports and plans only read, and name it where metrics are stale.
REFRESH_COMMAND = "claimbench cache verify"
# The one command that moves damaged entries aside.
REPAIR_COMMAND = "claimbench cache verify --repair"


class CacheError(RuntimeError):
    """A cache entry that cannot be trusted or a cache root that cannot be used."""


class EntryDamaged(CacheError):
    """An entry whose files do not match its manifest or its key."""


class EntryNotReadableHere(CacheError):
    """An entry that may well be sound but cannot be used in this environment: it stays where it
    is and is listed with the reason (reads never move entries)."""


class EntryOtherIdentity(EntryNotReadableHere):
    """An entry whose key cannot be checked by this claimbench (an older scheme of plug-in keys)."""


class EntryNeedsPlugin(EntryNotReadableHere):
    """An entry whose config names an architecture, dataset or trainer that no plug-in installed
    here provides, or fields the installed version of it does not have: sound, perhaps, but
    unreadable in this environment. It stays where it is (an
    uninstalled package must not cost a user their runs)."""


# The config fields that name a plug-in when they name no built-in.
PLUGIN_FIELDS = ("model.arch", "data.dataset", "train.trainer")
# A plug-in's own fields: another version of it may have renamed them.
PLUGIN_PARAMS = ("model.params", "train.params")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_UMASK: int | None = None


def umask() -> int:
    """The process umask (read once; os.umask can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def _json_bytes(value: Any, indent: int | None = 1) -> bytes:
    try:
        return json.dumps(value, indent=indent, sort_keys=True).encode()
    except RecursionError:  # a trainer's history nested thousands deep
        raise CacheError(f"a record nested deeper than {MAX_JSON_DEPTH} levels cannot be stored") from None


def state_dict_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_weights(data: bytes | BinaryIO, where: str) -> dict:
    """A state dict from model.pt bytes (or a seekable file), without running pickled code;
    CacheError otherwise."""
    import torch

    try:
        state = torch.load(io.BytesIO(data) if isinstance(data, bytes) else data, weights_only=True,
                           map_location="cpu")
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad input
        raise EntryDamaged(f"{where}: model.pt is not a plain tensor state dict ({str(e).splitlines()[0]})") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise EntryDamaged(f"{where}: model.pt is not a name -> tensor state dict")
    return state


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[][{}]")


def json_depth(data: bytes, limit: int) -> int:
    """How deep ``data`` nests arrays and objects, counted without recursion (strings skipped);
    the count stops early once it passes ``limit``."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        else:
            depth -= 1
    return deepest


def parse_json(data: bytes, name: str, limit: int | None = None) -> Any:
    """``data`` (the file ``name``) parsed, once its size and nesting depth are within bounds;
    EntryDamaged otherwise."""
    limit = SIZE_LIMITS.get(name, 1 << 20) if limit is None else limit
    if len(data) > limit:
        raise EntryDamaged(f"{name} has {len(data)} bytes, more than the {limit} allowed")
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise EntryDamaged(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(data)
    except ValueError as e:  # UnicodeDecodeError included
        raise EntryDamaged(f"{name} is not valid JSON ({e})") from e


def _is_number(v: Any) -> bool:
    # An integer beyond float range is no measurement: every check would have to convert it.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, float) or abs(v) <= _FLOAT_MAX)


_FLOAT_MAX = int(1.7976931348623157e308)


def metrics_problem(metrics: Any) -> str | None:
    """Why ``metrics`` is not a metrics dict (None if it is): each metric of the catalogue must
    have its shape's type (a scalar: a number, a bool or null; per layer: a list of numbers; per
    feature: a list of lists of numbers). Names outside the catalogue are left as they are."""
    if not isinstance(metrics, dict):
        return f"metrics.json holds a {type(metrics).__name__}, not an object"
    for name, value in metrics.items():
        metric = RUN_METRICS.get(name)
        if metric is None:
            continue
        if metric.shape == PER_LAYER:
            ok = isinstance(value, list) and all(_is_number(v) for v in value)
        elif metric.shape == PER_FEATURE:
            ok = isinstance(value, list) and all(isinstance(layer, list) and all(_is_number(v) for v in layer)
                                                 for layer in value)
        else:
            ok = value is None or isinstance(value, bool) or _is_number(value)
        if not ok:
            return f"metrics.json: {name} is {type(value).__name__} {str(value)[:40]!r}, not {metric.shape}"
    return None


def entry_files(record: RunRecord, key: str, with_weights: bool = True,
                identities: dict | None = None) -> dict[str, bytes]:
    """The files of an entry for ``record`` under ``key``, manifest included; ``identities``
    (``manifest_identities`` of the entry's manifest) when an existing entry is rewritten, so it
    keeps the identities its key was computed under."""
    files: dict[str, bytes] = {
        "config.json": _json_bytes(record.config.to_dict()),
        "metrics.json": _json_bytes(record.metrics),
        "history.json": _json_bytes(record.history, indent=None),
        "provenance.json": _json_bytes({**record.provenance, "key": key}),
    }
    if with_weights and record.state_dict is not None:
        files[WEIGHTS] = state_dict_bytes(record.state_dict)
    if record.origin == "local":
        origin = None
    elif record.origin == "found":  # rewritten here (metrics refreshed): still not trained here
        origin = {"source": "imported", "verified": record.verified, "found_in_cache": True}
    else:
        origin = {"source": record.origin, "verified": record.verified}
    if identities is None:
        identities = {"plugins": plugin_identity(record.config)}
    return with_manifest(files, key, record.metrics_fingerprint or metrics_fingerprint(), origin=origin,
                         **identities)


def with_manifest(files: dict[str, bytes], key: str, metrics_fp: str,
                  training_fp: str | None = None, origin: dict | None = None, plugins: str | None = None,
                  training_code: str | None = None) -> dict[str, bytes]:
    """``files`` with a manifest for them; ``origin`` ({"source": "imported", "verified": bool,
    ...}) marks an imported entry; without it the entry is one trained here, and the manifest
    gets this user's mark (``claimbench.cache.trained_here``).

    ``training_fingerprint`` in the manifest is the training identity the key was computed under
    (``keys.training_identity``; entries of older versions: the code fingerprint they were keyed
    by), ``plugins`` the plug-ins' identity the key holds (``keys.plugin_identity``) and
    ``training_code`` the fingerprint of the training code's text (provenance only). With both
    identities in the manifest an entry's key is checked from the entry alone, whatever is
    installed here."""
    files = {n: b for n, b in files.items() if n != "manifest.json"}
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "training_fingerprint": training_fp or training_identity(),
        "training_code": training_code or training_code_fingerprint(),
        "metrics_fingerprint": metrics_fp,
        "files": {n: sha256(b) for n, b in files.items()},
        "sizes": {n: len(b) for n, b in files.items()},
    }
    if plugins:
        manifest["plugins"] = plugins
    if origin is not None:
        manifest["origin"] = origin
    else:
        mark = trained_here_mark(key, manifest["files"])
        if mark is not None:
            manifest[MARK_FIELD] = mark
    return {**files, "manifest.json": _json_bytes(manifest)}


def manifest_identities(manifest: dict) -> dict:
    """The identity fields of ``manifest`` to carry into a rewritten manifest of the same entry."""
    return {"training_fp": manifest["training_fingerprint"], "plugins": manifest.get("plugins"),
            "training_code": manifest.get("training_code") or "unknown"}


def check_manifest(manifest: Any, key: str) -> dict:
    """The manifest if it is one of this format for ``key``, every field of its type; EntryDamaged
    otherwise."""
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else "?"
        raise EntryDamaged(f"cache format {str(found)[:20]} is not {CACHE_FORMAT}")
    if manifest.get("key") != key:
        raise EntryDamaged(f"manifest is for key {str(manifest.get('key'))[:12]}, not {key[:12]}")
    files, sizes = manifest.get("files"), manifest.get("sizes")
    if not isinstance(files, dict) or any(n not in ENTRY_FILES for n in files) \
            or any(n not in files for n in JSON_FILES):
        raise EntryDamaged("manifest does not list the entry's files")
    if not all(isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values()):
        raise EntryDamaged("manifest.json: files must map each file to its sha256 (64 hex digits)")
    if not isinstance(sizes, dict) or set(sizes) != set(files):
        raise EntryDamaged("manifest.json: sizes must give the size of every file it lists")
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= SIZE_LIMITS[name]:
            raise EntryDamaged(f"manifest.json: sizes.{name} is {str(size)[:30]!r}, not a byte count "
                               f"from 0 to {SIZE_LIMITS[name]}")
    if not isinstance(manifest.get("training_fingerprint"), str):
        raise EntryDamaged("manifest.json: training_fingerprint is not a string")
    if not isinstance(manifest.get("metrics_fingerprint"), (str, type(None))):
        raise EntryDamaged("manifest.json: metrics_fingerprint is not a string")
    for name in ("plugins", "training_code", MARK_FIELD):
        if not isinstance(manifest.get(name), (str, type(None))):
            raise EntryDamaged(f"manifest.json: {name} is not a string")
    origin = manifest.get("origin")
    if origin is not None and not (isinstance(origin, dict) and origin.get("source") == "imported"
                                   and isinstance(origin.get("verified"), bool)):
        raise EntryDamaged("manifest.json: origin must be {source: imported, verified: true|false}")
    if origin is not None and origin.get("contradicted"):
        # `claimbench cache verify` measured its weights and they contradict its numbers.
        raise EntryDamaged(f"its numbers were contradicted by its weights ({str(origin['contradicted'])[:200]})")
    return manifest


def record_from_files(blobs: dict[str, bytes], manifest: dict, key: str,
                      config: RunConfig | None = None) -> RunRecord:
    """Parse checked JSON files (sizes, depth, shapes); the config must hash to ``key`` (and
    equal ``config``)."""
    for name in JSON_FILES:
        if len(blobs[name]) != manifest["sizes"][name]:
            raise EntryDamaged(f"{name} has {len(blobs[name])} bytes, the manifest says {manifest['sizes'][name]}")
    parsed = {n: parse_json(blobs[n], n) for n in JSON_FILES}
    for name in ("config.json", "history.json", "provenance.json"):
        if not isinstance(parsed[name], dict):
            raise EntryDamaged(f"{name} holds a {type(parsed[name]).__name__}, not an object")
    problem = metrics_problem(parsed["metrics.json"])
    if problem:
        raise EntryDamaged(problem)
    try:
        stored = run_config_from_dict(parsed["config.json"])
    except ConfigError as e:
        if e.path in PLUGIN_FIELDS or e.path.startswith(PLUGIN_PARAMS):
            raise EntryNeedsPlugin(f"its config.json's {e.path}: {e.message}") from e
        raise EntryDamaged(f"unreadable config.json: {e}") from e
    except (ValueError, TypeError, AttributeError) as e:
        raise EntryDamaged(f"unreadable config.json: {e}") from e
    if run_key(stored, manifest["training_fingerprint"], manifest.get("plugins") or "") != key:
        if plugins_used(stored) and "plugins" not in manifest and "training_code" not in manifest:
            # Written by a claimbench that keyed plug-in code differently and did not record it: sound,
            # perhaps, but not checkable here, and never served for a key of this claimbench.
            raise EntryOtherIdentity("keyed by an older claimbench's plug-in fingerprint, which this claimbench "
                                     "does not recompute")
        raise EntryDamaged("config.json does not belong to this key")
    if config is not None and stored != config:
        raise EntryDamaged("config.json is not the requested config")
    origin, verified = entry_origin(manifest, key)
    return RunRecord(stored, parsed["metrics.json"], parsed["history.json"], parsed["provenance.json"],
                     None, manifest.get("metrics_fingerprint"), origin=origin, verified=verified)


def entry_origin(manifest: dict, key: str) -> tuple[str, bool]:
    """(origin, verified) of a checked manifest: "imported" as its origin says, "local" when it
    carries this user's trained-here mark, else "found" and unverified."""
    origin = manifest.get("origin")
    if origin:
        return origin["source"], origin["verified"]
    if is_trained_here(manifest, key):
        return "local", True
    return "found", False


class RunStore:
    def __init__(self, root: Path | None = None, data_root: Path | None = None, device: str = "auto",
                 remeasure: Callable[[RunRecord, str, Path | None], dict] | None = None):
        """``data_root``/``device``: where metrics are recomputed when the measurement code changed;
        ``remeasure(record_with_weights, device, data_root) -> metrics``, handed in by callers that
        may measure (training, ``claimbench cache verify``; ``claimbench.runs.remeasure``). Without it the
        store only reads: metrics from other measurement code are served marked stale
        (``RunRecord.metrics_stale``), and the caller says which command refreshes them."""
        self.root = Path(root) if root is not None else default_cache_root()
        self.data_root, self.device, self._remeasure = data_root, device, remeasure
        self._warned: set[str] = set()
        # Keys found damaged by a read of this store: not served again until stored anew.
        self._known_damaged: set[str] = set()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    # -- permissions --------------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether new entries can be stored (the root, or the folder it would be made in)."""
        p = self.root
        while not p.exists():
            if p.parent == p:
                return False
            p = p.parent
        locks = self.root / "locks"
        return os.access(p, os.W_OK | os.X_OK) and (not locks.exists() or os.access(locks, os.W_OK | os.X_OK))

    def read_only_error(self, what: str, suggest_import: bool = True) -> CacheError:
        """``suggest_import``: False where the failing command is the import itself."""
        return CacheError(f"the cache {self.root} is read-only: it serves the runs it holds, but {what} "
                          "cannot be stored there; point --cache-dir (or CLAIMBENCH_CACHE) at a writable directory"
                          + (", or add the runs with `claimbench cache import`" if suggest_import else ""))

    def unreadable_error(self, e: OSError) -> CacheError:
        return CacheError(f"cannot read the cache {self.root} ({e.strerror or e}: {e.filename or self.root}); "
                          "a cache shared by several users needs group read permission (chmod -R g+rwX, umask 002)")

    def lock(self, key: str) -> FileLock:
        lock_dir = self.root / "locks"
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno in _READ_ONLY:
                raise self.read_only_error(f"run {key[:12]}") from e
            raise CacheError(f"cache root {self.root} is not writable: {e}") from e
        # One lock object per file in this process (is_singleton), so re-entering is safe; its
        # mode follows the umask so every user of a group-shared cache can take it.
        return FileLock(str(lock_dir / f"{key}.lock"), mode=0o666 & ~umask(), is_singleton=True)

    def contains(self, key: str) -> bool:
        try:
            return (self.entry_dir(key) / "manifest.json").is_file()
        except PermissionError as e:
            raise self.unreadable_error(e) from e

    def keys(self) -> list[str]:
        """Every entry's key: folders ``<xx>/<key>`` with a manifest (temporary folders are not
        entries). A root or shard this user cannot read is a CacheError, never "no entries"."""
        return sorted(key for shard in self._shards() for key in self._listdir(shard)
                      if _KEY.fullmatch(key) and key[:2] == shard.name and (shard / key / "manifest.json").is_file())

    def _listdir(self, path: Path) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []
        except OSError as e:
            if e.errno in _DENIED:
                raise self.unreadable_error(e) from e
            raise CacheError(f"cannot list {path}: {e}") from e

    def _shards(self) -> list[Path]:
        names = self._listdir(self.root)
        return [self.root / n for n in sorted(names) if len(n) == 2 and (self.root / n).is_dir()]

    def stale_temporaries(self, older_than_s: float = STALE_TEMPORARY_S) -> list[Path]:
        """Temporary entry folders left by killed writers: older than ``older_than_s`` (by their
        newest file) and, where the name says whose they are, with that key's lock free."""
        now, stale = time.time(), []
        for shard in self._shards():
            for name in self._listdir(shard):
                if not name.startswith(".") or not (shard / name).is_dir():
                    continue
                path = shard / name
                try:
                    newest = max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
                except OSError:
                    continue  # gone already, or not ours to look into
                if now - newest < older_than_s:
                    continue
                key = name[1:65]
                if _KEY.fullmatch(key) and self.writable():
                    lock = self.lock(key)
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue  # its writer is alive
                    lock.release()
                stale.append(path)
        return stale

    def remove_stale_temporaries(self, older_than_s: float = STALE_TEMPORARY_S) -> list[Path]:
        """Remove what ``stale_temporaries`` finds; the folders removed."""
        removed = []
        for path in self.stale_temporaries(older_than_s):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
                log.info("removed %s, a temporary entry folder left by a writer that did not finish", path)
        return removed

    # -- write --------------------------------------------------------------------------------

    def put(self, key: str, record: RunRecord) -> Path:
        return self.put_files(key, entry_files(record, key))

    def put_files(self, key: str, files: dict[str, bytes], replace: bool = True) -> Path | None:
        """Store an entry's files (manifest included) atomically under the key's lock. With
        ``replace`` False an entry already stored under the key is kept (-> None)."""
        if not self.writable():
            raise self.read_only_error(f"run {key[:12]}")
        final = self.entry_dir(key)
        with self.lock(key):
            if not replace and self.contains(key):
                return None
            _refuse_unreadable(key, files)
            try:
                self.remove_stale_temporaries()
            except CacheError as e:  # a shard this user cannot read: not a reason to refuse the write
                log.warning("%s", e)
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                # Named by the whole key, so a cleaner can tell whose lock guards it.
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
                os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700: others sharing the cache could not read it
                for name, data in files.items():
                    with open(tmp / name, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as e:
                raise CacheError(f"cache root {self.root} is not writable: {e}") from e
            replaced = None
            if final.exists():
                damage = self._damaged(final, key)
                if damage is not None:
                    # A sound entry is about to take its place: keep the damaged one for its owner.
                    target = self._move_aside(final, "corrupt")
                    log.warning("cache entry %s was damaged (%s); moved to %s before storing the new one",
                                key[:12], damage, target)
                else:
                    replaced = self._move_aside(final, "replaced")
            try:
                os.rename(tmp, final)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CacheError(f"could not store run {key[:12]} at {final}: {e}") from e
            self._known_damaged.discard(key)
            if replaced is not None:
                # Superseded by the entry just stored (same key): no copy of the weights to keep.
                shutil.rmtree(replaced, ignore_errors=True)
        return final

    # -- read ---------------------------------------------------------------------------------

    def get(self, key: str, with_weights: bool = False, config: RunConfig | None = None,
            current_metrics: bool = True) -> RunRecord | None:
        """The stored record, or None if absent. A damaged entry (or one that is not ``config``'s)
        is reported and not used (-> None), left where it is: reads never move entries (``cache
        verify --repair`` does, and a run trained again for the key moves it to ``corrupt/``). With ``current_metrics``, metrics computed by other measurement
        code are recomputed from the stored weights."""
        entry = self.entry_dir(key)
        if key in self._known_damaged:
            return None
        try:
            if not entry.is_dir():
                return None
        except PermissionError as e:
            raise self.unreadable_error(e) from e
        try:
            record = self._read(entry, key, with_weights, config)
        except EntryDamaged as e:
            # A writer may be replacing the entry right now: look again under its lock.
            if self.writable():
                with self.lock(key):
                    try:
                        record = self._read(entry, key, with_weights, config)
                    except EntryDamaged as again:
                        self._discard(entry, key, again)
                        return None
                    except FileNotFoundError:
                        return None
            else:
                self._discard(entry, key, e)
                return None
        except FileNotFoundError:
            return None  # moved away between the look and the read
        except EntryNotReadableHere as e:
            self._warn_once(key, f"cache entry {key[:12]} cannot be read here ({e}); it stays where it is and is "
                                 "not used (install the plug-in to use it)")
            return None
        if current_metrics and record.metrics_fingerprint != metrics_fingerprint() and not record.diverged:
            if self._remeasure is None:
                record.metrics_stale = True
                self._warn_once(key, f"metrics of run {key[:12]} were computed by other measurement code; "
                                     f"they are shown as stored: {REFRESH_COMMAND} recomputes them from the "
                                     "stored weights (no retraining)")
            else:
                record = self._refresh_metrics(entry, key, record, with_weights)
        return record

    def _read_file(self, entry: Path, name: str, size: int | None = None) -> bytes:
        """The file's bytes; one larger than ``size`` (default: its kind's limit) is damage and is
        not read whole."""
        limit = SIZE_LIMITS[name] if size is None else size
        try:
            with open(entry / name, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise EntryDamaged(f"{name} is larger than the {limit} bytes " + ("the manifest says" if size is not None
                                                                                  else "allowed"))
            return data
        except OSError as e:
            if e.errno in _DENIED:
                raise CacheError(f"cannot read cache entry {entry.name[:12]} ({e.strerror}: {entry / name}); "
                                 "a cache shared by several users needs group read permission "
                                 "(chmod -R g+rwX, umask 002)") from e
            raise EntryDamaged(f"missing {name}") from e

    def _checked_json_files(self, entry: Path, key: str) -> tuple[dict, dict[str, bytes]]:
        """The entry's manifest (checked for ``key``) and its JSON files, each matching its checksum."""
        manifest = check_manifest(parse_json(self._read_file(entry, "manifest.json"), "manifest.json"), key)
        blobs = {}
        for name in JSON_FILES:
            blobs[name] = self._read_file(entry, name, manifest["sizes"][name])
            if sha256(blobs[name]) != manifest["files"][name]:
                raise EntryDamaged(f"checksum mismatch in {name}")
        return manifest, blobs

    def _read(self, entry: Path, key: str, with_weights: bool, config: RunConfig | None) -> RunRecord:
        if entry.name != key:
            raise EntryDamaged(f"entry {entry} is not named by its key")
        manifest, blobs = self._checked_json_files(entry, key)
        record = record_from_files(blobs, manifest, key, config)
        if WEIGHTS in manifest["files"]:
            # Every read checks the weights' size (a truncated copy); loading them checks everything.
            try:
                size = (entry / WEIGHTS).stat().st_size
            except OSError as e:
                raise EntryDamaged(f"missing {WEIGHTS}") from e
            if size != manifest["sizes"].get(WEIGHTS):
                raise EntryDamaged(f"{WEIGHTS} has {size} bytes, the manifest says {manifest['sizes'].get(WEIGHTS)}")
            if with_weights:
                data = self._read_file(entry, WEIGHTS, size)
                if sha256(data) != manifest["files"][WEIGHTS]:
                    raise EntryDamaged(f"checksum mismatch in {WEIGHTS}")
                record.state_dict = load_weights(data, f"run {key[:12]}")
        return record

    def has_weights(self, key: str) -> bool:
        try:
            manifest = check_manifest(parse_json(self._read_file(self.entry_dir(key), "manifest.json"),
                                                 "manifest.json"), key)
        except (OSError, CacheError):
            return False
        return WEIGHTS in manifest["files"]

    def _refresh_metrics(self, entry: Path, key: str, record: RunRecord, with_weights: bool) -> RunRecord:
        """Recompute metrics measured by other code from the stored weights (and store them)."""
        now = metrics_fingerprint()
        if not self.has_weights(key):
            self._warn_once(key, f"metrics of run {key[:12]} were computed by other measurement code "
                                 f"({record.metrics_fingerprint}, this code: {now}) and the entry holds no "
                                 "weights to recompute them from; they are served as stored")
            return record
        full = record if record.state_dict is not None else self.get(key, with_weights=True, current_metrics=False)
        if full is None:
            return record  # damaged weights: moved aside by the read above
        remeasure = self._remeasure
        started = time.perf_counter()
        try:
            metrics = remeasure(full, self.device, self.data_root)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            from claimbench.data.catalog import DatasetError  # torch-free

            if isinstance(e, DatasetError) or type(e).__name__ == "OutOfMemoryError":
                self._warn_once(key, f"metrics of run {key[:12]} are from other measurement code and could not "
                                     f"be recomputed here ({str(e).splitlines()[0]}); they are served as stored")
                return record
            # The weights do not fit the model of the entry's config (another width, missing
            # tensors): the entry cannot be what its manifest says.
            self._discard(entry, key, EntryDamaged(f"its weights do not fit its config ({type(e).__name__}: "
                                                   f"{str(e).splitlines()[0][:200] if str(e) else ''})"))
            return None
        except (OSError, MemoryError) as e:
            self._warn_once(key, f"metrics of run {key[:12]} are from other measurement code and could not "
                                 f"be recomputed here ({e}); they are served as stored")
            return record
        log.warning("run %s: measurement code changed (%s -> %s); metrics recomputed from the stored "
                    "weights in %.1f s, no retraining", key[:12], record.metrics_fingerprint, now,
                    time.perf_counter() - started)
        fresh = RunRecord(record.config, metrics, record.history, record.provenance,
                          full.state_dict if with_weights else None, now, metrics_recomputed=True,
                          # Every metric of claimbench's is measured here now; a trainer's own numbers
                          # cannot be, so they stay on the word of whoever wrote the entry.
                          origin=record.origin, verified=record.verified or not record.trainer_metric_names)
        if self.writable():
            manifest = check_manifest(parse_json(self._read_file(entry, "manifest.json"), "manifest.json"), key)
            files = entry_files(_with_state(fresh, full.state_dict), key, identities=manifest_identities(manifest))
            self.put_files(key, files)
        else:
            self._warn_once(self.root.as_posix(), f"the cache {self.root} is read-only: recomputed metrics "
                                                  "are used but not stored")
        return fresh

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s", message)

    def _discard(self, entry: Path, key: str, reason: Exception) -> None:
        """Report a damaged entry and leave it where it is: a read is never the moment to move
        what a user may still want (``cache verify --repair`` moves it on request)."""
        self._known_damaged.add(key)
        where = ("the cache is read-only, so it stays where it is" if not self.writable() else
                 f"it stays where it is (the run is trained again when next needed; {REPAIR_COMMAND} moves it aside)")
        self._warn_once(key, f"cache entry {key[:12]} is damaged ({reason}); it is not used and {where}")

    def _damaged(self, entry: Path, key: str) -> EntryDamaged | None:
        """Why the entry at ``entry`` is damaged (its weights' checksum included), or None if it
        reads (or cannot be read here)."""
        try:
            self._read(entry, key, with_weights=False, config=None)
            manifest = check_manifest(parse_json(self._read_file(entry, "manifest.json"), "manifest.json"), key)
            if WEIGHTS in manifest["files"]:
                digest = hashlib.sha256()
                with open(entry / WEIGHTS, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                if digest.hexdigest() != manifest["files"][WEIGHTS]:
                    raise EntryDamaged(f"checksum mismatch in {WEIGHTS}")
        except EntryDamaged as e:
            return e
        except (EntryNotReadableHere, OSError):
            return None
        return None

    def _move_aside(self, entry: Path, why: str) -> Path | None:
        """Rename ``entry`` into ``<root>/<why>/``; the target, or None if it was already gone.
        A failed move is a CacheError, never hidden."""
        target = self.root / why / f"{entry.name}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, target)
        except FileNotFoundError:
            if not entry.exists():
                return None
            raise CacheError(f"could not move cache entry {entry} to {target}")
        except OSError as e:
            raise CacheError(f"could not move cache entry {entry} aside to {target}: {e}") from e
        return target


def _refuse_unreadable(key: str, files: dict[str, bytes]) -> None:
    """Refuse to store what a read would refuse (a file over its size limit, JSON nested deeper
    than a read parses): stored, it would be judged damaged on every read and trained again."""
    for name, data in files.items():
        limit = SIZE_LIMITS.get(name)
        if limit is not None and len(data) > limit:
            raise CacheError(f"run {key[:12]} cannot be stored: its {name} has {len(data)} bytes, more than the "
                             f"{limit} a cache entry may hold (a trainer's history too large?)")
        if name.endswith(".json") and json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise CacheError(f"run {key[:12]} cannot be stored: its {name} nests deeper than {MAX_JSON_DEPTH} "
                             "levels, more than a cache entry may (a trainer's history nested too deep?)")


def _with_state(record: RunRecord, state: dict | None) -> RunRecord:
    return RunRecord(record.config, record.metrics, record.history, record.provenance, state,
                     record.metrics_fingerprint, origin=record.origin, verified=record.verified)


def checkpoint_path(store: RunStore, keys: list[str]) -> Path:
    """Where a group of runs keeps its training checkpoint until its records are stored."""
    digest = hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()[:24]
    return store.root / "partial" / f"{digest}.pt"


def ensure_runs(
    configs: list[RunConfig],
    store: RunStore,
    train_many: Callable[[list[RunConfig], Path], list[RunRecord]],
    keys: list[str] | None = None,
) -> list[tuple[RunRecord, bool]]:
    """The cached record of every config, training the missing ones together (once across
    processes: the per-key locks are taken in key order, so two processes never deadlock).

    ``train_many(configs, checkpoint)`` trains with a checkpoint file it may resume from; the file
    is removed once every record is stored. Returns (record, trained_now) per config. A cache
    that cannot store the missing runs (read-only) is a CacheError before anything trains.
    """
    keys = keys or [run_key(c) for c in configs]
    found = {k: store.get(k, config=c) for c, k in zip(configs, keys)}
    if all(r is not None for r in found.values()):
        return [(found[k], False) for k in keys]
    if not store.writable():
        missing = [c for c, k in zip(configs, keys) if found[k] is None]
        raise store.read_only_error(f"{len(missing)} run(s) it lacks (first: {missing[0].summary()})")
    locks = [store.lock(k) for k in sorted(set(keys))]
    for lock in locks:
        lock.acquire()
    try:
        # Another process may have finished some while we waited.
        found = {k: store.get(k, config=c) for c, k in zip(configs, keys)}
        missing = [(c, k) for c, k in zip(configs, keys) if found[k] is None]
        trained = set()
        if missing:
            ckpt = checkpoint_path(store, [k for _, k in missing])
            records = train_many([c for c, _ in missing], ckpt)
            for (_, k), record in zip(missing, records):
                store.put(k, record)
                found[k] = record
                trained.add(k)
            ckpt.unlink(missing_ok=True)
        return [(found[k], k in trained) for k in keys]
    finally:
        for lock in reversed(locks):
            lock.release()


def ensure_run(
    config: RunConfig,
    store: RunStore,
    train: Callable[[RunConfig, Path], RunRecord],
    key: str | None = None,
) -> tuple[RunRecord, bool]:
    """The cached record for ``config``, training it (once across processes) if needed."""
    return ensure_runs([config], store, lambda cs, ckpt: [train(c, ckpt) for c in cs], [key] if key else None)[0]
