"""The low-gradient simulation (paper Fig. 4 / supplement Fig. 3): its config and its parser.

In:  a run group's ``simulate:`` mapping, ``{optimizer: adam, regularizer: l2, lams: [1e-4, 1e-5],
     steps: 10000, ...}``, and the seeds.
Out: a frozen, validated ``DecayConfig`` (what ``claimbench.simulate.simulate_decay`` runs) or
``(field, message)`` problems. No torch: claims are parsed and planned without it; the simulation
itself (``claimbench.simulate``) is imported only when a check or a plot evaluates it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from claimbench.config import BASE_LR, OPTIMIZERS
from claimbench.runconfig import parse_number, unknown_keys, unknown_name_message
from claimbench.config import REGULARIZERS as _ALL_REGULARIZERS

# The training loop's regularizers (claimbench.config); "none" is no experiment here.
REGULARIZERS = tuple(r for r in _ALL_REGULARIZERS if r != "none")


def paper_lr(optimizer: str) -> float:
    """The paper's learning rate for ``optimizer``."""
    return float(BASE_LR[optimizer])


@dataclass(frozen=True)
class DecayConfig:
    """One optimizer/regulariser pair over a set of lambdas and seeds.

    ``steps`` defaults to 10,000 iterations: long enough that Adam+L2 at lambda=1e-4 has taken the
    scalar from 1 to its noise floor (mean |theta| <= 1e-2 from iteration ~1,800; ~6e-3 on
    average after) while Adam+WD and SGD+L2 at the same lambda end near exp(-1) ~ 0.37-0.5, the
    paper's contrast.
    ``lr=None`` uses the paper's rate for the optimizer. ``record_every`` thins the recorded curve;
    iteration 0 (theta=1) and the last iteration are always recorded.
    """

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

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.optimizer not in BASE_LR:
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer: unknown {self.regularizer!r}; known: {', '.join(REGULARIZERS)}")
        if not self.lams:
            raise ValueError("lams: need at least one lambda")
        if len(set(self.lams)) != len(self.lams):
            raise ValueError(f"lams: duplicates in {self.lams}")
        for lam in self.lams:
            if not (0.0 <= lam < 1.0):
                raise ValueError(f"lams: {lam} outside [0, 1)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need at least one, no duplicates; got {self.seeds}")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if self.high_grad_steps < 0:
            raise ValueError(f"high_grad_steps: must be >= 0, got {self.high_grad_steps}")
        if self.high_grad_std < 0 or self.low_grad_std < 0:
            raise ValueError("high_grad_std / low_grad_std: must be >= 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.record_every < 1:
            raise ValueError(f"record_every: must be >= 1, got {self.record_every}")

    @property
    def effective_lr(self) -> float:
        return paper_lr(self.optimizer) if self.lr is None else float(self.lr)

    def recorded_steps(self) -> list[int]:
        steps = list(range(0, self.steps + 1, self.record_every))
        if steps[-1] != self.steps:
            steps.append(self.steps)
        return steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lams"] = list(self.lams)
        d["seeds"] = list(self.seeds)
        return d


_INTS = ("steps", "high_grad_steps", "record_every")
_FLOATS = ("high_grad_std", "low_grad_std", "lr")


def parse_simulation(raw: Any, seeds: list[int]) -> tuple[DecayConfig | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [("", "expected a mapping: optimizer, regularizer, lams, and optionally steps, lr, ...")]
    known = [f.name for f in dataclasses.fields(DecayConfig) if f.name != "seeds"]
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
            if value not in REGULARIZERS:
                problems.append((key, unknown_name_message("regularizer", value, REGULARIZERS)))
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
    try:
        return DecayConfig(**values), []
    except ValueError as e:  # the config's own checks (e.g. on seeds), each message naming its field
        field_name, _, message = str(e).partition(": ")
        return None, [(field_name if field_name in values else "", message or str(e))]


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
