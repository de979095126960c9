"""Optimizers, the two regularizers and the step schedule, exactly as the paper defines them.

In:  OptimConfig / TrainConfig and a model.
Out: a torch optimizer with one parameter group per learning-rate scale, and ``Regularizer``,
which applies L2 or weight decay around the optimizer's step.

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

from dataclasses import dataclass

import torch
from torch import nn

from repro.config import OptimConfig, TrainConfig, phase_steps

# Paper section 2.1 / supplement Fig. 3 hyperparameters; torch defaults where the paper is silent
# (Adamax, RMSProp, Adagrad).
ADAM_BETAS = (0.9, 0.99)


# torch's fused kernels (one kernel for all parameters, CPU and CUDA) where they exist: the
# per-parameter Adam update was ~25% of a smoke-scale CPU step, fused it is ~4%. Same update rule.
FUSED = {"fused": True}
FOREACH = {"foreach": True}


def make_optimizer(name: str, params: list, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, **FUSED)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=1e-8, **FUSED)
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=1e-8, amsgrad=True, **FUSED)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, **FOREACH)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, **FOREACH)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, **FUSED)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, rho=0.9, eps=1e-6, **FOREACH)
    raise ValueError(f"unknown optimizer {name!r}")  # configs are validated before this point


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Three groups: BN gammas, BN betas (supplement Table 3 scales their LR), everything else."""
    gammas, betas, rest = [], [], []
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d)
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, bn_types):
                (gammas if pname == "weight" else betas).append(p)
            else:
                rest.append(p)
    groups = [
        {"params": rest, "lr_scale": 1.0, "name": "weights"},
        {"params": gammas, "lr_scale": cfg.gamma_lr_scale, "name": "bn_gamma"},
        {"params": betas, "lr_scale": cfg.beta_lr_scale, "name": "bn_beta"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(models: list[nn.Module], cfgs: list[OptimConfig]) -> torch.optim.Optimizer:
    """One optimizer over the parameter groups of every model (runs trained together keep their
    own learning rates, scales and state: every optimizer here is elementwise)."""
    groups = []
    for model, cfg in zip(models, cfgs):
        for g in param_groups(model, cfg):
            g["base_lr"] = cfg.base_lr * g["lr_scale"]
            g["lr"] = g["base_lr"]
            groups.append(g)
    names = {cfg.name for cfg in cfgs}
    if len(names) != 1:
        raise ValueError(f"runs trained together must share the optimizer, got {sorted(names)}")
    return make_optimizer(cfgs[0].name, groups, groups[0]["lr"])


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


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor


class Regularizer:
    """L2 (before the step, into the gradient) or weight decay (after the step, on the value)."""

    def __init__(self, kind: str, lam: float, params: list[torch.Tensor]):
        self.kind = kind if lam > 0 else "none"
        self.lam = lam
        self.params = params

    def before_step(self) -> None:
        if self.kind == "l2":
            grads = [p.grad for p in self.params if p.grad is not None]
            values = [p.detach() for p in self.params if p.grad is not None]
            torch._foreach_add_(grads, values, alpha=self.lam)

    @torch.no_grad()
    def after_step(self, lr_factor: float) -> None:
        if self.kind == "wd":
            torch._foreach_mul_(self.params, 1.0 - self.lam * lr_factor)
