"""Cache keys: what decides whether a stored run can be served for a config.

In:  a ``RunConfig``; the package's own source files (for provenance).
Out: ``run_key(config)`` (sha256 hex, the entry's name); ``training_identity()`` (claimbench's share
     of the key); ``plugin_identity(config)`` (a plug-in run's share); ``training_code_fingerprint()``
     and ``metrics_fingerprint()`` (16 hex digits over the code's behaviour);
     ``simulation_key(decay_config)`` (a stored simulation's name).

A run's key is the cache format, the config's canonical JSON, the training semantics
(``claimbench.train.semantics``: a version pinned by the behaviour suite in ``tests/golden/``, raised
when training computes different numbers) and, for a run that uses plug-ins, what their code is
(``claimbench.cache.plugin_code``: installed distributions by name and version, local modules by
their code, found the same way whichever way the plug-in was named). So a refactor, a moved
function or a reworded message of claimbench keeps every user's cache, and an edit of a plug-in or of
a helper it imports retrains exactly the runs that use it.

The text of claimbench's training code still has a fingerprint (``training_code_fingerprint``: the
normalised syntax of the modules the loop and the loaders import, ``training_modules``), kept in
every entry's manifest and provenance so ``claimbench cache ls`` can say which runs another version of
the code trained under the same semantics. The measurement code (the closure of ``METRICS_ENTRY``
less the training modules) is not in the key either: an entry records the metrics fingerprint it
was measured with, and an entry measured by other code has its metrics recomputed from its stored
weights without retraining.

No torch here: planning and reporting compute keys without loading it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from claimbench.config import RunConfig, plugins_used
from claimbench.cache.plugin_code import code_identity, imported_names
from claimbench.cache.source import normalised_source, parse_source
from claimbench.spec.simulation import DecayConfig
from claimbench.train.semantics import training_identity  # noqa: F401  (re-exported: the key's training part)

# Version of the entry layout (files, manifest fields). Part of every key: a new layout never
# reads an old one.
CACHE_FORMAT = 2
PACKAGE_DIR = Path(__file__).resolve().parent.parent
PACKAGE = PACKAGE_DIR.name
# What training runs: claimbench.train (``train_runs``, which hands a group to the loop or to a
# registered trainer's harness; models, optimizers, schedules through their imports) and the
# dataset loaders (what training is fed). Everything they import is training code.
TRAINING_ENTRY = ("claimbench.train", "claimbench.data")
# What turns trained weights into metrics.
METRICS_ENTRY = ("claimbench.measure",)
# What computes a low-gradient simulation (it uses the training loop's optimizers).
SIMULATION_ENTRY = ("claimbench.simulate.low_gradient",)


class FingerprintError(RuntimeError):
    """Source that cannot be fingerprinted: a module imported but not found, or unparsable."""


# -- the import graph -------------------------------------------------------------------------
def _module_path(module: str, package_dir: Path) -> Path | None:
    """The file of ``module`` (``claimbench.x.y``) under ``package_dir``, or None when it is no module
    of the package (a name imported from a module, not a submodule)."""
    parts = module.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _parents(module: str) -> list[str]:
    """The packages Python runs before ``module``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(path: Path, module: str, package_dir: Path) -> set[str]:
    """Modules of the package that ``module``'s source imports anywhere (functions included)."""
    try:
        found = _imported_by_text(path.read_text(encoding="utf-8"), str(path), module, path.name == "__init__.py")
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise FingerprintError(f"{path}: cannot read it to fingerprint the code: {e}") from e
    prefix = package_dir.name
    return {m for m in found if (m == prefix or m.startswith(prefix + ".")) and _module_path(m, package_dir)}


@functools.lru_cache(maxsize=1024)
def _imported_by_text(text: str, filename: str, module: str, is_package: bool) -> frozenset[str]:
    # The same files are walked again for every fingerprint asked for: parse each text once.
    return frozenset(imported_names(parse_source(text, filename), module, is_package))


def import_closure(entries: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """Every module of the package that importing ``entries`` can run: the entries, what they
    import (at module level or inside functions), transitively, and the packages around each."""
    todo = list(entries)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_path(module, package_dir)
        if path is None:
            raise FingerprintError(f"module {module} is not in {package_dir}")
        seen.add(module)
        todo.extend(_parents(module))
        todo.extend(_imports(path, module, package_dir))
    return tuple(sorted(seen))


def fingerprint(modules: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits over the normalised syntax of ``modules`` (names of the package's modules)."""
    digest = hashlib.sha256()
    for module in sorted(modules):
        path = _module_path(module, package_dir)
        if path is None:
            raise FingerprintError(f"module {module} is not in {package_dir}")
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(normalised_source(path.read_text(encoding="utf-8"), str(path)).encode() + b"\0")
    return digest.hexdigest()[:16]


def training_modules(package_dir: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """The modules whose behaviour changes a trained network."""
    return import_closure(TRAINING_ENTRY, package_dir)


def metrics_modules(package_dir: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """The modules whose behaviour changes the metrics of trained weights, less those already in
    the training key (a change there retrains, which measures again anyway)."""
    training = set(training_modules(package_dir))
    return tuple(m for m in import_closure(METRICS_ENTRY, package_dir) if m not in training)


def training_fingerprint_of(package_dir: Path = PACKAGE_DIR) -> str:
    return fingerprint(training_modules(package_dir), package_dir)


def metrics_fingerprint_of(package_dir: Path = PACKAGE_DIR) -> str:
    return fingerprint(metrics_modules(package_dir), package_dir)


@functools.lru_cache(maxsize=1)
def training_code_fingerprint() -> str:
    """Fingerprint of the text of the training code (provenance: which code trained a run)."""
    return training_fingerprint_of()


@functools.lru_cache(maxsize=1)
def metrics_fingerprint() -> str:
    """Fingerprint of the code that turns trained weights into metrics."""
    return metrics_fingerprint_of()


@functools.lru_cache(maxsize=1)
def simulation_fingerprint() -> str:
    """Fingerprint of the code that computes a simulation record."""
    return fingerprint(import_closure(SIMULATION_ENTRY))


def simulation_key(config: DecayConfig) -> str:
    """The cache key of a simulation: its configuration, the record format and the code."""
    from claimbench.simulate.result import SIMULATION_FORMAT

    payload = (f"repro-simulation-v{SIMULATION_FORMAT}\n{simulation_fingerprint()}\n"
               f"{json.dumps(config.to_dict(), sort_keys=True, separators=(',', ':'))}")
    return hashlib.sha256(payload.encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _plugin_part(kind: str, name: str) -> str:
    from claimbench import plugins

    r = plugins.resolve(kind, name)
    return "\n".join([f"{kind} {name} {r.entry_point}", *code_identity(r.module)])


def plugin_identity(config: RunConfig) -> str:
    """What a run's key adds for the plug-ins it uses (empty for a built-in run): per plug-in,
    its name, its entry point and what its code is (``plugin_code.code_identity``)."""
    return "\n".join(_plugin_part(kind, name) for kind, name in plugins_used(config))


def run_key(config: RunConfig, identity: str | None = None, plugins: str | None = None) -> str:
    """The cache key of ``config`` under the given (default: this claimbench's) training identity and,
    for a run that uses plug-ins, the given (default: the installed) plug-ins' identity. A stored
    entry's key is checked against the identities its manifest records, so whether it is sound
    never depends on what is installed here."""
    identity = training_identity() if identity is None else identity
    # "repro" was claimbench's working name; the tag stays as it was so that every cache trained
    # before the rename keeps its keys.
    payload = f"repro-cache-v{CACHE_FORMAT}\n{identity}\n{config.canonical_json()}"
    extra = plugin_identity(config) if plugins is None else plugins
    if extra:
        payload += f"\nplug-ins\n{extra}"
    return hashlib.sha256(payload.encode()).hexdigest()
