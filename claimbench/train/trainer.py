"""Runs trained by a registered trainer (``train.trainer``) instead of claimbench's loop.

In:  one RunConfig that names a trainer (``claimbench.plugins.TrainerPlugin``) and the run's
     ImageData on the training device.
Out: a ``TrainOutcome`` as the loop gives one: the trained network (claimbench's own build of the
     config's model, holding the weights the trainer returned), its steps, wall time and history,
     and the trainer's metrics and provenance; ``TrainerError`` when what the trainer returned
     cannot be judged.

claimbench keeps its part of the run: it seeds (torch, ``random`` and numpy's global generator from
``train.seed``, then builds the network, as the loop does), hands the trainer the network and
data, and checks what comes back before anything is stored. Fail closed: weights that do not
load into the config's network, a declared metric missing, an undeclared one, or any metric
or weight that is not a finite number is an error naming the trainer, and the run is not
recorded (a claim that needs it is an error, never reproduced). The history records the BN
snapshots at the start and the end (what claimbench's plots read) and the trainer's own history
under ``trainer``.

``claimbench.train.train_runs`` calls ``train_with_trainer`` for such a run (and sets the run's
float32 precision first), so this module is part of the training code whose fingerprint every
run's provenance holds, and of the behaviour suite (``tests/golden/``) that pins its semantics.
"""

from __future__ import annotations

import json
import math
import numbers
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from claimbench.config import RunConfig
from claimbench.data.base import ImageData
from claimbench.plugins import PluginError, TrainerResult, TrainerRun, trainer_plugin
from claimbench.train.device import fp32_flags
from claimbench.train.models import build_model
from claimbench.train.outcome import TrainOutcome, bn_snapshot


class TrainerError(PluginError):
    """A trainer's run that cannot be recorded; the message names the trainer and what is wrong."""


def seed_everything(seed: int) -> None:
    """The run's seed in every global generator a trainer may draw from."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train_with_trainer(config: RunConfig, data: ImageData, device: torch.device,
                       on_step: Callable[[int, int], None] | None = None,
                       checkpoint: Path | None = None) -> TrainOutcome:
    """Train ``config``'s run with its trainer. ``checkpoint`` reaches a resumable trainer only; a
    trainer that is not resumable starts over when its run is interrupted."""
    resolved = trainer_plugin(config.train.trainer)
    plugin = resolved.plugin
    where = f"trainer {resolved.name} ({resolved.entry_point}, {resolved.distribution} {resolved.version})"
    total = config.total_steps(data.train_size)

    def build() -> torch.nn.Module:
        return build_model(config.model, data.in_channels, data.image_size, data.num_classes, config.data.dataset)

    seed_everything(config.train.seed)
    model = build().to(device).train()
    initial = bn_snapshot(model)

    def report(step: int) -> None:
        if on_step is not None:
            on_step(int(step), total)

    run = TrainerRun(config=config, fields=config.train.params, data=data, device=device, model=model,
                     total_steps=total, checkpoint=checkpoint if plugin.resumable else None, report=report)
    started = time.perf_counter()
    try:
        result = plugin.train(run)
    except Exception as e:  # noqa: BLE001  (any error of the user's trainer is reported, named)
        raise TrainerError(f"{where}: train raised {type(e).__name__}: {e}") from e
    wall = time.perf_counter() - started
    problems = result_problems(result, plugin.metrics)
    if problems:
        raise TrainerError(f"{where}: " + "; ".join(problems))
    # The weights go into a fresh build, so that what is measured and stored is the config's
    # network whatever the trainer did to the one it was handed.
    with torch.random.fork_rng(devices=[]):
        trained = build()
    try:
        trained.load_state_dict(dict(result.state_dict), strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise TrainerError(f"{where}: the weights it returned do not fit the network of the config's model "
                           f"section ({config.model.arch}): {e}") from None
    bad = sorted(name for name, t in trained.state_dict().items()
                 if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise TrainerError(f"{where}: the weights it returned are not finite in {', '.join(bad[:5])}"
                           f"{' and more' if len(bad) > 5 else ''}; a diverged run is not recorded")
    trained = trained.to(device).eval()
    steps = total if result.steps is None else result.steps
    history = {"snapshot_steps": [0, steps], "snapshots": [initial, bn_snapshot(trained)],
               "trainer": dict(result.history or {})}
    provenance = {
        "name": resolved.name,
        "entry_point": resolved.entry_point,
        "distribution": resolved.distribution,
        "version": resolved.version,
        "resumable": plugin.resumable,
        "metrics": list(plugin.metrics),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "fp32_flags": fp32_flags(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torch_threads": torch.get_num_threads(),
    }
    metrics = {name: float(value) for name, value in result.metrics.items()}
    return TrainOutcome(trained, steps, wall, history, None, None, trainer_metrics=metrics, trainer=provenance)


def _finite(value: numbers.Real) -> bool:
    """A real number a float can hold and that is neither NaN nor infinite (10**400 is not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def result_problems(result: Any, declared: tuple[str, ...]) -> list[str]:
    """Why ``result`` cannot be recorded for a trainer that declares the metrics ``declared``
    (empty: it can). The weights are checked separately, against the network they must fit."""
    if not isinstance(result, TrainerResult):
        return [f"train returned a {type(result).__name__}, not a claimbench.plugins.TrainerResult"]
    problems = []
    if not isinstance(result.state_dict, Mapping):
        problems.append(f"state_dict is a {type(result.state_dict).__name__}, not a mapping of weights")
    if not isinstance(result.metrics, Mapping):
        return problems + [f"metrics is a {type(result.metrics).__name__}, not a mapping name -> number"]
    missing = [m for m in declared if m not in result.metrics]
    undeclared = sorted(str(m) for m in result.metrics if m not in declared)
    if missing:
        problems.append(f"it declares the metrics {', '.join(missing)} but did not report them")
    if undeclared:
        problems.append(f"it reported {', '.join(undeclared)}, which it does not declare in metrics")
    for name in declared:
        value = result.metrics.get(name)
        if name not in result.metrics:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            problems.append(f"metric {name} is {type(value).__name__} {value!r}, not a real number (use float(...))")
        elif not _finite(value):
            # An integer is here only when a float cannot hold it.
            shown = "an integer beyond float range" if isinstance(value, numbers.Integral) else str(float(value))
            problems.append(f"metric {name} is {shown}: a metric must be finite (a diverged run is not recorded)")
    if result.history is not None:
        if not isinstance(result.history, Mapping):
            problems.append(f"history is a {type(result.history).__name__}, not a mapping")
        else:
            try:
                json.dumps(dict(result.history), allow_nan=False, sort_keys=True)
            except (TypeError, ValueError) as e:
                problems.append(f"history cannot be stored as JSON with finite numbers ({e})")
            except RecursionError:
                problems.append("history is nested too deep to be stored as JSON")
    if result.steps is not None and (isinstance(result.steps, bool) or not isinstance(result.steps, int)
                                     or result.steps < 0):
        problems.append(f"steps is {result.steps!r}, not a count of steps (or None)")
    return problems
