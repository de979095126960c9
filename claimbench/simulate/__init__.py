"""Toy simulations from the paper that need no data or network (Fig. 4 / supplement Fig. 3).

Names are loaded lazily so ``python -m claimbench.simulate.low_gradient`` runs without a warning, and
so that ``DecayConfig`` (what claim files hold) comes without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_CONFIG = ("OPTIMIZERS", "REGULARIZERS", "DecayConfig", "paper_lr")
_RESULT = ("DecayResult", "decay_result_of", "metrics_of", "plot_decay", "steps_to_level")
_SIMULATION = ("main_gradients", "simulate_decay", "simulate_grid", "simulation_metrics", "simulation_record")
__all__ = [*_CONFIG, *_RESULT, *_SIMULATION]


def __getattr__(name: str) -> Any:
    if name in _CONFIG:
        return getattr(importlib.import_module("claimbench.spec.simulation"), name)
    if name in _RESULT:
        return getattr(importlib.import_module("claimbench.simulate.result"), name)
    if name in _SIMULATION:
        return getattr(importlib.import_module("claimbench.simulate.low_gradient"), name)
    raise AttributeError(f"module 'claimbench.simulate' has no attribute {name!r}")
