"""A run group's ``simulate:`` mapping -> ``SimulationSpec`` (the low-gradient simulation, Fig. 4).

In:  ``{optimizer: adam, regularizer: l2, lams: [1e-4, 1e-5], steps: 10000, ...}`` and the seeds.
Out: a frozen ``SimulationSpec`` or ``(field, message)`` problems, without importing torch: the
simulation itself (``repro.simulate``) is imported only when a check or a plot evaluates it.
``decay_config()`` hands the same values to ``repro.simulate.DecayConfig``, whose fields these
are (tests/test_spec.py pins the two field lists together).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from repro.config import OPTIMIZERS, parse_number, unknown_keys, unknown_name_message

SIM_REGULARIZERS = ("l2", "wd")


@dataclass(frozen=True)
class SimulationSpec:
    optimizer: str
    regularizer: str
    lams: tuple[float, ...]
    steps: int = 10000
    high_grad_steps: int = 100
    high_grad_std: float = 1e-3
    low_grad_std: float = 1e-5
    lr: float | None = None
    seeds: tuple[int, ...] = (0,)
    record_every: int = 10

    def decay_config(self):
        from repro.simulate import DecayConfig

        return DecayConfig(**dataclasses.asdict(self))

    # The simulation code reads its config by attribute; a SimulationSpec can stand in for a
    # DecayConfig wherever one is read (plots pass group.simulate to simulate_decay).


_INTS = ("steps", "high_grad_steps", "record_every")
_FLOATS = ("high_grad_std", "low_grad_std", "lr")


def parse_simulation(raw: Any, seeds: list[int]) -> tuple[SimulationSpec | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [("", "expected a mapping: optimizer, regularizer, lams, and optionally steps, lr, ...")]
    known = [f.name for f in dataclasses.fields(SimulationSpec) if f.name != "seeds"]
    problems = unknown_keys(raw, known, "simulation field")
    values: dict[str, Any] = {"seeds": tuple(seeds)}
    for key, value in raw.items():
        if key not in known:
            continue
        elif key == "optimizer":
            if value not in OPTIMIZERS:
                problems.append((key, unknown_name_message("optimizer", value, OPTIMIZERS)))
            values[key] = value
        elif key == "regularizer":
            if value not in SIM_REGULARIZERS:
                problems.append((key, unknown_name_message("regularizer", value, SIM_REGULARIZERS)))
            values[key] = value
        elif key == "lams":
            lams = _lams(value)
            if isinstance(lams, str):
                problems.append((key, lams))
            values[key] = lams
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append((key, f"expected an integer >= 1, got {value!r}"))
            values[key] = value
        else:  # _FLOATS
            try:
                x = None if (key == "lr" and value is None) else float(parse_number(value))
            except ValueError as e:
                problems.append((key, str(e)))
                continue
            if x is not None and x <= 0:
                problems.append((key, f"must be > 0, got {value!r}"))
            values[key] = x
    for key in ("optimizer", "regularizer", "lams"):
        if key not in raw:
            problems.append((key, "required"))
    if problems:
        return None, problems
    return SimulationSpec(**values), []


def _lams(value: Any) -> tuple[float, ...] | str:
    if not isinstance(value, list) or not value:
        return "expected a non-empty list of lambdas"
    try:
        lams = tuple(float(parse_number(v)) for v in value)
    except ValueError as e:
        return str(e)
    if len(set(lams)) != len(lams):
        return f"duplicated lambdas {list(lams)}"
    if not all(0 <= lam < 1 for lam in lams):
        return f"every lambda must satisfy 0 <= lambda < 1, got {list(lams)}"
    return lams
