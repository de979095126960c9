"""Content-addressed store of finished runs, safe to share, to read-only mount and to ship.

In:  a cache root (default ``$REPRO_CACHE`` or ``.cache/runs``), keys from ``keys.run_key`` and
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
to that key (and equals the requested config, when one is given), and every file served matches
its checksum; model.pt is checked by size on every read and by checksum whenever the weights are
loaded (``torch.load(weights_only=True, map_location="cpu")``: no pickled code runs). Anything
else is damage: the entry is moved to ``<root>/corrupt/`` (the move checked, the message saying
where it went) and treated as missing, so it is retrained. An entry this user may not read is an
error, not damage. On a read-only cache nothing is moved: a damaged entry is reported and not
used, and a run the cache lacks is one clear ``CacheError`` (new runs cannot be stored there).

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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from repro.cache.keys import CACHE_FORMAT, PACKAGE_DIR, metrics_fingerprint, run_key, training_fingerprint
from repro.cache.record import RunRecord
from repro.config import ConfigError, RunConfig, run_config_from_dict

log = logging.getLogger(__name__)

JSON_FILES = ("config.json", "metrics.json", "history.json", "provenance.json")
WEIGHTS = "model.pt"
ENTRY_FILES = (*JSON_FILES, WEIGHTS)
_DENIED = (errno.EACCES, errno.EPERM)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class CacheError(RuntimeError):
    """A cache entry that cannot be trusted or a cache root that cannot be used."""


class EntryDamaged(CacheError):
    """An entry whose files do not match its manifest or its key."""


def default_cache_root() -> Path:
    env = os.environ.get("REPRO_CACHE")
    return Path(env) if env else PACKAGE_DIR.parent / ".cache" / "runs"


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
    return json.dumps(value, indent=indent, sort_keys=True).encode()


def state_dict_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_weights(data: bytes, where: str) -> dict:
    """A state dict from model.pt bytes, without running pickled code; CacheError otherwise."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad input
        raise EntryDamaged(f"{where}: model.pt is not a plain tensor state dict ({str(e).splitlines()[0]})") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise EntryDamaged(f"{where}: model.pt is not a name -> tensor state dict")
    return state


def entry_files(record: RunRecord, key: str, with_weights: bool = True) -> dict[str, bytes]:
    """The files of an entry for ``record`` under ``key``, manifest included."""
    files: dict[str, bytes] = {
        "config.json": _json_bytes(record.config.to_dict()),
        "metrics.json": _json_bytes(record.metrics),
        "history.json": _json_bytes(record.history, indent=None),
        "provenance.json": _json_bytes({**record.provenance, "key": key}),
    }
    if with_weights and record.state_dict is not None:
        files[WEIGHTS] = state_dict_bytes(record.state_dict)
    return with_manifest(files, key, record.metrics_fingerprint or metrics_fingerprint())


def with_manifest(files: dict[str, bytes], key: str, metrics_fp: str,
                  training_fp: str | None = None) -> dict[str, bytes]:
    files = {n: b for n, b in files.items() if n != "manifest.json"}
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "training_fingerprint": training_fp or training_fingerprint(),
        "metrics_fingerprint": metrics_fp,
        "files": {n: sha256(b) for n, b in files.items()},
        "sizes": {n: len(b) for n, b in files.items()},
    }
    return {**files, "manifest.json": _json_bytes(manifest)}


def check_manifest(manifest: Any, key: str) -> dict:
    """The manifest if it is one of this format for ``key``; EntryDamaged otherwise."""
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else "?"
        raise EntryDamaged(f"cache format {found} is not {CACHE_FORMAT}")
    if manifest.get("key") != key:
        raise EntryDamaged(f"manifest is for key {str(manifest.get('key'))[:12]}, not {key[:12]}")
    files = manifest.get("files")
    if not isinstance(files, dict) or any(n not in ENTRY_FILES for n in files) \
            or any(n not in files for n in JSON_FILES):
        raise EntryDamaged("manifest does not list the entry's files")
    if not isinstance(manifest.get("training_fingerprint"), str) or not isinstance(manifest.get("sizes"), dict):
        raise EntryDamaged("manifest lacks fingerprints or sizes")
    return manifest


def record_from_files(blobs: dict[str, bytes], manifest: dict, key: str,
                      config: RunConfig | None = None) -> RunRecord:
    """Parse verified JSON files; the config must hash to ``key`` (and equal ``config``)."""
    try:
        parsed = {n: json.loads(blobs[n]) for n in JSON_FILES}
        stored = run_config_from_dict(parsed["config.json"])
    except (ValueError, ConfigError, TypeError) as e:
        raise EntryDamaged(f"unreadable config or metrics: {e}") from e
    if run_key(stored, manifest["training_fingerprint"]) != key:
        raise EntryDamaged("config.json does not belong to this key")
    if config is not None and stored != config:
        raise EntryDamaged("config.json is not the requested config")
    return RunRecord(stored, parsed["metrics.json"], parsed["history.json"], parsed["provenance.json"],
                     None, manifest.get("metrics_fingerprint"))


class RunStore:
    def __init__(self, root: Path | None = None, data_root: Path | None = None, device: str = "auto",
                 remeasure: Callable[[RunRecord, str, Path | None], dict] | None = None):
        """``data_root``/``device``: where metrics are recomputed when the measurement code changed;
        ``remeasure(record_with_weights, device, data_root) -> metrics`` (default: the training
        layer's ``remeasure``, imported only when needed)."""
        self.root = Path(root) if root is not None else default_cache_root()
        self.data_root, self.device, self._remeasure = data_root, device, remeasure
        self._warned: set[str] = set()

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

    def read_only_error(self, what: str) -> CacheError:
        return CacheError(f"the cache {self.root} is read-only: it serves the runs it holds, but {what} "
                          "cannot be stored there; point --cache-dir (or REPRO_CACHE) at a writable "
                          "directory, or add the runs with `repro cache import`")

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
        return (self.entry_dir(key) / "manifest.json").is_file()

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("??/*/manifest.json"))

    # -- write --------------------------------------------------------------------------------

    def put(self, key: str, record: RunRecord) -> Path:
        return self.put_files(key, entry_files(record, key))

    def put_files(self, key: str, files: dict[str, bytes]) -> Path:
        """Store an entry's files (manifest included) atomically under the key's lock."""
        if not self.writable():
            raise self.read_only_error(f"run {key[:12]}")
        final = self.entry_dir(key)
        with self.lock(key):
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
                os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700: others sharing the cache could not read it
                for name, data in files.items():
                    with open(tmp / name, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as e:
                raise CacheError(f"cache root {self.root} is not writable: {e}") from e
            replaced = self._move_aside(final, "replaced") if final.exists() else None
            try:
                os.rename(tmp, final)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CacheError(f"could not store run {key[:12]} at {final}: {e}") from e
            if replaced is not None:
                # Superseded by the entry just stored (same key): no copy of the weights to keep.
                shutil.rmtree(replaced, ignore_errors=True)
        return final

    # -- read ---------------------------------------------------------------------------------

    def get(self, key: str, with_weights: bool = False, config: RunConfig | None = None,
            current_metrics: bool = True) -> RunRecord | None:
        """The stored record, or None if absent. A damaged entry (or one that is not ``config``'s)
        is moved aside (-> None). With ``current_metrics``, metrics computed by other measurement
        code are recomputed from the stored weights."""
        entry = self.entry_dir(key)
        try:
            if not entry.is_dir():
                return None
        except PermissionError as e:
            raise CacheError(f"cannot read the cache {self.root}: {e}") from e
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
        if current_metrics and record.metrics_fingerprint != metrics_fingerprint() and not record.diverged:
            record = self._refresh_metrics(entry, key, record, with_weights)
        return record

    def _read_file(self, entry: Path, name: str) -> bytes:
        try:
            return (entry / name).read_bytes()
        except OSError as e:
            if e.errno in _DENIED:
                raise CacheError(f"cannot read cache entry {entry.name[:12]} ({e.strerror}: {entry / name}); "
                                 "a cache shared by several users needs group read permission "
                                 "(chmod -R g+rwX, umask 002)") from e
            raise EntryDamaged(f"missing {name}") from e

    def _read(self, entry: Path, key: str, with_weights: bool, config: RunConfig | None) -> RunRecord:
        if entry.name != key:
            raise EntryDamaged(f"entry {entry} is not named by its key")
        try:
            manifest = json.loads(self._read_file(entry, "manifest.json"))
        except ValueError as e:
            raise EntryDamaged(f"unreadable manifest: {e}") from e
        manifest = check_manifest(manifest, key)
        blobs = {}
        for name in JSON_FILES:
            blobs[name] = self._read_file(entry, name)
            if sha256(blobs[name]) != manifest["files"][name]:
                raise EntryDamaged(f"checksum mismatch in {name}")
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
                data = self._read_file(entry, WEIGHTS)
                if sha256(data) != manifest["files"][WEIGHTS]:
                    raise EntryDamaged(f"checksum mismatch in {WEIGHTS}")
                record.state_dict = load_weights(data, f"run {key[:12]}")
        return record

    def has_weights(self, key: str) -> bool:
        try:
            manifest = json.loads((self.entry_dir(key) / "manifest.json").read_bytes())
            return WEIGHTS in manifest.get("files", {})
        except (OSError, ValueError, AttributeError):
            return False

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
        if remeasure is None:
            from repro.train.run import remeasure
        started = time.perf_counter()
        try:
            metrics = remeasure(full, self.device, self.data_root)
        except (OSError, MemoryError) as e:
            self._warn_once(key, f"metrics of run {key[:12]} are from other measurement code and could not "
                                 f"be recomputed here ({e}); they are served as stored")
            return record
        except Exception as e:
            from repro.data.base import DatasetError

            if not isinstance(e, DatasetError):
                raise
            self._warn_once(key, f"metrics of run {key[:12]} are from other measurement code and could not "
                                 f"be recomputed here ({e}); they are served as stored")
            return record
        log.warning("run %s: measurement code changed (%s -> %s); metrics recomputed from the stored "
                    "weights in %.1f s, no retraining", key[:12], record.metrics_fingerprint, now,
                    time.perf_counter() - started)
        fresh = RunRecord(record.config, metrics, record.history, record.provenance,
                          full.state_dict if with_weights else None, now, metrics_recomputed=True)
        if self.writable():
            files = entry_files(_with_state(fresh, full.state_dict), key)
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
        if not self.writable():
            self._warn_once(key, f"cache entry {key[:12]} is damaged ({reason}); the cache is read-only, so "
                                 "it stays where it is and is not used")
            return
        target = self._move_aside(entry, "corrupt")
        if target is not None:
            log.warning("cache entry %s is damaged (%s); moved to %s (the run is trained again when next "
                        "needed)", key[:12], reason, target)

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
                     record.metrics_fingerprint)


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
