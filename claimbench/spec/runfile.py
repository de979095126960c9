"""A run-config YAML file plus ``--set key=value`` overrides -> RunConfig.

In:  path to a YAML mapping with sections model/data/optim/train, and dotted overrides.
Out: RunConfig, or SpecError listing every bad field with file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from claimbench.config import RunConfig
from claimbench.runconfig import deep_merge, dotted_to_nested, has_path, parse_run_config
from claimbench.spec.source import SpecError, SpecProblem, load_source, parse_value


def parse_overrides(items: Iterable[str]) -> dict[str, object]:
    """``["optim.lam=1e-3", "train.phases=[100,20]"]`` -> nested dict; values parsed as YAML."""
    dotted: dict[str, object] = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(SpecProblem("--set", None, item, "expected key=value, e.g. optim.lam=1e-3"))
            continue
        try:
            dotted[key.strip()] = parse_value(raw, "--set", key.strip())
        except SpecError as e:
            problems.extend(e.problems)
    if problems:
        raise SpecError(problems)
    return dotted_to_nested(dotted)


def load_run_config(path: Path | None, overrides: Iterable[str] = ()) -> RunConfig:
    raw: dict = {}
    source = None
    if path is not None:
        source = load_source(path)
        if not isinstance(source.data, dict):
            raise SpecError([source.problem("", "expected a mapping with sections model/data/optim/train")])
        raw = source.data
    override = parse_overrides(overrides)
    config, errors = parse_run_config(deep_merge(raw, override))
    if errors:
        problems = []
        for e in errors:
            top = e.path.split(".")[0] if e.path else ""
            from_override = has_path(override, e.path) or (top and top not in raw)
            if source is not None and not from_override:
                problems.append(source.problem(e.path, e.message))
            else:
                problems.append(SpecProblem("--set", None, e.path, e.message))
        raise SpecError(problems)
    assert config is not None
    return config

