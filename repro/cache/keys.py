"""Cache keys and code fingerprints: which code a stored result depends on.

In:  a ``RunConfig``; the package's own source files.
Out: ``run_key(config)`` (sha256 hex, the entry's name), ``training_fingerprint()`` and
     ``metrics_fingerprint()`` (16 hex digits each), ``training_modules()`` (the modules the
     training key covers), ``simulation_key(decay_config)`` (a stored simulation's name).

Which code retrains is derived, not listed: the training key covers exactly the modules that
the training entry points (``TRAINING_ENTRY``: the loop and the dataset loaders) import, directly
or through other modules, found by reading every ``import`` statement of the package's source
(those inside functions too) together with the packages each import runs (``__init__``). A new
module the loop comes to import is covered the moment it is imported; a module nothing in
training imports (the CLI, claims, plans, checks, reports, the cache itself, the tracer in
``train/profile.py``) may change freely without retraining anything. ``tests/test_cache.py``
pins the closure: it edits every module in turn and checks which keys move.

Behaviour, not bytes: each file is parsed and its syntax tree, without docstrings, is serialised
field by field, so comments, docstrings, blank lines and formatting do not change the
fingerprint while any change to what the code does (a constant, an operator, a call) does. The
text of messages is not behaviour either: the arguments of a ``raise`` and of logging calls
(``log.info(...)`` and the like) are left out, so rewording an error or a log line retrains
nothing, while raising a different exception type, or raising where nothing was raised, does.
Messages therefore live where they are raised or logged, as literal text. The serialisation
leaves out empty and absent fields, so the fields newer Pythons add with empty defaults
(``type_params``) do not split caches between Python versions.

The measurement code (the closure of ``METRICS_ENTRY`` less the training modules) is not in the
training key: a stored entry records the metrics fingerprint it was measured with, and an entry
measured by other code has its metrics recomputed from its stored weights without retraining.

A run that uses a plug-in model, dataset or trainer (``repro.plugins``) runs code outside this
package: its key also covers, per plug-in it uses (``repro.config.plugins_used``), the import
closure of the module its entry point names within that module's own top-level package (found
and normalised the same way), the distribution's name and version, and the registry's code that
training does not already cover. Editing the plug-in's model retrains exactly the runs that use
it, editing a trainer exactly the runs it trains; its README, or another package's code,
retrains nothing. Built-in runs' keys do not depend on what is installed.

No torch here: planning and reporting compute keys without loading it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import threading
from pathlib import Path

from repro.config import RunConfig, plugins_used
from repro.spec.simulation import DecayConfig

# Version of the entry layout (files, manifest fields). Part of every key: a new layout never
# reads an old one.
CACHE_FORMAT = 2
PACKAGE_DIR = Path(__file__).resolve().parent.parent
PACKAGE = PACKAGE_DIR.name
# What training runs: the loop (models, optimizers, schedules through its imports) and the
# dataset loaders (what the loop is fed). Everything they import is training code.
TRAINING_ENTRY = ("repro.train.loop", "repro.data")
# What turns trained weights into metrics.
METRICS_ENTRY = ("repro.measure",)
# What a plug-in run runs of repro beyond the training closure: the registry that loads it.
PLUGIN_ENTRY = ("repro.plugins",)
# What computes a low-gradient simulation (it uses the training loop's optimizers).
SIMULATION_ENTRY = ("repro.simulate.low_gradient",)
# Calls whose arguments are messages for people: logging methods.
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})


# CPython 3.11 can fail ast.parse run in two threads at once ("AST constructor recursion depth
# mismatch"); keys are computed from executor threads (a Ray driver's, the pytest plugin's), so
# parsing is one thread at a time.
_PARSE_LOCK = threading.Lock()


def _parse(source: str, filename: str) -> ast.AST:
    with _PARSE_LOCK:
        return ast.parse(source, filename)


class FingerprintError(RuntimeError):
    """Source that cannot be fingerprinted: a module imported but not found, or unparsable."""


# -- the import graph -------------------------------------------------------------------------
def _module_path(module: str, package_dir: Path) -> Path | None:
    """The file of ``module`` (``repro.x.y``) under ``package_dir``, or None when it is no module
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
    is_package = path.name == "__init__.py"
    try:
        tree = _parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise FingerprintError(f"{path}: cannot read it to fingerprint the code: {e}") from e
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # ``from repro.data import cifar`` imports the submodule ``repro.data.cifar``.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    prefix = package_dir.name
    return {m for m in found if (m == prefix or m.startswith(prefix + ".")) and _module_path(m, package_dir)}


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


# -- behaviour of the source ------------------------------------------------------------------
def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def _is_log_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr in _LOG_METHODS and isinstance(node.func.value, ast.Name) \
        and node.func.value.id in ("log", "logger", "logging")


def _strip_messages(tree: ast.AST) -> None:
    """Drop the words of raised exceptions and log calls; keep which exception is raised."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
        elif isinstance(node, ast.Expr) and _is_log_call(node.value):
            node.value.args, node.value.keywords = [], []


def _dump(node: object, out: list[str]) -> None:
    if isinstance(node, ast.AST):
        out.append(type(node).__name__ + "(")
        for name in node._fields:
            value = getattr(node, name, None)
            # 'kind' is the u'' prefix of a string, 'type_comment' a comment: neither is behaviour.
            if value is None or (isinstance(value, list) and not value) or name in ("kind", "type_comment"):
                continue
            out.append(name + "=")
            _dump(value, out)
            out.append(",")
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            _dump(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(f"{type(node).__name__}:{node!r}")


def normalised_source(source: str, filename: str = "<source>") -> str:
    """The behaviour of a Python source file as text: its syntax tree without docstrings and
    without the words of its error and log messages."""
    tree = _parse(source, filename)
    _strip_docstrings(tree)
    _strip_messages(tree)
    out: list[str] = []
    _dump(tree, out)
    return "".join(out)


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
def training_fingerprint() -> str:
    """Fingerprint of the code whose behaviour changes a trained network."""
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
    from repro.simulate.result import SIMULATION_FORMAT

    payload = (f"repro-simulation-v{SIMULATION_FORMAT}\n{simulation_fingerprint()}\n"
               f"{json.dumps(config.to_dict(), sort_keys=True, separators=(',', ':'))}")
    return hashlib.sha256(payload.encode()).hexdigest()


def source_fingerprint(module: str, source: Path) -> str:
    """The fingerprint of ``module`` and every module of its own top-level package it imports
    (``source``: that package's folder, or the file of a top-level module)."""
    if source.is_file():
        digest = hashlib.sha256(source.name.encode() + b"\0")
        digest.update(normalised_source(source.read_text(encoding="utf-8"), str(source)).encode())
        return digest.hexdigest()[:16]
    return fingerprint(import_closure((module,), source), source)


@functools.lru_cache(maxsize=1)
def registry_fingerprint() -> str:
    """Fingerprint of the plug-in registry's code that training does not already cover."""
    training = set(training_modules())
    return fingerprint(tuple(m for m in import_closure(PLUGIN_ENTRY) if m not in training))


@functools.lru_cache(maxsize=None)
def _plugin_part(kind: str, name: str) -> str:
    from repro import plugins

    r = plugins.resolve(kind, name)
    return f"{kind} {name} {r.entry_point} {r.distribution}=={r.version} {source_fingerprint(r.module, r.source)}"


def plugin_fingerprint(config: RunConfig) -> str:
    """What a run's key adds for the plug-ins it uses (empty for a built-in run): the registry's
    code and, per plug-in, its entry point, distribution version and code."""
    parts = [_plugin_part(kind, name) for kind, name in plugins_used(config)]
    if not parts:
        return ""
    return "\n".join([f"registry {registry_fingerprint()}", *parts])


def run_key(config: RunConfig, fingerprint: str | None = None) -> str:
    """The cache key of ``config`` under the given (default: this code's) training fingerprint and,
    for a run that uses plug-ins, their code (``plugin_fingerprint``)."""
    fp = training_fingerprint() if fingerprint is None else fingerprint
    payload = f"repro-cache-v{CACHE_FORMAT}\n{fp}\n{config.canonical_json()}"
    extra = plugin_fingerprint(config)
    if extra:
        payload += f"\nplug-ins\n{extra}"
    return hashlib.sha256(payload.encode()).hexdigest()
