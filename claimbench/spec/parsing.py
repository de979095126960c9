"""What the claim parser (claimbench.spec.claims) and the table parser (claimbench.spec.tables) share.

In:  a parsed YAML ``Source`` and raw values from it.
Out: ``Problems`` (the per-file problem collector: every problem names file, line and field,
     unknown keys come with a did-you-mean), ``resolve_base`` (a run-config mapping with its
     ``include:`` files merged under it), ``parse_seeds``, ``expand_seeds`` (a run config once
     per seed, its problems reported where they were written: ``config_error_field``),
     ``flatten`` and ``load_all`` (every file of a folder, with one error listing the problems of
     all of them). One definition each, so that claims
     and tables read bases and seeds the same way and report problems the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from claimbench.config import SEED_LIMIT, RunConfig
from claimbench.runconfig import deep_merge, has_path, parse_run_config, seed_problem, unknown_keys
from claimbench.spec.source import Source, SpecError, SpecProblem, display_path, load_source

MAX_INCLUDE_DEPTH = 5
TABLES_FOLDER = "tables"  # <claims folder>/tables/*.yaml: the paper's tables, beside the claims
T = TypeVar("T")


class Problems:
    """The problems found in one file (``source``), each once."""

    def __init__(self, source: Source):
        self.source = source
        self.problems: list[SpecProblem] = []

    def add(self, field_path: str, message: str) -> None:
        problem = self.source.problem(field_path, message)
        if problem not in self.problems:  # a bad base field is met once per run group or cell
            self.problems.append(problem)

    def extend(self, problems: Iterable[SpecProblem]) -> None:
        """Problems of another file (an included base, a table): kept as they are, each once."""
        self.problems.extend(p for p in problems if p not in self.problems)

    def unknown_keys(self, raw: dict, known: Iterable[str], fld: str, what: str = "key") -> None:
        """The one unknown-key check: every key of ``raw`` not in ``known``, with a did-you-mean."""
        for key, message in unknown_keys(raw, known, what):
            self.add(f"{fld}.{key}" if fld else key, message)


def claims_folder(path: Path) -> Path:
    """The claims folder a claim or table file belongs to: a claim's own folder, or for a table
    (``<claims>/tables/x.yaml``) the folder above; what its includes may not leave."""
    folder = Path(path).resolve().parent
    return folder.parent if folder.name == TABLES_FOLDER else folder


def resolve_base(base: Any, fld: str, errs: Problems, chain: tuple[Path, ...] = ()) -> dict:
    """A run-config mapping; ``include: file`` (relative to the file being read, ``errs.source``)
    is merged under it, recursively. No include may leave the claims folder of the file the
    chain started from (``claims_folder``; claims and tables alike: an included file is read and
    its keys are named in error messages, so it would show any YAML file of the machine).
    A problem of an included file is reported at the ``include:`` that brought it in, with the
    included file's own file, line and field in its message, so both ends are named."""
    if base is None:
        return {}
    if not isinstance(base, dict):
        errs.add(fld, "expected a mapping (a run config, optionally with include: <file>)")
        return {}
    base = dict(base)
    include = base.pop("include", None)
    if include is None:
        return base
    inc_fld = f"{fld}.include" if fld else "include"
    if not isinstance(include, str) or not include.strip():
        errs.add(inc_fld, "expected a file name relative to this file")
        return base
    chain = chain or (errs.source.path.resolve(),)
    root = claims_folder(chain[0])
    inc_path = (errs.source.path.parent / include).resolve()
    if not inc_path.is_relative_to(root):
        errs.add(inc_fld, f"{include!r} is outside the claims folder {display_path(root)}")
        return base
    if inc_path in chain:
        cycle = " -> ".join(display_path(p) for p in (*chain[chain.index(inc_path):], inc_path))
        errs.add(inc_fld, f"{include!r} includes itself: {cycle}")
        return base
    if len(chain) > MAX_INCLUDE_DEPTH:
        errs.add(inc_fld, f"includes nest more than {MAX_INCLUDE_DEPTH} deep")
        return base
    try:
        inc = load_source(inc_path)
    except SpecError as e:
        for problem in e.problems:
            errs.add(inc_fld, f"included {problem}")
        return base
    if not isinstance(inc.data, dict):
        errs.add(inc_fld, f"{include} must contain a mapping")
        return base
    inc_errs = Problems(inc)
    included = resolve_base(inc.data, "", inc_errs, (*chain, inc_path))
    for problem in inc_errs.problems:
        errs.add(inc_fld, f"included {problem}")
    return deep_merge(included, base)


def parse_seeds(seeds: Any, fld: str, errs: Problems) -> list[int] | None:
    """A non-empty list of distinct seeds (duplicates are reported and kept); None if invalid."""
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        errs.add(fld, "expected a non-empty list of integers")
        return None
    for i, seed in enumerate(seeds):
        if not 0 <= seed < SEED_LIMIT:
            errs.add(f"{fld}[{i}]", seed_problem(seed))
            return None
    if len(set(seeds)) != len(seeds):
        errs.add(fld, f"duplicated seeds {seeds}")
    return seeds


def expand_seeds(raw_cfg: dict, seeds: Iterable[int], where: Callable[[str], str],
                 errs: Problems) -> list[RunConfig] | None:
    """One RunConfig per seed; each config problem is reported at ``where(path)``, the field the
    user wrote it in. None when the config is invalid (reported once, not per seed)."""
    configs = []
    for seed in seeds:
        cfg, cerrs = parse_run_config(deep_merge(raw_cfg, {"train": {"seed": seed}}))
        for e in cerrs:
            errs.add(where(e.path), e.message)
        if cerrs:
            return None
        configs.append(cfg)
    return configs


def config_error_field(path: str, overrides: Iterable[tuple[str, dict]], base_fld: str) -> str:
    """The field a run-config problem at ``path`` was written in: the first override (field
    prefix, nested mapping) that sets it, else the base."""
    for prefix, nested in overrides:
        if has_path(nested, path):
            return f"{prefix}.{path}"
    return f"{base_fld}.{path}" if path else base_fld


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: {"optim": {"lam": 1}} -> {"optim.lam": 1}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def load_all(paths: Iterable[Path], load: Callable[[Path], T], ident: Callable[[T], str],
             duplicate: Callable[[T, T], SpecProblem]) -> list[T]:
    """``load`` every file; raise one SpecError with the problems of all files (a problem met in
    several, e.g. a broken shared file, once), and ``duplicate(spec, earlier)`` for each spec whose
    ``ident`` an earlier one has."""
    specs: list[T] = []
    problems: list[SpecProblem] = []
    for path in paths:
        try:
            specs.append(load(path))
        except SpecError as e:
            problems.extend(p for p in e.problems if p not in problems)
    seen: dict[str, T] = {}
    for spec in specs:
        key = ident(spec)
        if key in seen:
            problems.append(duplicate(spec, seen[key]))
        seen[key] = spec
    if problems:
        raise SpecError(problems)
    return specs
