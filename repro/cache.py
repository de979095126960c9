"""Content-addressed store of finished runs.

In:  RunConfig (the key) and RunRecord (the value).
Out: the same RunRecord back, without training, for as long as neither the config nor the code
that affects training changes.

Key = sha256 over the canonical run-config JSON, the cache format version and a fingerprint of
the source files that change a result (config, data, models, optimizers, loop, metrics). Docs,
reports, claims and the CLI are not in it, so editing them keeps the cache.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding config.json, metrics.json,
history.json, provenance.json, model.pt and manifest.json (format version + sha256 of every
other file). It is written into a temporary directory and renamed into place, so a reader sees
a whole entry or none. Reads verify the manifest; a damaged entry is moved to
``<root>/corrupt/`` with a warning and treated as missing (and so retrained). ``ensure_run``
holds a cross-process file lock per key, so processes that need the same run train it once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from repro.config import RunConfig, run_config_from_dict
from repro.train.run import RunRecord

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
PACKAGE_DIR = Path(__file__).resolve().parent
# Source that changes what a run computes. Anything else (CLI, claims, reports) may change freely.
FINGERPRINTED = ("config.py", "data", "train", "measure")
JSON_FILES = ("config.json", "metrics.json", "history.json", "provenance.json")


class CacheError(RuntimeError):
    """A cache entry that cannot be trusted or a cache root that cannot be used."""


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        path = PACKAGE_DIR / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def run_key(config: RunConfig, fingerprint: str | None = None) -> str:
    fp = code_fingerprint() if fingerprint is None else fingerprint
    payload = f"repro-cache-v{CACHE_FORMAT}\n{fp}\n{config.canonical_json()}"
    return hashlib.sha256(payload.encode()).hexdigest()


def default_cache_root() -> Path:
    env = os.environ.get("REPRO_CACHE")
    return Path(env) if env else PACKAGE_DIR.parent / ".cache" / "runs"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RunStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_root()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lock(self, key: str) -> FileLock:
        lock_dir = self.root / "locks"
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cache root {self.root} is not writable: {e}") from e
        return FileLock(str(lock_dir / f"{key}.lock"))

    def contains(self, key: str) -> bool:
        return (self.entry_dir(key) / "manifest.json").is_file()

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("??/*/manifest.json"))

    # -- write --------------------------------------------------------------------------------

    def put(self, key: str, record: RunRecord) -> Path:
        files: dict[str, bytes] = {
            "config.json": json.dumps(record.config.to_dict(), indent=1, sort_keys=True).encode(),
            "metrics.json": json.dumps(record.metrics, indent=1, sort_keys=True).encode(),
            "history.json": json.dumps(record.history).encode(),
            "provenance.json": json.dumps({**record.provenance, "key": key}, indent=1, sort_keys=True).encode(),
        }
        if record.state_dict is not None:
            buffer = io.BytesIO()
            torch.save(record.state_dict, buffer)
            files["model.pt"] = buffer.getvalue()
        manifest = {"format": CACHE_FORMAT, "key": key, "files": {n: _sha256(b) for n, b in files.items()}}
        files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True).encode()

        final = self.entry_dir(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        except OSError as e:
            raise CacheError(f"cache root {self.root} is not writable: {e}") from e
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if final.exists():
            self._move_aside(final, "replaced")
        os.rename(tmp, final)
        return final

    # -- read ---------------------------------------------------------------------------------

    def get(self, key: str, with_weights: bool = False) -> RunRecord | None:
        """The stored record, or None if absent. A damaged entry is moved aside (-> None)."""
        entry = self.entry_dir(key)
        if not entry.is_dir():
            return None
        try:
            return self._read(entry, key, with_weights)
        except CacheError as e:
            log.warning("cache entry %s is damaged (%s); moved aside, it will be retrained", key[:12], e)
            self._move_aside(entry, "corrupt")
            return None

    def _read(self, entry: Path, key: str, with_weights: bool) -> RunRecord:
        try:
            manifest = json.loads((entry / "manifest.json").read_bytes())
        except (OSError, ValueError) as e:
            raise CacheError(f"unreadable manifest: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
            raise CacheError(f"cache format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                             f" is not {CACHE_FORMAT}")
        blobs = {}
        for name, expected in manifest.get("files", {}).items():
            if name not in JSON_FILES and not (with_weights and name == "model.pt"):
                continue
            try:
                data = (entry / name).read_bytes()
            except OSError as e:
                raise CacheError(f"missing {name}") from e
            if _sha256(data) != expected:
                raise CacheError(f"checksum mismatch in {name}")
            blobs[name] = data
        missing = [n for n in JSON_FILES if n not in blobs]
        if missing:
            raise CacheError(f"manifest lacks {', '.join(missing)}")
        parsed = {n: json.loads(blobs[n]) for n in JSON_FILES}
        state = None
        if "model.pt" in blobs:
            state = torch.load(io.BytesIO(blobs["model.pt"]), weights_only=True)
        return RunRecord(
            run_config_from_dict(parsed["config.json"]),
            parsed["metrics.json"],
            parsed["history.json"],
            parsed["provenance.json"],
            state,
        )

    def _move_aside(self, entry: Path, why: str) -> None:
        target = self.root / why / f"{entry.name}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(entry, target)
        except OSError:
            shutil.rmtree(entry, ignore_errors=True)


def checkpoint_path(store: "RunStore", keys: list[str]) -> Path:
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
    is removed once every record is stored. Returns (record, trained_now) per config.
    """
    keys = keys or [run_key(c) for c in configs]
    found = {k: store.get(k) for k in keys}
    if all(r is not None for r in found.values()):
        return [(found[k], False) for k in keys]
    locks = [store.lock(k) for k in sorted(set(keys))]
    for lock in locks:
        lock.acquire()
    try:
        # Another process may have finished some while we waited.
        found = {k: store.get(k) for k in keys}
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
