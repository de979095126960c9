"""Content-addressed store of finished runs, safe to share, to read-only mount and to ship.

In:  a cache root (default: ``location.default_cache_root``), keys from ``keys.run_key`` and
     ``RunRecord`` values.
Out: the same records back without training, for as long as neither the config nor the
     behaviour of the training code changes; metrics brought up to date with the measurement
     code from the stored weights.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding the files ``claimbench.cache.entry``
describes (the records' JSON files, optionally the weights, and a manifest with the checksum and
size of each). It is written into a temporary directory and renamed into place, so a reader sees
a whole entry or none.

A read serves an entry only if it passes the entry format's checks (``entry.check_manifest``,
``entry.record_from_files``: the manifest is for the key asked for, the config hashes to it and
equals the requested config when one is given, every file served matches its checksum); model.pt
is checked by size on every read and by checksum whenever the weights are loaded. Anything else
is damage: the entry is reported and treated as missing, so it is retrained. Reads never move
entries: only ``claimbench cache verify --repair`` moves a damaged entry to ``<root>/corrupt/``,
and so does storing a freshly trained run under the key of a damaged one. An entry that cannot be
read here (a plug-in missing or of another version, a key of an older claimbench's scheme) is
listed with the reason and left in place; an entry trained under an older training identity is
simply never asked for (its key differs) and stays until ``claimbench cache prune``. An entry this
user may not read is an error, not damage. On a read-only cache a run the cache lacks is one clear
``CacheError`` (new runs cannot be stored there). A read carries where the entry came from
(trained here, imported, or found in the cache) into ``RunRecord.origin``/``verified``.

Temporary folders (``<root>/<xx>/.<key>-*``) are never entries. One left by a writer that was
killed is removed by the next write, or by ``claimbench cache verify --repair``, once it is older than
``STALE_TEMPORARY_S`` and its key's lock is free, so a writer still at work is never harmed.

Entries whose metrics were computed by other measurement code (``keys.metrics_fingerprint``)
have their metrics recomputed from the stored weights and the data on read (logged; the entry is
rewritten when the cache is writable). Entries without weights keep their metrics, with a
warning.

Sharing: directories and files get the permissions the umask allows
(``claimbench.cache.permissions``; not mkdtemp's 0700), lock files too, so a group sharing a cache
(umask 002) can read, write and lock each other's entries. ``ensure_runs`` holds a cross-process file lock per key, so processes that need the same run
train it once.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from claimbench.cache.entry import (
    JSON_FILES,
    KEY_PATTERN,
    SIZE_LIMITS,
    WEIGHTS,
    CacheError,
    EntryDamaged,
    EntryNotReadableHere,
    check_manifest,
    entry_files,
    load_weights,
    manifest_identities,
    parse_json,
    record_from_files,
    refuse_unreadable,
    sha256,
)
from claimbench.cache.keys import metrics_fingerprint, run_key
from claimbench.cache.location import default_cache_root
from claimbench.cache.permissions import umask
from claimbench.cache.record import RunRecord
from claimbench.config import RunConfig

log = logging.getLogger(__name__)

_DENIED = (errno.EACCES, errno.EPERM)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)

# A temporary entry folder this old whose key is not locked was left by a killed writer (a
# writer holds the key's lock while it writes, and writing an entry takes seconds).
STALE_TEMPORARY_S = 600


# The command that brings stored metrics up to date with the measurement code (it hands the store
# a ``remeasure``); reports and plans only read, and name it where metrics are stale.
REFRESH_COMMAND = "claimbench cache verify"
# The one command that moves damaged entries aside.
REPAIR_COMMAND = "claimbench cache verify --repair"


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
                      if KEY_PATTERN.fullmatch(key) and key[:2] == shard.name and (shard / key / "manifest.json").is_file())

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
                if KEY_PATTERN.fullmatch(key) and self.writable():
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
            refuse_unreadable(key, files)
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
