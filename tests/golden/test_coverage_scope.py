"""What ``make golden``'s coverage counts cannot shrink unseen: every training module is measured,
nothing is excluded but by the patterns of pyproject.toml's ``[tool.coverage.report]``, and every
statement those patterns hide is, read from the code itself, a refusal (a raise, or a reason
collected for one), a log call, or code that runs only on CUDA."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import coverage
from coverage.misc import join_regex
from coverage.python import PythonParser

from claimbench.cache.keys import PACKAGE_DIR, _module_path, training_modules

ROOT = Path(__file__).resolve().parents[2]
LOG_LEVELS = {"debug", "info", "warning", "error", "exception"}


def _training_files() -> list[Path]:
    return [_module_path(m, PACKAGE_DIR) for m in training_modules()]


def _config() -> coverage.config.CoverageConfig:
    return coverage.Coverage(config_file=str(ROOT / "pyproject.toml")).config


def test_every_training_module_is_measured_and_nothing_is_omitted():
    files = _training_files()
    assert files and all(f is not None and f.is_file() for f in files)
    # The entry points' packages and the loop are there whatever the import graph becomes.
    names = {str(f.relative_to(PACKAGE_DIR.parent)) for f in files}
    assert {"claimbench/train/__init__.py", "claimbench/train/loop.py", "claimbench/data/__init__.py"} <= names
    config = _config()
    omitted = [str(f) for f in files for pattern in (*(config.run_omit or ()), *(config.report_omit or ()))
               if fnmatch.fnmatch(str(f), pattern)]
    assert not omitted, f"coverage omits training code: {omitted}"
    assert not config.run_include and not config.report_include, "make golden's --include is the one file list"
    pragmas = [f"{f}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
               if re.search(coverage.config.DEFAULT_EXCLUDE[0], line)]
    assert not pragmas, f"exclusions live in pyproject.toml, not in the code: {pragmas}"


def test_make_golden_measures_the_training_files_and_fails_under_95():
    recipe = (ROOT / "Makefile").read_text().split("\ngolden:")[1].split("\n\n")[0]
    assert "tests.golden.training_files" in recipe and "--fail-under=95" in recipe
    assert "--rcfile=/dev/null" in recipe, "the strict number (nothing excluded) is printed too"


def _is_cuda_test(node: ast.AST) -> bool:
    """``<something>.type == "cuda"``."""
    return any(isinstance(n, ast.Compare) and isinstance(n.left, ast.Attribute) and n.left.attr == "type"
               and any(isinstance(c, ast.Constant) and c.value == "cuda" for c in n.comparators)
               for n in ast.walk(node))


def _refusal_reason(node: ast.AST, function: str | None) -> bool:
    """A statement that adds to a list of problems (inside a ``*problems`` function) or returns one."""
    if function is None or not function.endswith("problems"):
        return False
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return isinstance(func, ast.Attribute) and func.attr == "append" and getattr(func.value, "id", None) == "problems"
    if isinstance(node, ast.AugAssign):
        return getattr(node.target, "id", None) == "problems"
    if isinstance(node, ast.Return):
        value = node.value
        if isinstance(value, ast.BinOp) and getattr(value.left, "id", None) == "problems":
            value = value.right
        return isinstance(value, ast.List) and all(isinstance(e, (ast.JoinedStr, ast.Constant)) for e in value.elts)
    return False


def _kind(node: ast.AST, function: str | None, cuda: bool, typing_only: bool) -> str | None:
    """Why ``node`` may go uncounted, or None."""
    if isinstance(node, ast.Raise):
        return "refusal"
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
            and getattr(node.value.func.value, "id", None) == "log" and node.value.func.attr in LOG_LEVELS):
        return "report"
    if _refusal_reason(node, function):
        return "refusal reason"
    if cuda:
        return "cuda only"
    if typing_only:
        return "type checking only"  # coverage's own default: never runs
    return None


def _statements(tree: ast.AST) -> dict[int, tuple[ast.AST, str | None, bool, bool]]:
    """Each statement by its first line: (statement, enclosing function, whether only CUDA runs it,
    whether it is under ``if TYPE_CHECKING:``)."""
    out: dict[int, tuple[ast.AST, str | None, bool, bool]] = {}

    def visit(node: ast.AST, function: str | None, cuda: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_cuda, inner_typing = cuda, typing_only
            if isinstance(child, ast.ClassDef) and child.name == "CudaGraphBackend":
                inner_cuda = True
            if isinstance(child, ast.If) and not child.orelse:
                inner_cuda = inner_cuda or _is_cuda_test(child.test)
                inner_typing = inner_typing or getattr(child.test, "id", None) == "TYPE_CHECKING"
            if isinstance(child, (ast.stmt, ast.ExceptHandler)):  # coverage counts an except clause too
                out.setdefault(child.lineno, (child, function, inner_cuda, inner_typing))
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            visit(child, name, inner_cuda, inner_typing)

    visit(tree, None, False, False)
    return out


def test_the_exclusions_hide_only_refusals_reports_and_cuda_code():
    regex = join_regex(_config().exclude_list)
    unexplained, hidden = [], 0
    for path in _training_files():
        text = path.read_text()
        every = PythonParser(text=text, filename=str(path), exclude=None)
        every.parse_source()
        counted = PythonParser(text=text, filename=str(path), exclude=regex)
        counted.parse_source()
        statements = _statements(ast.parse(text))
        for line in sorted(every.statements - counted.statements):
            hidden += 1
            if _kind(*statements[line]) is None:
                unexplained.append(f"{path.relative_to(ROOT)}:{line}: {text.splitlines()[line - 1].strip()}")
    assert hidden, "nothing excluded: then the strict and the counted numbers are one"
    assert not unexplained, "excluded, but no refusal, report or CUDA-only code:\n  " + "\n  ".join(unexplained)


def test_every_list_of_problems_ends_in_a_raise():
    """A ``problems`` list outside a ``*problems`` function is followed by ``if problems: raise``:
    what collects refusal reasons is refusal code, which is why the exclusions may hide it."""
    missing = []
    for path in _training_files():
        tree = ast.parse(path.read_text())
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            if func.name.endswith("problems"):
                continue
            assigned = [n for n in ast.walk(func) if isinstance(n, ast.Assign)
                        and any(getattr(t, "id", None) == "problems" for t in n.targets)]
            raised = any(isinstance(n, ast.If) and getattr(n.test, "id", None) == "problems"
                         and any(isinstance(s, ast.Raise) for s in n.body) for n in ast.walk(func))
            if assigned and not raised:
                missing.append(f"{path.relative_to(ROOT)}: {func.name}")
    assert not missing, f"problems collected but not raised: {missing}"
