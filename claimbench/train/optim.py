"""Optimizers, the two regularizers and the step schedule, exactly as the paper defines them.

In:  OptimConfig / TrainConfig and a model.
Out: torch optimizers (one per optimizer name, over the parameter groups of every run that uses
it; ``build_optimizers``), and ``Regularizer``, which applies L2 or weight decay around the
optimizer's step; the step schedule. The simulation (``claimbench.simulate``) uses the same two.

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

from claimbench.config import REGULARIZERS, OptimConfig, TrainConfig, phase_steps

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
# (step counters on the device); SGD keeps no counter. Torch's Adagrad has no capturable mode,
# so a capturable Adagrad is ``CapturableAdagrad`` below (used only when capturing: eager runs
# keep torch's kernels and their exact numbers).
GRAPH_SAFE = frozenset({"sgd", "adam", "amsgrad", "adamax", "rmsprop", "adadelta", "adagrad"})
_HAS_CAPTURABLE = frozenset({"adam", "amsgrad", "adamax", "rmsprop", "adadelta"})
# The param-group keys that choose an optimizer's kernel, not its update rule.
KERNEL_FLAGS = ("fused", "foreach", "capturable")


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
    if capturable and name == "adagrad":
        optimizer = CapturableAdagrad(groups, lr=lr, **kwargs)
    else:
        options = dict(kernel_options(name, device_type))
        if capturable and name in _HAS_CAPTURABLE:
            options["capturable"] = True
        optimizer = cls(groups, lr=lr, **kwargs, **options)
    for group in optimizer.param_groups:
        group["optimizer"] = name  # for provenance (``kernel_used``): Adam serves two names
    return optimizer


class CapturableAdagrad(torch.optim.Optimizer):
    """torch.optim.Adagrad's update with its step counters on the parameters' device and no host
    read in ``step``, so that the step can be captured in a CUDA graph (torch's own Adagrad reads
    its counters on the host). Same defaults, state names ("step", "sum") and checkpoint layout as
    torch's, dense gradients only. Per parameter, at step t (counting from 1):

        g = grad + weight_decay * p
        sum += g * g
        p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)

    ``lr`` is read from the param group when the step runs (a constant of a captured graph, as for
    the other optimizers: the loop captures again when it changes).
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        for label, value in (("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                             ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)):
            if not value >= 0.0:
                raise ValueError(f"CapturableAdagrad: invalid {label} {value!r} (must be >= 0)")
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value,
                    "foreach": True, "fused": False, "capturable": True, "maximize": False, "differentiable": False}
        super().__init__(params, defaults)
        # State made now, as torch's Adagrad does: it must exist before a graph is captured.
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["sum"] = torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("CapturableAdagrad: sparse gradients are not supported")
            grads = [p.grad for p in params]
            sums = [self.state[p]["sum"] for p in params]
            steps = [self.state[p]["step"] for p in params]
            torch._foreach_add_(steps, 1)
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_addcmul_(sums, grads, grads, value=1)
            std = torch._foreach_sqrt(sums)
            torch._foreach_add_(std, group["eps"])
            if group["lr_decay"] != 0:
                # lr / (1 + (t - 1) * lr_decay) with t on the device: the denominator scales std.
                for s, t in zip(std, steps):
                    s.mul_((t - 1).mul_(group["lr_decay"]).add_(1))
            torch._foreach_addcdiv_(params, grads, std, value=-group["lr"])
        return loss


@dataclass(frozen=True)
class KernelUsed:
    """What one optimizer's step runs: for provenance, read from the optimizer itself."""

    optimizer: str  # this project's name ("adam", "amsgrad", ...)
    implementation: str  # the class ("Adam", "CapturableAdagrad", ...)
    kernel: str  # "fused", "foreach" or "plain" (one parameter at a time)
    capturable: bool

    def to_dict(self) -> dict:
        return {"implementation": self.implementation, "kernel": self.kernel, "capturable": self.capturable}


def kernel_used(optimizer: torch.optim.Optimizer) -> KernelUsed:
    """The kernel ``optimizer`` steps with, from its param groups' flags (after any checkpoint was
    loaded: that is what runs). ``foreach=None`` is torch's own choice, resolved as torch does."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        kernel = "fused"
    elif group.get("foreach"):
        kernel = "foreach"
    elif group.get("foreach") is None:
        from torch.optim.optimizer import _default_to_fused_or_foreach

        _, foreach = _default_to_fused_or_foreach(group["params"], differentiable=False, use_fused=False)
        kernel = "foreach" if foreach else "plain"
    else:
        kernel = "plain"
    name = group.get("optimizer", type(optimizer).__name__.lower())
    return KernelUsed(name, type(optimizer).__name__, kernel, bool(group.get("capturable", False)))


def load_keeping_kernels(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """``optimizer.load_state_dict(saved)``, but the kernel flags stay those this optimizer was
    built with. torch copies the saved groups' fused/foreach/capturable over the new ones, so a
    checkpoint written without CUDA graphs would switch capture off on resume (and one written on
    a GPU would ask a CPU for fused CUDA kernels). The flags are set before loading because torch
    places each step counter (host or device) by them."""
    groups = []
    for now, old in zip(optimizer.param_groups, saved["param_groups"]):
        old = dict(old)
        for key in KERNEL_FLAGS:
            if key in now:
                old[key] = now[key]
            else:
                old.pop(key, None)
        groups.append(old)
    optimizer.load_state_dict({**saved, "param_groups": groups})


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

    def phase(self, step: int) -> int:
        """The 0-based learning-rate phase of 0-based ``step`` (the last phase past the end)."""
        for phase, end in enumerate(self.boundaries):
            if step < end:
                return phase
        return len(self.boundaries) - 1

    def factor(self, step: int) -> float:
        """LR multiplier for 0-based ``step``."""
        return 0.1 ** self.phase(step)


def set_lr(optimizers: Sequence[torch.optim.Optimizer], factor: float) -> None:
    for optimizer in optimizers:
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor


class Regularizer:
    """L2 (before the step, into the gradient) or weight decay (after the step, on the value).

    The one implementation of the paper's two regularizers, used by training and by the
    low-gradient simulation (``claimbench.simulate``)."""

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
