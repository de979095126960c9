"""What a plug-in's code is, whichever way it was found: its part of a run's cache key.

In:  the name of the module a plug-in's entry point names (``mypkg.declare``), already imported.
Out: ``code_identity(module)``: sorted lines, one per piece of code the module can run,
     ``code <module> <sha>`` per module of its own code and ``dist <name>==<version>`` per other
     installed distribution it uses.

The walk follows every ``import`` statement of the module's source, at module level and inside
functions, together with the packages each import runs (``__init__``), across package borders:
a lab helper beside the experiment is as much the plug-in's code as the plug-in's own package.
Each module found counts by where its file comes from, not by how the plug-in was named (entry
point, a claims folder's plug-in list or ``$CLAIMBENCH_PLUGINS``), so one plug-in gets one key:

- the plug-in's own package (the top-level package of the module its entry point names) counts
  by its code, its syntax tree without docstrings and message words (``claimbench.cache.source``),
  its imports followed, whether it is installed or not: so the same code gets the same key on
  ``PYTHONPATH``, installed, or installed editable, and a reinstall of edited code under an
  unchanged version still retrains exactly the runs whose code changed;
- any other file from a local path (a lab helper module beside the experiment, an editable
  install) counts by its code too, its imports followed;
- a file of another installed, non-editable distribution (one that RECORD lists) counts as that
  distribution's normalised name and version, its imports not followed;
- the standard library, claimbench itself (its share of the key is the training semantics) and the
  distributions claimbench requires (torch, numpy: the environment every run shares, built-in runs
  included, recorded in provenance rather than keyed) do not count.

A module imported by a name computed at run time (``importlib.import_module(text)``) cannot be
seen by reading imports; that is the one way for code to escape the key, and it is documented.

No torch here.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

from claimbench.cache.source import normalised_source, parse_source

PACKAGE = Path(__file__).resolve().parent.parent.name


def normalise(name: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(sorted({os.path.normcase(os.path.realpath(paths[k])) + os.sep for k in ("stdlib", "platstdlib")}))


@functools.lru_cache(maxsize=1)
def _site_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(sorted({os.path.normcase(os.path.realpath(paths[k])) + os.sep for k in ("purelib", "platlib")}))


def _is_stdlib(name: str, origin: str) -> bool:
    if name.split(".")[0] in sys.stdlib_module_names:
        return True
    real = os.path.normcase(os.path.realpath(origin))
    return real.startswith(_stdlib_dirs()) and not real.startswith(_site_dirs())


@functools.lru_cache(maxsize=1)
def environment_distributions() -> frozenset[str]:
    """claimbench's distribution and those it requires unconditionally (normalised names)."""
    found = {normalise(PACKAGE)}
    for dist_name in importlib.metadata.packages_distributions().get(PACKAGE, []):
        found.add(normalise(dist_name))
        for requirement in importlib.metadata.requires(dist_name) or []:
            if "extra ==" in requirement.replace('"', "").replace("'", ""):
                continue
            found.add(normalise(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def _recorded_files(dist_path: str) -> frozenset[str]:
    """The files a distribution's RECORD lists, as normalised absolute paths."""
    dist = importlib.metadata.PathDistribution(Path(dist_path))
    return frozenset(os.path.normcase(os.path.realpath(dist.locate_file(f))) for f in (dist.files or []))


def _editable(dist: importlib.metadata.Distribution) -> bool:
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (ValueError, OSError):
        return False
    return bool(isinstance(direct, dict) and isinstance(direct.get("dir_info"), dict)
                and direct["dir_info"].get("editable"))


def installed_distribution(top: str, origin: str) -> str | None:
    """``<normalised name>==<version>`` of the non-editable distribution whose RECORD lists
    ``origin`` (a module of the top-level package ``top``), or None for code from a local path."""
    real = os.path.normcase(os.path.realpath(origin))
    for dist_name in importlib.metadata.packages_distributions().get(top, []):
        for dist in importlib.metadata.distributions(name=dist_name):
            path = getattr(dist, "_path", None)
            if path is None or _editable(dist):
                continue
            if real in _recorded_files(str(path)):
                return f"{normalise(dist.metadata['Name'])}=={dist.version}"
    return None


def _spec(name: str):  # noqa: ANN202  (a ModuleSpec or None)
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None)
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None  # an optional import that is absent here: nothing of it can run


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an ``import`` in ``tree`` may load (``from a import b``: ``a`` and
    ``a.b``, since ``b`` may be a submodule), relative imports resolved against ``module``."""
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
            if base:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def code_identity(module: str) -> tuple[str, ...]:
    """The code ``module`` can run, as sorted lines (see the module's docstring). Not cached
    here: ``keys`` caches a plug-in's whole part of the key, and clearing that reads the code
    anew."""
    lines: set[str] = set()
    own = module.split(".")[0]
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen or not name or name == "__main__":
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top == PACKAGE:
            continue
        todo.extend(_parents(name))
        spec = _spec(name)
        origin = getattr(spec, "origin", None)
        if spec is None or origin in (None, "built-in", "frozen") or not os.path.isfile(origin):
            continue  # a name that is no module, a namespace package or a compiled-in one
        if _is_stdlib(name, origin):
            continue
        dist = installed_distribution(top, origin)
        if dist is not None and dist.split("==")[0] in environment_distributions():
            continue
        if dist is not None and top != own:
            lines.add(f"dist {dist}")
            continue
        data = Path(origin).read_bytes()
        if not origin.endswith(".py"):
            lines.add(f"code {name} {hashlib.sha256(data).hexdigest()[:16]}")  # a compiled extension
            continue
        text = data.decode("utf-8")
        lines.add(f"code {name} {hashlib.sha256(normalised_source(text, origin).encode()).hexdigest()[:16]}")
        tree = parse_source(text, origin)
        todo.extend(imported_names(tree, name, os.path.basename(origin) == "__init__.py"))
    return tuple(sorted(lines))
