"""Cache keys and code fingerprints: which code a stored result depends on.

In:  a ``RunConfig``; the package's own source files.
Out: ``run_key(config)`` (sha256 hex, the entry's name), ``training_fingerprint()`` and
     ``metrics_fingerprint()`` (16 hex digits each).

The training key covers what changes a trained network: the canonical config (which includes
every setting, precision among them), the cache format and the *behaviour* of the training code
(``config.py``, ``data/``, ``train/``). Behaviour, not bytes: each file is parsed and its syntax
tree, without docstrings, is serialised field by field, so comments, docstrings, blank lines and
formatting do not change the fingerprint while any change to what the code does (a constant, an
operator, a call) does. The serialisation leaves out empty and absent fields, so the fields newer
Pythons add with empty defaults (``type_params``) do not split caches between Python versions.

The measurement code (``measure/``) is not in the training key: a stored entry records the
metrics fingerprint it was measured with, and an entry measured by other code has its metrics
recomputed from its stored weights (see ``store.RunStore.get``), without retraining.

No torch here: planning and reporting compute keys without loading it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from repro.config import RunConfig

# Version of the entry layout (files, manifest fields). Part of every key: a new layout never
# reads an old one.
CACHE_FORMAT = 2
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Source whose behaviour changes what training produces. The CLI, claims, reports, the cache
# itself and the measurement code may change freely without retraining anything.
TRAINING_CODE = ("config.py", "data", "train")
# Source whose behaviour changes the metrics computed from trained weights.
METRICS_CODE = ("measure",)


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


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
    """The behaviour of a Python source file as text: its syntax tree without docstrings."""
    tree = ast.parse(source, filename)
    _strip_docstrings(tree)
    out: list[str] = []
    _dump(tree, out)
    return "".join(out)


def fingerprint(parts: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits over the normalised syntax of every .py file under ``parts``."""
    digest = hashlib.sha256()
    for name in parts:
        path = package_dir / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f.relative_to(package_dir).as_posix().encode() + b"\0")
            digest.update(normalised_source(f.read_text(encoding="utf-8"), str(f)).encode() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def training_fingerprint() -> str:
    """Fingerprint of the code whose behaviour changes a trained network."""
    return fingerprint(TRAINING_CODE)


@functools.lru_cache(maxsize=1)
def metrics_fingerprint() -> str:
    """Fingerprint of the code that turns trained weights into metrics."""
    return fingerprint(METRICS_CODE)


def run_key(config: RunConfig, fingerprint: str | None = None) -> str:
    """The cache key of ``config`` under the given (default: this code's) training fingerprint."""
    fp = training_fingerprint() if fingerprint is None else fingerprint
    payload = f"repro-cache-v{CACHE_FORMAT}\n{fp}\n{config.canonical_json()}"
    return hashlib.sha256(payload.encode()).hexdigest()
