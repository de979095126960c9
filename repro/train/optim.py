"""Optimizers, the two regularizers and the step schedule, exactly as the paper defines them.

In:  OptimConfig / TrainConfig and a model.
Out: torch optimizers (one per optimizer name, over the parameter groups of every run that uses
it; ``build_optimizers``), and ``Regularizer``, which applies L2 or weight decay around the
optimizer's step; the step schedule. The simulation (``repro.simulate``) uses the same two.

Paper section 2.1: for a parameter theta and 1 > lambda >= 0,
- L2 regularization adds lambda * theta to the gradient of the main objective *before* the
  optimizer computes its update (so Adam rescales it by its second-moment estimate), and
- weight decay multiplies theta by (1 - lambda) *after* the update, with lambda scaled by the same
  schedule as the learning rate (Table 1 caption).
Both act on every parameter, BatchNorm gammas and betas included. We apply them explicitly
rather than through torch's ``weight_decay`` arguments, whose meaning differs per optimizer
(AdamW's is decoupled and multiplied by the learning rate).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from repro.config import REGULARIZERS, OptimConfig, TrainConfig, phase_steps

log = logging.getLogger(__name__)

# Paper section 2.1 / supplement Fig. 3 hyperparameters; torch defaults where the paper is silent
# (Adamax, RMSProp, Adagrad).
ADAM_BETAS = (0.9, 0.99)

# (torch class, keyword arguments) per optimizer name.
OPTIMIZER_CLASSES: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {"betas": ADAM_BETAS, "eps": 1e-8}),
    "amsgrad": (torch.optim.Adam, {"betas": ADAM_BETAS, "eps": 1e-8, "amsgrad": True}),
    "adamax": (torch.optim.Adamax, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adadelta": (torch.optim.Adadelta, {"rho": 0.9, "eps": 1e-6}),
}

# Optimizers whose step can be captured in a CUDA graph: torch gives them ``capturable=True``
# (step counters on the device); SGD keeps no counter. Adagrad has no capturable mode.
GRAPH_SAFE = frozenset({"sgd", "adam", "amsgrad", "adamax", "rmsprop", "adadelta"})
_HAS_CAPTURABLE = frozenset({"adam", "amsgrad", "adamax", "rmsprop", "adadelta"})


@functools.lru_cache(maxsize=None)
def kernel_options(name: str, device_type: str) -> tuple[tuple[str, bool], ...]:
    """The fastest implementation the installed torch has for ``name`` on ``device_type``:
    fused (one kernel for all parameters) where it exists, else foreach, else the plain loop.

    Decided by trying one step on a one-element tensor, because support differs by torch
    version and device (fused Adagrad on CUDA is recent; nothing is fused on ``meta``). The update
    rule is the same whichever is chosen. Fused on CPU: the per-parameter Adam update was ~25% of
    a smoke-scale step, fused ~4%."""
    cls, kwargs = OPTIMIZER_CLASSES[name]
    for option in ({"fused": True}, {"foreach": True}):
        try:
            param = torch.zeros(1, device=device_type, requires_grad=True)
            param.grad = torch.zeros(1, device=device_type)
            cls([param], lr=1e-3, **kwargs, **option).step()
        except (RuntimeError, ValueError, TypeError, AssertionError) as e:  # AssertionError: torch's own checks
            log.debug("%s: %s kernels unavailable on %s (%s)", name, next(iter(option)), device_type, e)
            continue
        return tuple(option.items())
    return ()


def make_torch_optimizer(name: str, groups: list, lr: float, device_type: str = "cpu",
                         capturable: bool = False) -> torch.optim.Optimizer:
    """A torch optimizer ``name`` with the paper's settings over ``groups`` (param groups or a list
    of tensors). ``capturable``: state on the device so that the step can be CUDA-graphed."""
    cls, kwargs = OPTIMIZER_CLASSES[name]
    options = dict(kernel_options(name, device_type))
    if capturable and name in _HAS_CAPTURABLE:
        options["capturable"] = True
    return cls(groups, lr=lr, **kwargs, **options)


def param_groups(model: nn.Module, cfg: OptimConfig,
                 select: Callable[[torch.Tensor], torch.Tensor] = lambda p: p) -> list[dict]:
    """Three groups: BN gammas, BN betas (supplement Table 3 scales their LR), everything else.
    ``select`` maps each parameter to the tensor to optimize (a run's view of a stacked one)."""
    gammas, betas, rest = [], [], []
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d)
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, bn_types):
                (gammas if pname == "weight" else betas).append(select(p))
            else:
                rest.append(select(p))
    groups = [
        {"params": rest, "lr_scale": 1.0, "name": "weights"},
        {"params": gammas, "lr_scale": cfg.gamma_lr_scale, "name": "bn_gamma"},
        {"params": betas, "lr_scale": cfg.beta_lr_scale, "name": "bn_beta"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizers(members: Sequence[tuple[OptimConfig, list[dict]]], device_type: str = "cpu",
                     capturable: bool = False) -> list[torch.optim.Optimizer]:
    """Optimizers for runs trained together, each run given as (its OptimConfig, its
    ``param_groups``). Every optimizer here is elementwise, so runs of different optimizers share
    a group: there is one torch optimizer per optimizer name, and runs keep their own type, state,
    learning rate and scales. Groups with the same name and learning rate are merged (fewer
    kernel launches; the state is per parameter either way)."""
    merged: dict[str, dict[float, dict]] = {}
    for cfg, groups in members:
        for g in groups:
            base_lr = cfg.base_lr * g["lr_scale"]
            into = merged.setdefault(cfg.name, {}).setdefault(
                base_lr, {"params": [], "base_lr": base_lr, "lr": base_lr, "names": []})
            into["params"] += g["params"]
            into["names"].append(g["name"])
    return [make_torch_optimizer(name, list(by_lr.values()), next(iter(by_lr)), device_type, capturable)
            for name, by_lr in merged.items()]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str = "cpu") -> torch.optim.Optimizer:
    """The optimizer of one model trained alone."""
    (optimizer,) = build_optimizers([(cfg, param_groups(model, cfg))], device_type)
    return optimizer


@dataclass(frozen=True)
class StepSchedule:
    """Piecewise-constant LR multiplier: 1, 0.1, 0.01, ... at the phase boundaries."""

    boundaries: tuple[int, ...]  # cumulative step at which each phase ends

    @classmethod
    def for_run(cls, train: TrainConfig, train_size: int) -> "StepSchedule":
        ends, total = [], 0
        for n in phase_steps(train, train_size):
            total += n
            ends.append(total)
        return cls(tuple(ends))

    @property
    def total_steps(self) -> int:
        return self.boundaries[-1]

    def factor(self, step: int) -> float:
        """LR multiplier for 0-based ``step``."""
        for phase, end in enumerate(self.boundaries):
            if step < end:
                return 0.1**phase
        return 0.1 ** (len(self.boundaries) - 1)


def set_lr(optimizers: Sequence[torch.optim.Optimizer], factor: float) -> None:
    for optimizer in optimizers:
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor


class Regularizer:
    """L2 (before the step, into the gradient) or weight decay (after the step, on the value).

    The one implementation of the paper's two regularizers, used by training and by the
    low-gradient simulation (``repro.simulate``)."""

    def __init__(self, kind: str, lam: float, params: list[torch.Tensor]):
        if kind not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {kind!r}; known: {', '.join(REGULARIZERS)}")
        self.kind = kind if lam > 0 else "none"
        self.lam = lam
        self.params = params

    @torch.no_grad()
    def before_step(self) -> None:
        if self.kind == "l2":
            grads = [p.grad for p in self.params if p.grad is not None]
            values = [p.detach() for p in self.params if p.grad is not None]
            torch._foreach_add_(grads, values, alpha=self.lam)

    @torch.no_grad()
    def after_step(self, lr_factor: float) -> None:
        if self.kind == "wd":
            torch._foreach_mul_(self.params, 1.0 - self.lam * lr_factor)


def build_regularizers(members: Sequence[tuple[OptimConfig, list[torch.Tensor]]]) -> list[Regularizer]:
    """One Regularizer per (kind, lambda) over the parameters of every run that uses it."""
    merged: dict[tuple[str, float], list[torch.Tensor]] = {}
    for cfg, params in members:
        if cfg.regularizer != "none" and cfg.lam > 0:
            merged.setdefault((cfg.regularizer, cfg.lam), []).extend(params)
    return [Regularizer(kind, lam, params) for (kind, lam), params in merged.items()]
