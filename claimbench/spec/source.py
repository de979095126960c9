"""YAML files with line numbers, so every error can name file, line and field.

In:  a path to a YAML file (claims, run configs).
Out: ``Source``: the plain data (safe loader: no tags, nothing executable) plus the line of every
key/item, addressed by dotted field path (``runs.axes.optim.name``, ``references[2].value``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# A claim file is a few kilobytes; anything near these limits is a mistake or an attack, and is
# rejected before the YAML composer (which recurses per nesting level) sees it.
MAX_BYTES = 1 << 20
MAX_DEPTH = 24
# Nodes an alias (*name) may add: each use of an alias stands for the whole anchored collection,
# so ten nested aliases of nine items each ("billion laughs") describe 10^9 nodes in a few
# hundred bytes, which any later walk of the data (merging, printing, hashing) then expands. The
# repository's claims reuse a few small blocks; a document whose aliases add more than this many
# nodes is rejected before anything is built from it.
MAX_ALIAS_NODES = 10_000
# libyaml's safe loader where PyYAML was built with it (10x faster: `claimbench validate` reads every
# claim and table); the same safe constructors either way.
YAML_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_loader(base: type) -> type:
    """``base`` (a safe loader) reading ``1e-4``, a number without a dot, as the number it is.
    YAML 1.1, which PyYAML follows, calls it text; then the only way to tell a number written as
    text (``'10.5'``) from one written plainly would be the quotes, which the data no longer has.
    With this, plain numbers are numbers and quoted ones are text, so number fields refuse text."""
    loader = type(f"Claimbench{base.__name__}", (base,), {})
    loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return loader


YAML_LOADER = safe_loader(YAML_BASE_LOADER)


@dataclass(frozen=True)
class SpecProblem:
    """One problem in one file: ``claims/x.yaml:12: runs.optim.name: unknown optimizer 'adma'``."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(Exception):
    """All problems found in one or more files."""

    def __init__(self, problems: list[SpecProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Source:
    path: Path
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    # Field path -> a scalar exactly as written ("30.50" stays "30.50"; the tables show it so).
    texts: dict[str, str] = field(default_factory=dict)

    def line(self, field_path: str) -> int | None:
        """Line of ``field_path`` or of its nearest ancestor that has one."""
        path = field_path
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("", None)

    def problem(self, field_path: str, message: str) -> SpecProblem:
        return SpecProblem(display_path(self.path), self.line(field_path), field_path, message)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_source(path: Path) -> Source:
    """Parse one YAML file; a syntax error becomes a SpecError with its line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError([SpecProblem(display_path(path), None, "",
                                         f"file is {size:,} bytes; a claim or run file may be at most {MAX_BYTES:,}")])
        text = path.read_text()
    except OSError as e:
        raise SpecError([SpecProblem(display_path(path), None, "", f"cannot read: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise SpecError([SpecProblem(display_path(path), None, "", f"not UTF-8 text: {e.reason} at byte {e.start}")]) from None
    return parse_source(text, path)


@dataclass
class _Open:
    """A collection the event stream is inside of (see ``_check_events``)."""

    path: str
    mapping: bool
    anchor: str | None
    nodes: int = 1  # this collection and everything in it, aliases expanded
    depth: int = 1  # collections nested in it, itself included, aliases expanded
    children: int = 0
    key: str = ""  # a mapping's key whose value comes next


def _check_events(text: str, where: str) -> None:
    """Reject, from the event stream and before any data is built: nesting deeper than MAX_DEPTH
    (as written or through aliases), an alias inside the collection it names (recursive data),
    and aliases that add more than MAX_ALIAS_NODES nodes. One pass, no recursion: the size of
    every anchored node is known when its alias is met, since YAML defines anchors before use."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, depth) of what it names
    stack: list[_Open] = []
    through_aliases = 0

    def fail(event: Any, fld: str, message: str) -> None:
        raise SpecError([SpecProblem(where, event.start_mark.line + 1, fld, message)])

    def child_path() -> str:
        """Field path of the node that starts now (a mapping key: the mapping's own path)."""
        if not stack:
            return ""
        top = stack[-1]
        if not top.mapping:
            return f"{top.path}[{top.children}]"
        if top.children % 2 == 0:
            return top.path
        return f"{top.path}.{top.key}" if top.path else top.key

    def finished(nodes: int, depth: int, key: str = "?") -> None:
        if stack:
            top = stack[-1]
            if top.mapping and top.children % 2 == 0:
                top.key = key
            top.nodes += nodes
            top.depth = max(top.depth, depth + 1)
            top.children += 1

    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) + 1 > MAX_DEPTH:
                fail(event, child_path(), f"nested deeper than {MAX_DEPTH} levels")
            stack.append(_Open(child_path(), isinstance(event, yaml.MappingStartEvent), event.anchor))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = (done.nodes, done.depth)
            finished(done.nodes, done.depth)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = (1, 0)
            finished(1, 0, str(event.value))
        elif isinstance(event, yaml.AliasEvent):
            fld = child_path()
            if any(o.anchor == event.anchor for o in stack):
                fail(event, fld, f"alias *{event.anchor} is inside the collection &{event.anchor} it names: "
                                 "recursive data cannot be read")
            nodes, depth = sizes.get(event.anchor, (1, 0))  # an undefined alias: the composer says so
            through_aliases += nodes
            if through_aliases > MAX_ALIAS_NODES:
                fail(event, fld, f"aliases (*name) expand this document by more than {MAX_ALIAS_NODES:,} "
                                 "nodes: write the data out, or reuse less of it")
            if len(stack) + depth > MAX_DEPTH:
                fail(event, fld, f"alias *{event.anchor} nests the data deeper than {MAX_DEPTH} levels")
            finished(nodes, depth, f"*{event.anchor}")


def parse_source(text: str, path: Path) -> Source:
    where = display_path(path)
    data, node = _load(text, where)
    lines: dict[str, int] = {}
    texts: dict[str, str] = {}
    if node is not None:
        lines[""] = node.start_mark.line + 1
        _walk(node, "", lines, texts)
    return Source(path, data, lines, texts)


def parse_value(text: str, where: str, fld: str) -> Any:
    """One value given on the command line (``--set optim.lam=1e-3``), under the same limits as a
    file; text that is not YAML stays that text (the config's own checks judge it). A problem
    names ``where`` and the field."""
    try:
        data, _ = _load(text, where)
    except _SyntaxError:
        return text
    except SpecError as e:
        raise SpecError([SpecProblem(p.file, None, fld, p.message) for p in e.problems]) from None
    return data


class _SyntaxError(SpecError):
    """Text that is not YAML at all (as opposed to YAML beyond a limit)."""


def _load(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree of one YAML document, after every limit is checked; a key
    written twice in one mapping is an error (YAML would keep the last one silently)."""
    if len(text.encode()) > MAX_BYTES:
        raise SpecError([SpecProblem(where, None, "", f"text is over {MAX_BYTES:,} bytes")])
    try:
        _check_events(text, where)
        loader = YAML_LOADER(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_duplicate_keys(node, where)
            # Built from the checked node tree, not from a second parse of the text.
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        raise _SyntaxError([SpecProblem(where, line, "", f"YAML syntax error: {reason}")]) from None
    return data, node


def _check_duplicate_keys(root: yaml.Node, where: str) -> None:
    """Every mapping as written (aliases add none), each key once; iterative."""
    problems: list[SpecProblem] = []
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, prefix = todo.pop()
        if isinstance(node, yaml.ScalarNode) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend((item, f"{prefix}[{i}]") for i, item in enumerate(node.value))
            continue
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            fld = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                written = (key_node.tag, key_node.value)
                if written in first:
                    problems.append(SpecProblem(where, line, fld, f"key {key_node.value!r} is written twice in one "
                                                                  f"mapping (also on line {first[written]}); YAML would "
                                                                  "keep the last silently"))
                else:
                    first[written] = line
            todo.append((value_node, fld))
    if problems:
        raise SpecError(sorted(problems, key=lambda p: p.line or 0))


def _walk(node: yaml.Node, prefix: str, lines: dict[str, int], texts: dict[str, str],
          seen: set[int] | None = None) -> None:
    if isinstance(node, yaml.ScalarNode):
        texts[prefix] = node.value
        return
    # An alias (*x) is the same node object as its anchor: walk each collection once, so a
    # recursive alias cannot recurse forever and nested aliases cannot blow up exponentially.
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _walk(value_node, key, lines, texts, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines[key] = item.start_mark.line + 1
            _walk(item, key, lines, texts, seen)
