"""Markdown tables whose cells cannot break them: every report table goes through here.

In:  rows of cells (any text: claim reasons hold ``|gamma|``, run names hold ``_``, a reason may
     span lines) and headers.
Out: a GitHub-flavoured Markdown table in which each cell reads back as the text it was given:
     the characters Markdown would take as structure or emphasis (``|``, ``*``, ``_``, backticks,
     ``\\``) are backslash-escaped, ``&`` and ``<`` become entities so no text turns into HTML,
     and a line break becomes ``<br>`` (a table row is one line). A cell a writer
     composes as Markdown on purpose (a link) is wrapped in ``Markup`` and written as it is.
     ``parse_markdown_table`` reads a table back (the property test renders arbitrary text and
     compares).
"""

from __future__ import annotations

from typing import Iterable

from tabulate import tabulate

# Backslash-escaped: what would end a cell (``|``), start emphasis or a code span, or escape the
# next character. ``&`` and ``<`` become entities, so that neither ``<br>`` nor an entity this
# writes can be mistaken for the text's own.
_ESCAPED = set("\\|*_`")
_ENTITIES = {"&": "&amp;", "<": "&lt;"}
_NAMED = {v: k for k, v in _ENTITIES.items()}


class Markup(str):
    """Cell text already written as Markdown (a link the writer composed): not escaped."""


def _needs_entity(ch: str, first_or_last: bool) -> bool:
    # Control characters and any whitespace but a plain inner space would split the row, be
    # trimmed by the table's padding, or vanish on rendering: they are written as numbers.
    return (not ch.isprintable() and ch != "\n") or (ch.isspace() and ch not in " \n") or (ch == " " and first_or_last)


def escape_cell(text: object) -> str:
    """One cell's text, safe inside a Markdown table row (see the module docstring)."""
    if isinstance(text, Markup):
        return str(text)
    s = "" if text is None else str(text)
    out = []
    for i, ch in enumerate(s):
        if ch == "\n":
            out.append("<br>")
        elif ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif _needs_entity(ch, i == 0 or i == len(s) - 1):
            out.append(f"&#{ord(ch)};")
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def markdown_table(rows: Iterable[Iterable[object]], headers: Iterable[object]) -> str:
    """A GitHub Markdown table with every header and cell escaped."""
    body = [[escape_cell(c) for c in row] for row in rows]
    head = [escape_cell(h) for h in headers]
    return tabulate(body, headers=head, tablefmt="github", disable_numparse=True)


def unescape_cell(text: str) -> str:
    """The text ``escape_cell`` was given, from what it wrote."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif text.startswith("<br>", i):
            out.append("\n")
            i += 4
        elif ch == "&" and ";" in text[i:]:
            entity = text[i:text.index(";", i) + 1]
            out.append(chr(int(entity[2:-1])) if entity.startswith("&#") else _NAMED[entity])
            i += len(entity)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split_row(line: str) -> list[str]:
    """A table line's cells, split at the pipes no backslash escapes."""
    cells, current, i = [], [], 0
    line = line.strip(" ")
    if line.startswith("|"):
        line = line[1:]
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            current.append(line[i:i + 2])
            i += 2
        elif line[i] == "|":
            cells.append("".join(current))
            current = []
            i += 1
        else:
            current.append(line[i])
            i += 1
    if "".join(current).strip(" "):
        cells.append("".join(current))
    return [c.strip(" ") for c in cells]


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a table ``markdown_table`` wrote, each cell unescaped. Lines are split at
    ``\\n`` only: any other line break inside a cell would already be a broken table."""
    lines = [line for line in text.split("\n") if line.strip()]
    headers = [unescape_cell(c) for c in _split_row(lines[0])]
    rows = [[unescape_cell(c) for c in _split_row(line)] for line in lines[2:]]
    return headers, rows
