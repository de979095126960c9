"""YAML files with line numbers, so every error can name file, line and field.

In:  a path to a YAML file (claims, run configs).
Out: ``Source``: the plain data (safe loader: no tags, nothing executable) plus the line of every
key/item, addressed by dotted field path (``runs.axes.optim.name``, ``references[2].value``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# A claim file is a few kilobytes; anything near these limits is a mistake or an attack, and is
# rejected before the YAML composer (which recurses per nesting level) sees it.
MAX_BYTES = 1 << 20
MAX_DEPTH = 24
# libyaml's safe loader where PyYAML was built with it (10x faster: `repro validate` reads every
# claim and table); the same safe constructors either way.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _check_depth(text: str, path: Path) -> None:
    """Reject nesting deeper than MAX_DEPTH from the event stream (iterative, no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise SpecError([SpecProblem(display_path(path), line, "",
                                             f"nested deeper than {MAX_DEPTH} levels")])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_source(text: str, path: Path) -> Source:
    if len(text.encode()) > MAX_BYTES:
        raise SpecError([SpecProblem(display_path(path), None, "", f"text is over {MAX_BYTES:,} bytes")])
    try:
        _check_depth(text, path)
        node = yaml.compose(text, Loader=YAML_LOADER)
        data = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        raise SpecError([SpecProblem(display_path(path), line, "", f"YAML syntax error: {reason}")]) from None
    lines: dict[str, int] = {}
    texts: dict[str, str] = {}
    if node is not None:
        lines[""] = node.start_mark.line + 1
        _walk(node, "", lines, texts)
    return Source(path, data, lines, texts)


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
