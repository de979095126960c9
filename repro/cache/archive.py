"""Listing, checking and shipping cache entries.

In:  a ``RunStore``; for export a list of keys (default: every entry) and whether to include
     weights; for import an archive file.
Out: ``entry_infos`` (one ``EntryInfo`` per entry: key, run summary, fingerprints, weights,
     size), ``verify_store`` (key -> problem for every entry that fails a full check, weights
     included), ``export_entries`` (a tar archive, gzip-compressed when the name ends in .gz/.tgz)
     and ``import_archive`` (checks every entry as a read does, then stores it atomically).

Archive layout: ``repro-archive.json`` first (archive format, the exporting code's training
fingerprint, the keys), then ``entries/<key>/<file>`` for every file of each entry. Import reads
only regular members with those exact names (no paths of its own choosing, no links), and
rejects an entry whose manifest, checksums or config do not match its key, so an archive cannot
plant another run's numbers under a key. Entries trained by other training code are stored but
are not served for runs keyed under this code; import says so.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from repro.cache.keys import CACHE_FORMAT, metrics_fingerprint, training_fingerprint
from repro.cache.store import (
    ENTRY_FILES,
    JSON_FILES,
    WEIGHTS,
    CacheError,
    EntryDamaged,
    RunStore,
    check_manifest,
    load_weights,
    record_from_files,
    sha256,
    with_manifest,
)

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = 1
ARCHIVE_MANIFEST = "repro-archive.json"
_MEMBER = re.compile(r"entries/([0-9a-f]{64})/([a-z.]+)")


@dataclass
class EntryInfo:
    key: str
    summary: str
    training_fingerprint: str
    metrics_fingerprint: str
    weights: bool
    bytes: int
    finished_at: str = ""
    problem: str | None = None

    @property
    def current(self) -> bool:
        """Trained by this training code (so servable), metrics from this measurement code."""
        return self.training_fingerprint == training_fingerprint()

    def to_dict(self) -> dict:
        return {"key": self.key, "summary": self.summary, "training_fingerprint": self.training_fingerprint,
                "metrics_fingerprint": self.metrics_fingerprint, "weights": self.weights, "bytes": self.bytes,
                "finished_at": self.finished_at, "current_training_code": self.current,
                "current_metrics_code": self.metrics_fingerprint == metrics_fingerprint(),
                "problem": self.problem}


def _read_entry(store: RunStore, key: str, with_weights: bool) -> tuple[dict[str, bytes], dict]:
    """Every file of an entry, checked as a read checks it (weights loaded when asked)."""
    entry = store.entry_dir(key)
    try:
        manifest = check_manifest(json.loads((entry / "manifest.json").read_bytes()), key)
    except (OSError, ValueError) as e:
        raise EntryDamaged(f"unreadable manifest: {e}") from e
    blobs = {}
    for name, expected in manifest["files"].items():
        if name == WEIGHTS and not with_weights:
            continue
        try:
            blobs[name] = (entry / name).read_bytes()
        except OSError as e:
            raise EntryDamaged(f"cannot read {name}: {e.strerror}") from e
        if sha256(blobs[name]) != expected:
            raise EntryDamaged(f"checksum mismatch in {name}")
    record_from_files(blobs, manifest, key)
    if WEIGHTS in blobs:
        load_weights(blobs[WEIGHTS], f"run {key[:12]}")
    return blobs, manifest


def entry_infos(store: RunStore) -> list[EntryInfo]:
    """Every entry, from its manifest and JSON files (checksummed); weights checked by size."""
    infos = []
    for key in store.keys():
        entry = store.entry_dir(key)
        try:
            manifest = json.loads((entry / "manifest.json").read_bytes())
            info = EntryInfo(key, "?", str(manifest.get("training_fingerprint")),
                             str(manifest.get("metrics_fingerprint")), WEIGHTS in manifest.get("files", {}),
                             sum(manifest.get("sizes", {}).values()))
            record = store._read(entry, key, with_weights=False, config=None)
            info.summary = record.config.summary()
            info.finished_at = str(record.provenance.get("finished_at", ""))
        except (OSError, ValueError, AttributeError) as e:
            info = EntryInfo(key, "?", "?", "?", False, 0, problem=f"unreadable manifest: {e}")
        except CacheError as e:
            info.problem = str(e)
        infos.append(info)
    return infos


def verify_store(store: RunStore) -> dict[str, str]:
    """key -> problem for every entry failing the full check (every checksum, weights loaded)."""
    problems = {}
    for key in store.keys():
        try:
            _read_entry(store, key, with_weights=True)
        except CacheError as e:
            problems[key] = str(e)
    return problems


@dataclass
class ExportResult:
    exported: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # asked for, not in the cache
    damaged: dict[str, str] = field(default_factory=dict)  # key -> problem (not exported)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def export_entries(store: RunStore, path: Path, keys: list[str] | None = None,
                   weights: bool = True) -> ExportResult:
    """Write the entries ``keys`` (default: all) into one archive at ``path``; each entry is
    checked in full first and a damaged one is left out (and reported)."""
    result = ExportResult()
    wanted = store.keys() if keys is None else list(dict.fromkeys(keys))
    mode = "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"
    tmp = path.with_name(f".{path.name}.partial")
    with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
        present = [k for k in wanted if store.contains(k)]
        result.missing = [k for k in wanted if not store.contains(k)]
        header = {"format": ARCHIVE_FORMAT, "cache_format": CACHE_FORMAT,
                  "training_fingerprint": training_fingerprint(), "weights": weights,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        entries: dict[str, dict[str, bytes]] = {}
        for key in present:
            try:
                blobs, manifest = _read_entry(store, key, with_weights=weights)
            except CacheError as e:
                result.damaged[key] = str(e)
                continue
            if not weights and WEIGHTS in manifest["files"]:
                blobs = with_manifest(blobs, key, manifest["metrics_fingerprint"], manifest["training_fingerprint"])
            else:
                blobs["manifest.json"] = (store.entry_dir(key) / "manifest.json").read_bytes()
            entries[key] = blobs
        _add(tar, ARCHIVE_MANIFEST, json.dumps({**header, "keys": sorted(entries)}, indent=1).encode())
        for key in sorted(entries):
            for name, data in sorted(entries[key].items()):
                _add(tar, f"entries/{key}/{name}", data)
            result.exported.append(key)
    tmp.replace(path)
    return result


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # a valid entry was already there
    rejected: dict[str, str] = field(default_factory=dict)  # key or member -> why
    other_code: list[str] = field(default_factory=list)  # trained by other training code
    archive_fingerprint: str | None = None


def _read_members(tar: tarfile.TarFile, path: Path, result: ImportResult) -> dict[str, dict[str, bytes]]:
    """key -> {file name: bytes} from the archive's entry members; anything else is rejected."""
    pending: dict[str, dict[str, bytes]] = {}
    seen_header = False
    for member in tar:
        if member.name == ARCHIVE_MANIFEST and member.isfile():
            try:
                header = json.loads(tar.extractfile(member).read())
            except ValueError as e:
                raise CacheError(f"{path}: unreadable {ARCHIVE_MANIFEST} ({e})") from e
            if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
                found = header.get("format") if isinstance(header, dict) else "?"
                raise CacheError(f"{path}: archive format {found} is not {ARCHIVE_FORMAT}")
            result.archive_fingerprint = header.get("training_fingerprint")
            seen_header = True
            continue
        m = _MEMBER.fullmatch(member.name)
        if not m or not member.isfile() or m.group(2) not in (*ENTRY_FILES, "manifest.json"):
            result.rejected[member.name] = "not an entry file of a repro archive"
            continue
        pending.setdefault(m.group(1), {})[m.group(2)] = tar.extractfile(member).read()
    if not seen_header:
        raise CacheError(f"{path}: not a repro cache archive (no {ARCHIVE_MANIFEST})")
    return pending


def _check_blobs(blobs: dict[str, bytes], key: str) -> dict:
    """The entry's manifest, if its files are whole and belong to ``key`` (as a read checks)."""
    try:
        manifest = check_manifest(json.loads(blobs.get("manifest.json", b"null")), key)
    except ValueError as e:
        raise EntryDamaged(f"unreadable manifest: {e}") from e
    for name, expected in manifest["files"].items():
        if name not in blobs:
            raise EntryDamaged(f"archive lacks {name}")
        if sha256(blobs[name]) != expected:
            raise EntryDamaged(f"checksum mismatch in {name}")
    extra = set(blobs) - set(manifest["files"]) - {"manifest.json"}
    if extra:
        raise EntryDamaged(f"files not in the manifest: {', '.join(sorted(extra))}")
    record_from_files(blobs, manifest, key)
    if WEIGHTS in blobs:
        load_weights(blobs[WEIGHTS], f"run {key[:12]}")
    return manifest


def import_archive(store: RunStore, path: Path) -> ImportResult:
    """Check and add every entry of the archive at ``path`` to ``store``."""
    result = ImportResult()
    if not store.writable():
        raise store.read_only_error("imported runs")
    try:
        with tarfile.open(path, "r:*") as tar:
            pending = _read_members(tar, path, result)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise CacheError(f"{path}: not a readable repro cache archive ({e})") from e
    for key, blobs in sorted(pending.items()):
        try:
            manifest = _check_blobs(blobs, key)
        except CacheError as e:
            result.rejected[key] = str(e)
            continue
        if manifest["training_fingerprint"] != training_fingerprint():
            result.other_code.append(key)
        if store.contains(key) and store.get(key, current_metrics=False) is not None \
                and (WEIGHTS not in blobs or store.has_weights(key)):
            result.present.append(key)
            continue
        store.put_files(key, blobs)
        result.added.append(key)
    return result


__all__ = ["EntryInfo", "ExportResult", "ImportResult", "JSON_FILES", "entry_infos", "export_entries",
           "import_archive", "verify_store"]
