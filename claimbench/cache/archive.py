"""Listing, checking and shipping cache entries.

In:  a ``RunStore``; for export a list of keys (default: every entry) and whether to include
     weights; for import an archive file and, to prove what it brings, a ``remeasure`` callable
     (``remeasure(record_with_weights, device, data_root) -> metrics``, handed in by the caller so
     that this package never imports training or measurement code).
Out: ``entry_infos`` (one ``EntryInfo`` per entry: key, run summary, fingerprints, weights,
     size, origin), ``verify_store`` (every entry checked in full; imported entries not yet
     verified are re-measured when the data is here), ``export_entries`` (a tar archive,
     gzip-compressed when the name ends in .gz/.tgz) and ``import_archive``.

Archive layout: ``claimbench-archive.json`` first (archive format, the exporting code's training
fingerprint, the keys), then ``entries/<key>/<file>`` for every file of each entry, each entry's
files together. Import trusts nothing in it:

- Members are read in two passes over the archive, one entry's files in memory at a time. The
  first pass reads only headers and the small manifests; a member larger than any file of its
  kind may be (``entry.SIZE_LIMITS``) refuses the whole archive before its data is decompressed.
  The second pass reads each file in chunks, stopping past the size its manifest declares, so a
  gzip bomb costs neither memory nor much time. Only regular members with exactly the names above
  are read (no paths of the archive's choosing, no links); any other is reported, escaped.
- Every JSON file is checked for size and nesting depth before it is parsed and for its shape
  after (``entry.record_from_files``), every file against the manifest's checksum and size, the
  config against the key.
- Checksums only prove that the files are the ones the archive's author listed, not that the
  numbers came from training. An entry with weights is re-measured from them on the data here
  and rejected if its metrics differ beyond ``remeasured.METRICS_RTOL``; where the data is absent
  it is stored as imported and unverified until ``claimbench cache verify`` can measure it. An
  entry without weights stays imported and unverified: reports and pytest lines say so beside its
  numbers.
- An import never replaces an entry the cache already holds (it says which it skipped).

Entries trained by other training code are stored (unverified: this code cannot re-measure what
another model code built) but are not served for runs keyed under this code; import says so.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import logging
import lzma
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from claimbench.cache.entry import (
    ENTRY_FILES,
    KEY_PATTERN,
    SIZE_LIMITS,
    WEIGHTS,
    CacheError,
    EntryDamaged,
    EntryNotReadableHere,
    check_manifest,
    entry_origin,
    load_weights,
    manifest_identities,
    parse_json,
    record_from_files,
    sha256,
    with_manifest,
)
from claimbench.cache.keys import CACHE_FORMAT, metrics_fingerprint, training_code_fingerprint, training_identity
from claimbench.cache.remeasured import Remeasure, metrics_file, now, remeasured
from claimbench.cache.store import RunStore

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = 1
ARCHIVE_MANIFEST = "claimbench-archive.json"
_MEMBER = re.compile(rf"entries/({KEY_PATTERN.pattern})/([a-z.]+)")
# An archive of every entry of a large cache has ~7 members per entry; far more is not one of ours
# (and each member's header is kept in memory while the archive is read).
MAX_MEMBERS = 200_000
# A member that is not an entry file is skipped and reported, up to this size; a larger one
# refuses the archive (skipping it would mean decompressing it).
STRAY_MEMBER_LIMIT = 1 << 20
_CHUNK = 1 << 20


def shown(name: str) -> str:
    """A name from an archive as it may be printed: control characters and other non-ASCII
    escaped, whole, in quotes unless it is plain."""
    return name if re.fullmatch(r"[\w./+-]+", name, re.ASCII) else ascii(name)


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
    origin: str = "local"
    verified: bool = True
    training_code: str | None = None  # fingerprint of the training code's text (None: not recorded)

    @property
    def current(self) -> bool:
        """Trained under this claimbench's training identity (so servable when its config is asked for)."""
        return self.training_fingerprint == training_identity()

    @property
    def same_code(self) -> bool:
        """Trained by the very text of this training code (not only the same semantics)."""
        return self.training_code == training_code_fingerprint()

    def to_dict(self) -> dict:
        return {"key": self.key, "summary": self.summary, "training_identity": self.training_fingerprint,
                "training_code": self.training_code, "same_training_code": self.same_code,
                "metrics_fingerprint": self.metrics_fingerprint, "weights": self.weights, "bytes": self.bytes,
                "finished_at": self.finished_at, "current_training_identity": self.current,
                "current_metrics_code": self.metrics_fingerprint == metrics_fingerprint(),
                "origin": self.origin, "verified": self.verified, "problem": self.problem}


def _read_manifest(store: RunStore, key: str) -> dict:
    return check_manifest(parse_json(store._read_file(store.entry_dir(key), "manifest.json"), "manifest.json"), key)


def _read_entry(store: RunStore, key: str, with_weights: bool) -> tuple[dict[str, bytes], dict]:
    """Every file of an entry, checked as a read checks it (sizes and checksums; weights loaded
    when asked)."""
    entry = store.entry_dir(key)
    manifest = _read_manifest(store, key)
    blobs = {}
    for name, expected in manifest["files"].items():
        if name == WEIGHTS and not with_weights:
            try:
                size = (entry / name).stat().st_size
            except OSError as e:
                raise EntryDamaged(f"cannot read {name}: {e.strerror}") from e
            if size != manifest["sizes"][name]:
                raise EntryDamaged(f"{name} has {size} bytes, the manifest says {manifest['sizes'][name]}")
            continue
        blobs[name] = store._read_file(entry, name, manifest["sizes"][name])
        if len(blobs[name]) != manifest["sizes"][name]:
            raise EntryDamaged(f"{name} has {len(blobs[name])} bytes, the manifest says {manifest['sizes'][name]}")
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
        try:
            manifest = _read_manifest(store, key)
        except CacheError as e:
            if not isinstance(e, EntryDamaged):
                raise  # unreadable by this user: an error, not a damaged entry
            infos.append(EntryInfo(key, "?", "?", "?", False, 0, problem=str(e)))
            continue
        origin, verified = entry_origin(manifest, key)
        info = EntryInfo(key, "?", manifest["training_fingerprint"], str(manifest.get("metrics_fingerprint")),
                         WEIGHTS in manifest["files"], sum(manifest["sizes"].values()),
                         origin=origin, verified=verified,
                         training_code=manifest.get("training_code"))
        try:
            record = store._read(store.entry_dir(key), key, with_weights=False, config=None)
            info.summary = record.config.summary()
            info.finished_at = str(record.provenance.get("finished_at", ""))
        except EntryDamaged as e:
            info.problem = str(e)
        except EntryNotReadableHere as e:
            info.problem = f"not readable here, left in place: {e}"
        infos.append(info)
    return infos


def prunable(infos: list[EntryInfo]) -> list[EntryInfo]:
    """Entries trained under another training identity than this claimbench's: never served, kept
    until the user prunes them (a damaged or unreadable entry is not decided here)."""
    return [i for i in infos if not i.current and i.problem is None and i.training_fingerprint != "?"]


def prune_entries(store: RunStore, infos: list[EntryInfo]) -> list[str]:
    """Remove the entries ``infos`` names (each under its key's lock); the keys removed."""
    removed = []
    for info in infos:
        with store.lock(info.key):
            target = store._move_aside(store.entry_dir(info.key), "pruned")
            if target is not None:
                shutil.rmtree(target, ignore_errors=True)
                removed.append(info.key)
    return removed


# -- verify ------------------------------------------------------------------------------------

@dataclass
class VerifyResult:
    checked: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # key -> problem
    verified_now: list[str] = field(default_factory=list)  # imported entries re-measured and confirmed
    unverified: dict[str, str] = field(default_factory=dict)  # imported entries still unverified -> why
    moved: dict[str, Path] = field(default_factory=dict)  # damaged entries moved aside (--repair)
    removed_temporaries: list[Path] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)  # metrics from older code, recomputed from weights


def verify_store(store: RunStore, remeasure: Remeasure | None = None, repair: bool = False) -> VerifyResult:
    """Check every entry in full (every checksum, weights loaded). Imported entries not yet
    verified are re-measured from their weights (with ``remeasure``, where the data is here):
    confirmed ones are marked verified, contradicted ones are damaged; entries whose metrics came
    from older measurement code are recomputed from their weights. ``repair`` moves damaged
    entries aside and removes temporary folders left by killed writers."""
    result = VerifyResult()
    if repair:
        if not store.writable():
            raise store.read_only_error("repairs")
        result.removed_temporaries = store.remove_stale_temporaries()
    for key in store.keys():
        result.checked += 1
        try:
            blobs, manifest = _read_entry(store, key, with_weights=True)
            origin, verified = entry_origin(manifest, key)
            if not verified:
                try:
                    why = _verify_import(store, key, blobs, manifest, remeasure)
                except EntryDamaged as e:
                    _mark_contradicted(store, key, blobs, manifest, str(e))
                    raise
                if why is None:
                    result.verified_now.append(key)
                else:
                    result.unverified[key] = why
            elif remeasure is not None and manifest.get("metrics_fingerprint") != metrics_fingerprint() \
                    and WEIGHTS in blobs and store.writable():
                # Metrics from older measurement code: the one command that refreshes them.
                record = RunStore(store.root, store.data_root, store.device, remeasure=remeasure).get(key)
                if record is not None and record.metrics_recomputed:
                    result.refreshed.append(key)
        except EntryDamaged as e:
            result.damaged[key] = str(e)
        except EntryNotReadableHere as e:
            result.unverified[key] = f"not re-measured here ({e})"
    if repair:
        for key, problem in result.damaged.items():
            target = store._move_aside(store.entry_dir(key), "corrupt")
            if target is not None:
                result.moved[key] = target
    return result


def _verify_import(store: RunStore, key: str, blobs: dict[str, bytes], manifest: dict,
                   remeasure: Remeasure | None) -> str | None:
    """Re-measure a stored, unverified import; None once confirmed (and marked so), else why it
    stays unverified. EntryDamaged when its weights contradict its metrics."""
    record = record_from_files(blobs, manifest, key)
    state = load_weights(blobs[WEIGHTS], f"run {key[:12]}") if WEIGHTS in blobs else None
    metrics, why = remeasured(store, key, record, state, manifest, remeasure)
    if why is not None:
        return why
    if not store.writable():
        return "confirmed by re-measuring, but the cache is read-only so it stays marked unverified"
    files = with_manifest({n: b for n, b in blobs.items() if n != "manifest.json"} | metrics_file(metrics, record),
                          key, metrics_fingerprint(),
                          # An entry found in the cache (not trained here) is from now on an import.
                          origin={**(manifest.get("origin") or {"source": "imported", "found_in_cache": True}),
                                  "verified": True, "verified_at": now()},
                          **manifest_identities(manifest))
    store.put_files(key, files)
    return None


def _mark_contradicted(store: RunStore, key: str, blobs: dict[str, bytes], manifest: dict, why: str) -> None:
    """Record in the entry's manifest that its weights contradict its numbers, so no read serves
    it again (it stays where it is, for its owner, until ``--repair`` moves it aside)."""
    if not store.writable():
        return
    origin = {**(manifest.get("origin") or {"source": "imported", "found_in_cache": True}), "verified": False,
              "contradicted": why[:500]}
    files = with_manifest({n: b for n, b in blobs.items() if n != "manifest.json"}, key,
                          manifest.get("metrics_fingerprint") or metrics_fingerprint(), origin=origin,
                          **manifest_identities(manifest))
    store.put_files(key, files)


# -- export ------------------------------------------------------------------------------------

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
    try:
        _write_archive(store, tmp, mode, wanted, weights, result)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half archive left beside the one asked for
        raise
    tmp.replace(path)
    return result


def _write_archive(store: RunStore, tmp: Path, mode: str, wanted: list[str], weights: bool,
                   result: ExportResult) -> None:
    with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
        present = [k for k in wanted if store.contains(k)]
        result.missing = [k for k in wanted if not store.contains(k)]
        header = {"format": ARCHIVE_FORMAT, "cache_format": CACHE_FORMAT,
                  "training_fingerprint": training_identity(), "weights": weights,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        entries: dict[str, dict[str, bytes]] = {}
        for key in present:
            try:
                blobs, manifest = _read_entry(store, key, with_weights=weights)
            except EntryDamaged as e:
                result.damaged[key] = str(e)
                continue
            except EntryNotReadableHere as e:
                result.damaged[key] = f"not readable here ({e})"
                continue
            if not weights and WEIGHTS in manifest["files"]:
                # Rewritten without its weights: it keeps where it came from, and only an entry
                # trained here is marked so (an import or a found entry must not come out "local").
                origin, _ = entry_origin(manifest, key)
                kept = None if origin == "local" else {
                    **(manifest.get("origin") or {"source": "imported", "found_in_cache": True}), "verified": False}
                blobs = with_manifest(blobs, key, manifest["metrics_fingerprint"], origin=kept,
                                      **manifest_identities(manifest))
            else:
                blobs["manifest.json"] = (store.entry_dir(key) / "manifest.json").read_bytes()
            entries[key] = blobs
        _add(tar, ARCHIVE_MANIFEST, json.dumps({**header, "keys": sorted(entries)}, indent=1).encode())
        for key in sorted(entries):
            for name, data in sorted(entries[key].items()):
                _add(tar, f"entries/{key}/{name}", data)
            result.exported.append(key)


# -- import ------------------------------------------------------------------------------------

@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # added and re-measured here from their weights
    unverified: dict[str, str] = field(default_factory=dict)  # added, numbers not re-measured -> why
    present: list[str] = field(default_factory=list)  # the cache already holds the key: skipped
    rejected: dict[str, str] = field(default_factory=dict)  # key or member name -> why
    other_code: list[str] = field(default_factory=list)  # trained by other training code
    archive_fingerprint: str | None = None


class _BoundedReads:
    """The archive's (decompressed) stream, refusing any single read larger than ``limit``:
    tarfile reads a pax or long-name header's data in one call, so without this a member header
    could make it allocate whatever size the header declares."""

    def __init__(self, f: BinaryIO, limit: int = 4 * _CHUNK):
        self._f, self._limit = f, limit

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._limit:
            raise CacheError(f"an archive header asks to read {n} bytes at once (more than {self._limit}); "
                             "not a claimbench cache archive")
        return self._f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _open_stream(raw: BinaryIO) -> BinaryIO:
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, sink: BinaryIO) -> tuple[str, int]:
    """Copy a member into ``sink`` in chunks: (sha256, size); EntryDamaged past ``limit`` bytes."""
    digest, size = hashlib.sha256(), 0
    f = tar.extractfile(member)
    while chunk := f.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise EntryDamaged(f"{member.name.rsplit('/', 1)[-1]} holds more than the {limit} bytes declared")
        digest.update(chunk)
        sink.write(chunk)
    return digest.hexdigest(), size


@dataclass
class _Scan:
    """What the first pass found: the entries' members (in archive order) and manifests."""
    members: dict[str, dict[str, tarfile.TarInfo]] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # key -> why, found from headers alone
    header: dict | None = None


def _scan(tar: tarfile.TarFile, path: Path, result: ImportResult) -> _Scan:
    scan, last_key, stray = _Scan(), None, 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise CacheError(f"{path}: more than {MAX_MEMBERS} members; not a claimbench cache archive (nothing imported)")
        m = _MEMBER.fullmatch(member.name)
        if member.name == ARCHIVE_MANIFEST and member.isfile():
            scan.header = _archive_header(tar, member, path)
            continue
        if not m or not member.isfile() or m.group(2) not in (*ENTRY_FILES, "manifest.json"):
            if member.size > STRAY_MEMBER_LIMIT:
                raise CacheError(f"{path}: member {shown(member.name)} ({member.size} bytes) is not an entry file "
                                 "of a claimbench archive; the archive is refused (nothing imported)")
            stray += 1
            if stray <= 20:
                result.rejected[member.name] = "not an entry file of a claimbench archive"
            elif stray == 21:
                result.rejected["..."] = "more members that are not entry files (not listed)"
            continue
        key, name = m.groups()
        limit = SIZE_LIMITS[name]
        if member.size > limit:
            # Refused from the header alone: reading past it would mean decompressing it.
            raise CacheError(f"{path}: member {shown(member.name)} declares {member.size} bytes, more than the "
                             f"{limit} a {name} may have; the archive is refused (nothing imported)")
        files = scan.members.setdefault(key, {})
        if key != last_key and files:
            scan.broken[key] = "its files are not together in the archive"
        if name in files:
            scan.broken[key] = f"the archive holds {name} twice"
        files[name] = member
        last_key = key
        if name == "manifest.json":
            buffer = io.BytesIO()
            try:
                _read_member(tar, member, limit, buffer)
            except EntryDamaged as e:
                scan.broken[key] = str(e)
            scan.manifests[key] = buffer.getvalue()
    if scan.header is None:
        raise CacheError(f"{path}: not a claimbench cache archive (no {ARCHIVE_MANIFEST})")
    return scan


def _archive_header(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> dict:
    buffer = io.BytesIO()
    try:
        _read_member(tar, member, 1 << 20, buffer)
        header = parse_json(buffer.getvalue(), ARCHIVE_MANIFEST, 1 << 20)
    except EntryDamaged as e:
        raise CacheError(f"{path}: unreadable {ARCHIVE_MANIFEST} ({e})") from e
    if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
        found = header.get("format") if isinstance(header, dict) else "?"
        raise CacheError(f"{path}: archive format {shown(str(found)[:20])} is not {ARCHIVE_FORMAT}")
    if not isinstance(header.get("training_fingerprint"), (str, type(None))):
        raise CacheError(f"{path}: {ARCHIVE_MANIFEST}: training_fingerprint is not a string")
    return header


def _entry_files(tar: tarfile.TarFile, key: str, members: dict[str, tarfile.TarInfo], manifest_bytes: bytes,
) -> tuple[dict[str, bytes], dict, dict | None]:
    """(files, manifest, state dict or None) of one archived entry, every file checked against
    the manifest while it is read (never past its declared size)."""
    manifest = check_manifest(parse_json(manifest_bytes, "manifest.json"), key)
    missing = sorted(set(manifest["files"]) - set(members))
    if missing:
        raise EntryDamaged(f"archive lacks {', '.join(missing)}")
    extra = sorted(set(members) - set(manifest["files"]) - {"manifest.json"})
    if extra:
        raise EntryDamaged(f"files not in the manifest: {', '.join(extra)}")
    blobs, state = {}, None
    for name, member in sorted(members.items(), key=lambda item: item[1].offset):
        if name == "manifest.json":
            continue
        declared = manifest["sizes"][name]
        if member.size != declared:  # refused before any of it is read
            raise EntryDamaged(f"{name} has {member.size} bytes in the archive, the manifest says {declared}")
        # The weights go through a file that spills to disk: nothing of a member whose checksum
        # fails is held in memory.
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as sink:
            digest, size = _read_member(tar, member, declared, sink)
            if size != declared:
                raise EntryDamaged(f"{name} has {size} bytes in the archive, the manifest says {declared}")
            if digest != manifest["files"][name]:
                raise EntryDamaged(f"checksum mismatch in {name}")
            sink.seek(0)
            if name == WEIGHTS:
                state = load_weights(sink, f"run {key[:12]}")
                sink.seek(0)
            blobs[name] = sink.read()
    return blobs, manifest, state


def import_archive(store: RunStore, path: Path, remeasure: Remeasure | None = None) -> ImportResult:
    """Check and add every entry of the archive at ``path`` to ``store`` (entries with weights
    re-measured with ``remeasure`` on ``store.device``/``store.data_root``)."""
    result = ImportResult()
    if not store.writable():
        raise store.read_only_error("imported runs", suggest_import=False)
    try:
        with open(path, "rb") as raw, _open_stream(raw) as stream, \
                tarfile.open(fileobj=_BoundedReads(stream), mode="r:") as tar:
            scan = _scan(tar, path, result)
            result.archive_fingerprint = scan.header.get("training_fingerprint")
            for key, members in scan.members.items():
                if key in scan.broken:
                    result.rejected[key] = scan.broken[key]
                    continue
                if store.contains(key):
                    result.present.append(key)
                    continue
                try:
                    _import_entry(store, path, tar, key, members, scan.manifests.get(key), remeasure, result)
                except EntryDamaged as e:
                    result.rejected[key] = str(e)
                except EntryNotReadableHere as e:
                    # One entry this claimbench cannot read (a plug-in not installed here, an older
                    # scheme) is skipped, named; the rest of the archive goes on.
                    result.rejected[key] = f"skipped, cannot be read here ({e}); import again once it can"
    except (OSError, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise CacheError(f"{path}: not a readable claimbench cache archive ({e})") from e
    return result


def _import_entry(store: RunStore, path: Path, tar: tarfile.TarFile, key: str, members: dict[str, tarfile.TarInfo],
                  manifest_bytes: bytes | None, remeasure: Remeasure | None, result: ImportResult) -> None:
    if manifest_bytes is None:
        raise EntryDamaged("archive lacks manifest.json")
    blobs, manifest, state = _entry_files(tar, key, members, manifest_bytes)
    record = record_from_files(blobs, manifest, key)
    metrics, why = remeasured(store, key, record, state, manifest, remeasure)
    del state
    origin = {"source": "imported", "verified": why is None, "archive": path.name, "imported_at": now()}
    if why is not None:
        origin["unverified_because"] = why
    files = with_manifest(blobs | metrics_file(metrics, record), key,
                          metrics_fingerprint() if metrics is not record.metrics else manifest["metrics_fingerprint"],
                          origin=origin, **manifest_identities(manifest))
    if store.put_files(key, files, replace=False) is None:
        result.present.append(key)  # stored by someone else meanwhile
        return
    result.added.append(key)
    if why is None:
        result.verified.append(key)
    else:
        result.unverified[key] = why
    if manifest["training_fingerprint"] != training_identity():
        result.other_code.append(key)


__all__ = ["EntryInfo", "ExportResult", "ImportResult", "VerifyResult", "entry_infos",
           "export_entries", "import_archive", "shown", "verify_store"]
