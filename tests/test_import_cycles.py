"""No import cycle in the package, counting imports inside functions too.

A cycle hidden in a function-level import is still a cycle: each module then needs the other to be
understood, changed or tested, and the layers contract of ``.importlinter`` cannot see it inside
one package (``claimbench.train.loop`` and ``claimbench.train.trainer`` once imported each other
that way). The import graph is read from the source with ``ast``, independently of
``claimbench.cache.keys`` (which reads imports for the training fingerprint), so this test does not
trust the code it guards: every ``import`` and ``from ... import`` anywhere in a module (module
level, functions, ``if TYPE_CHECKING:`` blocks), relative imports resolved against the module's
package, and ``from package import name`` counted as an import of the submodule when ``name`` is
one. Importing ``a.b`` also runs ``a/__init__.py``, but that is Python's doing, not an edge the
author wrote: a package that imports its own submodules is no cycle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import claimbench

PACKAGE_DIR = Path(claimbench.__file__).resolve().parent


def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for ``__init__``)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that ``name``'s source imports anywhere in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import sub" imports the submodule pkg.sub; "from mod import name", mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # "import a.b.c" (or a name inside a.b.c): the deepest module of the package it names.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    found = modules(package_dir)
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_reader_sees_every_kind_of_import(tmp_path):
    """Module level, inside a function, relative, and ``from package import submodule``."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("import pkg.sub.b\n\ndef f():\n    from .sub import c\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.a": {"pkg.sub.b", "pkg.sub.c"},
                     "pkg.sub.b": {"pkg.a"}, "pkg.sub.c": {"pkg.a"}}
    assert knots(graph) == [frozenset({"pkg.a", "pkg.sub.b", "pkg.sub.c"})]
    assert find_cycle(graph) in (["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.a", "pkg.sub.c", "pkg.a"])


def knots(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other, directly or not (strongly connected
    components of more than one module)."""
    out: list[frozenset[str]] = []
    placed: set[str] = set()
    for node in sorted(graph):
        if node in placed:
            continue
        knot = frozenset(other for other in graph if _reaches(graph, node, other) and _reaches(graph, other, node))
        placed |= knot
        if len(knot) > 1:
            out.append(knot)
    return out


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "claimbench.train.loop" in graph and graph["claimbench.train.loop"], "the reader found no imports"
    found = knots(graph)
    new = [find_cycle({n: graph[n] & knot for n in knot}) for knot in found]
    assert not new, "import cycle (imports inside functions count): " + "; ".join(" -> ".join(c) for c in new)
