"""Reading a claims folder's runs where its plug-ins are not installed: a report from what is stored.

In:  a RunStore whose entries name plug-ins that cannot be loaded here (the package uninstalled,
     another virtualenv, a module no longer on PYTHONPATH).
Out: ``read_without_plugins(store)``: stand-in declarations of those plug-ins made known to this
     process, so that the claims that name them can be read, and a ``StoredRunStore`` that
     serves their stored runs; or None when no entry names such a plug-in.

A run of a plug-in records in its provenance which plug-ins trained it and what they declared
(``claimbench.cache.provenance.plugin_provenance``: typed fields and their defaults, a dataset's shape, a
trainer's metrics). A stand-in is that declaration without code: it validates a config as the
real one did, and anything that would run it (build, load, train) raises. Its runs cannot be
keyed here, since their keys cover the plug-in's code, which is absent; so each stored run is
found by its config instead: the stored config, read under the stand-ins, gets a key in this
process, and that key leads back to the stored entry. Where one config was trained by several
versions of a plug-in's code, the newest run is the one read, and the report says so.

Only for reading: the store answers that nothing can be written, so nothing is locked, moved or
trained, and an entry that does not read is left where it is. Nothing here runs in a process
that trains, where a stand-in would be mistaken for the plug-in.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claimbench.cache import RunRecord, RunStore, run_key
from claimbench.cache.failures import failed_keys, raw_failure
from claimbench.cache.provenance import stand_in
from claimbench.cache.entry import JSON_FILES, EntryDamaged, metrics_problem, parse_json
from claimbench.config import ConfigError
from claimbench.runconfig import run_config_from_dict
from claimbench.plugins import DatasetPlugin, ModelPlugin, TrainerPlugin, add_named
from claimbench.spec.folder import plugins_allowed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredPlugin:
    """A plug-in as the runs it trained recorded it."""

    kind: str
    name: str
    entry_point: str
    distribution: str
    version: str


@dataclass(frozen=True)
class ReadWithoutPlugins:
    store: "StoredRunStore"
    plugins: tuple[StoredPlugin, ...]  # the stand-ins: plug-ins that are not installed here
    several_versions: int  # configs trained by more than one version of a plug-in (newest read)


def _loads_here(entry_point: str) -> bool:
    module, _, attribute = entry_point.partition(":")
    if not plugins_allowed() and module not in sys.modules:
        # Trying would run the module's code: without the user's leave, the stand-in reads its runs.
        return False
    try:
        return isinstance(getattr(importlib.import_module(module), attribute, None),
                          (ModelPlugin, DatasetPlugin, TrainerPlugin))
    except Exception:  # noqa: BLE001  (whatever stops it loading, it is not here)
        return False


def _stored_json(store: RunStore, key: str, name: str) -> Any:
    try:
        return json.loads((store.entry_dir(key) / name).read_bytes())
    except (OSError, ValueError):
        return None


def _recorded(store: RunStore):  # noqa: ANN202
    """(key, finished or failed at, the plug-ins it recorded, its config as stored) of every
    stored run and every recorded failure that names plug-ins."""
    for key in store.keys():
        provenance = _stored_json(store, key, "provenance.json")
        if isinstance(provenance, dict) and isinstance(provenance.get("plugins"), list):
            yield key, str(provenance.get("finished_at", "")), provenance["plugins"], \
                lambda key=key: _stored_json(store, key, "config.json")
    for key in failed_keys(store.root):
        if store.contains(key):
            continue  # trained since: the stored run is what is read
        try:
            record = raw_failure(store.root, key)
        except (OSError, ValueError):
            continue
        if record and isinstance(record.get("plugins"), list) and isinstance(record.get("config"), dict):
            yield key, str(record.get("failed_at", "")), record["plugins"], lambda record=record: record["config"]


def read_without_plugins(store: RunStore) -> ReadWithoutPlugins | None:
    """Stand-ins for the plug-ins the store's runs name that do not load here, made known to this
    process, and the store to read their runs from; None when every plug-in loads."""
    here: dict[str, bool] = {}  # entry point -> whether it loads here
    facts: dict[str, tuple[str, dict]] = {}  # entry point -> (when, what the newest record says)
    users: dict[str, tuple[str, Any]] = {}  # key -> (when, its config) for runs that need a stand-in
    for key, when, items, config in _recorded(store):
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("entry_point"), str):
                continue
            ep = item["entry_point"]
            if ep not in here:
                here[ep] = _loads_here(ep)
            if here[ep]:
                continue
            users[key] = (when, config)
            if ep not in facts or when >= facts[ep][0]:
                facts[ep] = (when, item)
    if not facts:
        return None
    plugins = []
    for ep, (_, item) in sorted(facts.items()):
        try:
            declaration = stand_in(item)
        except (KeyError, TypeError, ValueError) as e:
            log.warning("the stored record of plug-in %s cannot stand in for it (%s); its runs are not read", ep, e)
            continue
        _install(ep, declaration)
        plugins.append(StoredPlugin(item["kind"], item["name"], ep, str(item.get("distribution", "")),
                                    str(item.get("version", ""))))
    add_named([p.entry_point for p in plugins])
    # Each stored run (or failure) of a stand-in, found by its config: its key here -> the newest.
    found: dict[str, tuple[str, str]] = {}
    several = set()
    for key, (when, config) in users.items():
        try:
            here_key = run_key(run_config_from_dict(config()))
        except (ConfigError, ValueError, TypeError, AttributeError):
            continue  # not readable under the stand-ins: left out, as any unreadable entry is
        if here_key in found:
            several.add(here_key)
            if when <= found[here_key][0]:
                continue
        found[here_key] = (when, key)
    return ReadWithoutPlugins(StoredRunStore(store, {k: v for k, (_, v) in found.items()}), tuple(plugins),
                              len(several))


def _install(entry_point: str, declaration: Any) -> None:
    """Make ``module:attribute`` name ``declaration`` in this process. Its module's file is this
    one, so that keys here can be computed (they only lead back to stored entries)."""
    module, _, attribute = entry_point.partition(":")
    names = module.split(".")
    for depth in range(1, len(names) + 1):
        name = ".".join(names[:depth])
        if name not in sys.modules:
            stand_in = types.ModuleType(name, "stand-ins of plug-ins not installed here (claimbench.report.stored)")
            stand_in.__file__ = __file__
            stand_in.__path__ = []  # a package, so that the submodules below it are found in sys.modules
            stand_in.__claimbench_stand_in__ = True  # claimbench.spec.folder: a name no stored run used is not there
            sys.modules[name] = stand_in
    setattr(sys.modules[module], attribute, declaration)


class StoredRunStore(RunStore):
    """``store`` for reading only, whose runs of plug-ins not installed here are served under the
    keys their configs get here (``real``: key here -> stored key). Such an entry is checked as
    every entry is (manifest, checksums, sizes), except that its config is not keyed again: that
    needs the plug-in's code."""

    def __init__(self, store: RunStore, real: dict[str, str]):
        super().__init__(store.root, store.data_root, store.device)
        self._real, self._stand_in = real, set(real.values())

    def stored_key(self, key: str) -> str:
        return self._real.get(key, key)

    def writable(self) -> bool:
        return False  # a report reads: nothing is locked, moved or written

    def contains(self, key: str) -> bool:
        return super().contains(self.stored_key(key))

    def get(self, key: str, with_weights: bool = False, config: Any = None,
            current_metrics: bool = True) -> RunRecord | None:
        return super().get(self.stored_key(key), with_weights, None if key in self._real else config, current_metrics)

    def _read(self, entry: Path, key: str, with_weights: bool, config: Any) -> RunRecord:
        if key not in self._stand_in:
            return super()._read(entry, key, with_weights, config)
        manifest, blobs = self._checked_json_files(entry, key)
        parsed = {n: parse_json(blobs[n], n) for n in JSON_FILES}
        problem = metrics_problem(parsed["metrics.json"])
        if problem:
            raise EntryDamaged(problem)
        try:
            stored = run_config_from_dict(parsed["config.json"])
        except (ConfigError, ValueError, TypeError, AttributeError) as e:
            raise EntryDamaged(f"unreadable config.json: {e}") from e
        origin = manifest.get("origin")
        return RunRecord(stored, parsed["metrics.json"], parsed["history.json"], parsed["provenance.json"], None,
                         manifest.get("metrics_fingerprint"), origin=origin["source"] if origin else "local",
                         verified=origin["verified"] if origin else True)
