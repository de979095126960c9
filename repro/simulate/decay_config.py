"""The settings of one low-gradient simulation (``DecayConfig``); no torch, so claims can be
parsed and planned without it.

In:  optimizer, regularizer, lambdas, iterations, noise levels, seeds.
Out: a frozen, validated ``DecayConfig`` (``ValueError`` naming the field for a bad value).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from repro.config import BASE_LR, OPTIMIZERS
from repro.config import REGULARIZERS as _ALL_REGULARIZERS

# The training loop's regularizers (repro.config); "none" is no experiment here.
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
