"""The format of one cache entry: its files, its manifest and the checks a reader makes.

In:  a ``RunRecord`` and its key (to write an entry's files), or an entry's file bytes and its
     manifest (to read one back).
Out: ``entry_files`` (the bytes of every file, manifest included), ``record_from_files`` (the
     ``RunRecord`` again, once every check passed), and the errors that say why an entry is not
     served: ``EntryDamaged`` (its files do not match its manifest or its key) or
     ``EntryNotReadableHere`` (sound, perhaps, but not usable in this environment).

An entry holds config.json, metrics.json, history.json, provenance.json, optionally model.pt (the
weights, a plain tensor state dict) and manifest.json (format, key, the training and metrics
fingerprints, sha256 and size of every other file). Every JSON file is checked before it is used:
size and nesting depth before it is parsed, then its shape (the manifest's fields, a metrics dict
whose known metrics have the catalogue's types, dict-valued history and provenance). The config
must hash to the entry's key under the identities the manifest records. model.pt is loaded with
``torch.load(weights_only=True, map_location="cpu")``: no pickled code runs.

Where an entry came from is part of its manifest: ``origin`` for an import (and whether its
metrics were re-measured from its weights here), this user's trained-here mark
(``claimbench.cache.trained_here``) for a run trained here, neither for an entry found in the cache.
The store (``claimbench.cache.store``) and the archive (``claimbench.cache.archive``) both read and
write entries through this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any, BinaryIO

from claimbench.cache.keys import (
    CACHE_FORMAT,
    metrics_fingerprint,
    plugin_identity,
    run_key,
    training_code_fingerprint,
    training_identity,
)
from claimbench.cache.record import RunRecord
from claimbench.cache.trained_here import MARK_FIELD, is_trained_here, trained_here_mark
from claimbench.config import ConfigError, RunConfig, plugins_used
from claimbench.runconfig import PluginUnavailable, run_config_from_dict
from claimbench.spec.metrics import PER_FEATURE, PER_LAYER, RUN_METRICS

JSON_FILES = ("config.json", "metrics.json", "history.json", "provenance.json")
WEIGHTS = "model.pt"
ENTRY_FILES = (*JSON_FILES, WEIGHTS)
# A key (``keys.run_key``): 64 hex digits, the name of an entry's folder.
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")

# Limits on an entry's files. Real entries stay far below them (a full-tier history is a few
# MB; VGG-16 with an ImageNet head is ~550 MB of weights); they exist so that a damaged file or
# a hostile archive is refused before it is parsed or held in memory whole.
SIZE_LIMITS = {"config.json": 1 << 20, "metrics.json": 16 << 20, "history.json": 64 << 20,
               "provenance.json": 1 << 20, "manifest.json": 1 << 20, WEIGHTS: 1 << 30}
# No entry file nests deeper than 4; json.loads recurses once per level, so a file nested
# thousands deep would end in RecursionError instead of a message.
MAX_JSON_DEPTH = 32


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
    here provides, or fields the installed version of it does not have (parsing it raised
    ``claimbench.runconfig.PluginUnavailable``): sound, perhaps, but unreadable in this
    environment. It stays where it is (an uninstalled package must not cost a user their runs)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    except PluginUnavailable as e:
        raise EntryNeedsPlugin(f"its config.json's {e.path}: {e.message}") from e
    except ConfigError as e:
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


def refuse_unreadable(key: str, files: dict[str, bytes]) -> None:
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
