"""The record the training path reads: what a check found, per machine, driver, torch and code.

In:  the cache root, this machine's device, a check's per-kind results.
Out: ``gpu-check.json`` under the cache root (merged under its lock, written whole:
     ``claimbench.cache.side_records``), per machine the kinds of group checked there (the stamp:
     ``split_by_record`` says which kinds a plan still needs checked); ``SwitchedOff``, the features
     a check switched off per kind of group, which ``claimbench.execute`` consults; ``announce``, one
     line per switched-off feature; ``ChosenGroupSizes``, the runs per group the check chose per
     kind (``claimbench.gpu_check.group_size``), which training on a GPU groups by. Both are read
     only from findings this user's claimbench marked, for this machine, driver, torch and code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pkgutil
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from claimbench.cache.side_records import update_json
from claimbench.cache.trained_here import is_marked_here, record_mark
from claimbench.config import RunConfig
from claimbench.gpu_check.group_size import GroupSize
from claimbench.gpu_check.kinds import FEATURE_OFF, FEATURE_TEXT, FEATURES, GroupKind, kind_of
from claimbench.machine.detect import machine_name, nvidia_query
from claimbench.plan.estimate import run_memory_bytes

log = logging.getLogger(__name__)

RECORD_FILE = "gpu-check.json"
# Each machine's findings carry an HMAC under the secret that marks entries trained here.
MARK = "mark"


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The training code's fingerprint and this check's own (both by syntax, as cache keys are)."""
    from claimbench.cache.keys import fingerprint, training_modules

    # Every module of this package, found on disk, so a module added later is covered without a
    # list; all but the report, which only words the findings: rewording it must not ask every
    # machine to run the check again.
    here = Path(__file__).parent
    own = ("claimbench.gpu_check",) + tuple(f"claimbench.gpu_check.{m.name}" for m in pkgutil.iter_modules([str(here)])
                                            if m.name != "report")
    return fingerprint(training_modules() + own)


@dataclass(frozen=True)
class MachineKey:
    """What a check's findings hold for: the device, its driver, torch and the code."""

    machine: str
    driver: str
    torch: str
    code: str

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def here(cls, device: str) -> "MachineKey":
        driver = "none"
        if device.startswith("cuda"):
            found = nvidia_query("driver_version")
            driver = found[0] if found else "unknown"
        return cls(machine_name(device), driver, _torch_version(), code_fingerprint())


def read_record(cache_root: Path) -> dict:
    """The record under ``cache_root`` ({} when there is none, or it is not one claimbench wrote)."""
    path = Path(cache_root) / RECORD_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raw = None
        problem = f"unreadable: {str(e)[:120]}"
    else:
        problem = record_problem(raw)
    if not problem:
        # Only this user's claimbench writes the marks: a record a project or a copied cache
        # brings (well formed, saying every kind passed) must not switch the check off here.
        foreign = sorted(m for m, entry in raw.items() if not is_marked_here(_unmarked(entry), entry.get(MARK)))
        for machine in foreign:
            log.warning("%s: the findings of machine %s are ignored: not written by this user's claimbench (no "
                        "valid mark); `claimbench gpu-check` checks again where a tier needs it", path, machine[:16])
            del raw[machine]
    if problem:
        # The record lives in the cache root, which a project or a shared cache may ship: a bad
        # one is ignored (the check runs again when a tier needs it) rather than trusted or fatal.
        log.warning("%s: ignored, not a gpu-check record claimbench wrote (%s); `claimbench gpu-check` writes a new one",
                    path, problem)
        return {}
    return raw


def _unmarked(entry: dict) -> dict:
    """A machine's findings without their mark: what the mark is made over."""
    return {k: v for k, v in entry.items() if k != MARK}


def record_problem(raw: object) -> str | None:
    """What makes ``raw`` no gpu-check record, or None: machine id -> {kinds: {kind id -> {dataset,
    arch, precision: strings, optimizers: [strings] (written since the stamp is per kind),
    switched_off: {known feature: reason}}}}. Other keys (an older record's ``complete``) are
    left alone."""
    if not isinstance(raw, dict):
        return f"a {type(raw).__name__}, expected an object"
    for machine, entry in raw.items():
        if not isinstance(entry, dict):
            return f"{machine[:60]}: a {type(entry).__name__}, expected an object"
        kinds = entry.get("kinds")
        if not isinstance(kinds, dict):
            return f"{machine[:60]}.kinds: expected an object"
        for kid, kind in kinds.items():
            where = f"{machine[:60]}.kinds.{kid[:60]}"
            if not isinstance(kind, dict) or not all(isinstance(kind.get(f), str) for f in ("dataset", "arch", "precision")):
                return f"{where}: expected dataset, arch and precision"
            optimizers = kind.get("optimizers", [])
            if not isinstance(optimizers, list) or not all(isinstance(o, str) for o in optimizers):
                return f"{where}.optimizers: expected a list of names"
            off = kind.get("switched_off", {})
            if not isinstance(off, dict):
                return f"{where}.switched_off: expected an object"
            for feature, why in off.items():
                if feature not in FEATURES:
                    return f"{where}.switched_off: unknown feature {feature[:40]!r}; known: {', '.join(FEATURES)}"
                if not isinstance(why, str) or not why.strip():
                    return f"{where}.switched_off.{feature}: expected the reason it was switched off"
            if "group_size" in kind:  # absent in records written before the group size was measured
                try:
                    GroupSize.from_dict(kind["group_size"])
                except ValueError as e:
                    return f"{where}.group_size.{e}"
    return None


class CheckRecordError(RuntimeError):
    pass


def write_record(cache_root: Path, key: MachineKey, results: list) -> Path:
    """Merge ``results`` (``KindResult``s) into the record of ``key``: the kinds it holds are the
    ones checked on this machine, driver, torch and code. Flaky findings are kept for the reader,
    and switch nothing off."""
    path = Path(cache_root) / RECORD_FILE

    def merge(raw: dict) -> dict:
        entry = raw.get(key.id) or {**asdict(key), "kinds": {}}
        # Whether a tier was checked whole is no stamp: it said nothing of another tier's kinds,
        # another claims folder's or kinds added later. The kinds themselves are.
        entry.pop("complete", None)
        entry["kinds"].update({r.kind.id: {"dataset": r.kind.dataset, "arch": r.kind.arch,
                                           "precision": r.kind.precision, "optimizers": list(r.kind.optimizers),
                                           "switched_off": r.switched_off, "flaky": r.flaky,
                                           # Under the mark with the rest: a K edited in the file
                                           # makes the machine's findings foreign, not obeyed.
                                           **({"group_size": r.group_size.to_dict(), "run_bytes": r.run_bytes}
                                              if r.group_size is not None else {})} for r in results})
        entry["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        entry[MARK] = record_mark(_unmarked(entry))
        raw[key.id] = entry
        return raw

    # Two checks finishing at once (two GPUs of one machine, or two machines sharing a cache)
    # each merge their findings: read under the lock, so neither is lost.
    update_json(path, merge, read=lambda p: read_record(p.parent), indent=1, sort_keys=True)
    return path


def covered(checked: dict, kind: GroupKind) -> bool:
    """Whether the kinds ``checked`` (a machine's record) cover ``kind``: checked itself, or each
    of its optimizers checked in a kind of its dataset, architecture and precision (the data path
    follows from the dataset). Which optimizers a group mixes depends on which runs a plan holds
    (-k, what is cached already): judged per optimizer, a check of the whole tier covers the groups
    of a narrowed plan, as ``SwitchedOff.for_group`` applies its findings to them."""
    if kind.id in checked:
        return True
    seen = {o for k in checked.values() if (k["dataset"], k["arch"], k["precision"]) ==
            (kind.dataset, kind.arch, kind.precision) for o in k.get("optimizers", [])}
    return set(kind.optimizers) <= seen


def split_by_record(kinds: list[GroupKind], cache_root: Path, device: str) -> tuple[list[str], list[str]]:
    """The ids of ``kinds`` this machine, driver, torch and code's record covers, and of those it lacks."""
    checked = (read_record(cache_root).get(MachineKey.here(device).id) or {}).get("kinds", {})
    done = [k.id for k in kinds if covered(checked, k)]
    return done, [k.id for k in kinds if k.id not in done]


@dataclass(frozen=True)
class SwitchedOff:
    """The features a check switched off on this machine, per kind of group: what the training
    path consults (``claimbench.execute.train_plan``)."""

    kinds: dict  # kind id -> {feature: why}
    meta: dict  # kind id -> {"dataset", "arch", "precision"}
    path: Path

    @classmethod
    def load(cls, cache_root: Path, device: str) -> "SwitchedOff":
        entry = read_record(cache_root).get(MachineKey.here(device).id) or {"kinds": {}}
        kinds = {k: dict(v.get("switched_off") or {}) for k, v in entry["kinds"].items()}
        return cls(kinds, entry["kinds"], Path(cache_root) / RECORD_FILE)

    def for_group(self, configs: list[RunConfig]) -> dict[str, str]:
        """{feature: why} for this group's kind. A kind the check did not train (another mix of
        optimizers) takes every feature switched off for a checked kind of its dataset,
        architecture and precision."""
        kind = kind_of(configs)
        if kind.id in self.kinds:
            return self.kinds[kind.id]
        out: dict[str, str] = {}
        for kid, off in self.kinds.items():
            m = self.meta[kid]
            if (m["dataset"], m["arch"], m["precision"]) == (kind.dataset, kind.arch, kind.precision):
                for f, why in off.items():
                    out.setdefault(f, f"{why} (checked on {kid})")
        return out


def announce(kind_id: str, off: dict[str, str], path: Path) -> list[str]:
    """One line per switched-off feature: what, why, how the training path gives it up."""
    return [f"gpu-check switched off {f} ({FEATURE_TEXT[f]}) for {kind_id} on this machine: {why}; "
            f"training uses {FEATURE_OFF[f]} for it (record: {path})" for f, why in sorted(off.items())]



@dataclass(frozen=True)
class ChosenGroupSizes:
    """The runs per group gpu-check chose for each kind on this machine (``GroupSize``): what
    ``claimbench.execute.train_plan`` groups a kind's runs by on a GPU."""

    kinds: dict  # kind id -> GroupSize
    meta: dict  # kind id -> the record's entry (dataset, arch, precision, run_bytes)
    path: Path

    @classmethod
    def load(cls, cache_root: Path, device: str) -> "ChosenGroupSizes":
        entry = read_record(cache_root).get(MachineKey.here(device).id) or {"kinds": {}}
        sizes = {k: GroupSize.from_dict(v["group_size"]) for k, v in entry["kinds"].items() if "group_size" in v}
        return cls(sizes, entry["kinds"], Path(cache_root) / RECORD_FILE)

    def for_config(self, config: RunConfig) -> tuple[int, str] | None:
        """(K, why) for the groups ``config`` trains in, or None when no check chose one.

        Chosen before its group exists, so by what every group of the run's key shares (dataset,
        architecture, precision), not by the optimizers a group mixes: of the kinds checked there,
        the smallest K (the surest to fit). A run that needs more memory than the one the sweep
        trained (a larger batch, width or image; ``run_memory_bytes``) gets K scaled down by that
        ratio, so a group holds no more than the memory measured."""
        found = [(size, kid) for kid, size in self.kinds.items()
                 if (self.meta[kid]["dataset"], self.meta[kid]["arch"], self.meta[kid]["precision"])
                 == (config.data.dataset, config.model.arch, config.train.precision)]
        if not found:
            return None
        size, kid = min(found, key=lambda f: (f[0].k, f[1]))
        k, why = size.k, f"gpu-check on {kid}: {size.why}"
        measured, needs = self.meta[kid].get("run_bytes"), run_memory_bytes(config)
        if isinstance(measured, int) and needs and needs > measured:
            k = max(1, int(size.k * measured / needs))
            why = f"{size.k} scaled by the modelled memory per run, {needs / measured:.1f}x the one measured; {why}"
        return k, why
