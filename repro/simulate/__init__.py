"""Toy simulations from the paper that need no data or network (Fig. 4 / supplement Fig. 3).

Names are loaded lazily so ``python -m repro.simulate.low_gradient`` runs without a warning.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "OPTIMIZERS",
    "REGULARIZERS",
    "DecayConfig",
    "DecayResult",
    "main_gradients",
    "make_optimizer",
    "plot_decay",
    "simulate_decay",
    "simulate_grid",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("repro.simulate.low_gradient"), name)
    raise AttributeError(f"module 'repro.simulate' has no attribute {name!r}")
