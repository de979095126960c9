"""The behaviour of a Python source file as text: what code fingerprints are computed from.

In:  Python source text.
Out: ``normalised_source(text)``: its syntax tree without docstrings and without the words of its
     error and log messages, serialised field by field; ``parse_source`` (thread-safe parsing).

Comments, docstrings, blank lines and formatting do not change the result, nor does rewording an
error or a log line; raising a different exception type, or raising where nothing was raised,
does. The serialisation leaves out empty and absent fields, so the fields newer Pythons add with
empty defaults (``type_params``) do not split fingerprints between Python versions.
"""

from __future__ import annotations

import ast
import functools
import threading

# Calls whose arguments are messages for people: logging methods.
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})


# CPython 3.11 can fail ast.parse run in two threads at once ("AST constructor recursion depth
# mismatch"); keys are computed from executor threads (a Ray driver's, the pytest plugin's), so
# parsing is one thread at a time.
_PARSE_LOCK = threading.Lock()


def parse_source(source: str, filename: str) -> ast.AST:
    with _PARSE_LOCK:
        return ast.parse(source, filename)


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


# A pure function of the text, asked again for the same files whenever fingerprints are computed
# (each key's code parts, each edited copy in the tests); parsing is most of its cost.
@functools.lru_cache(maxsize=1024)
def normalised_source(source: str, filename: str = "<source>") -> str:
    """The behaviour of a Python source file as text: its syntax tree without docstrings and
    without the words of its error and log messages."""
    tree = parse_source(source, filename)
    _strip_docstrings(tree)
    _strip_messages(tree)
    out: list[str] = []
    _dump(tree, out)
    return "".join(out)
