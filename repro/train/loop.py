"""The one training loop.

In:  a RunConfig and an ImageData already on the training device.
Out: ``TrainOutcome``: the trained model, its histories (loss, learning rate, BN gamma/beta
snapshots for the paper's Figure 2) and whether/when the loss diverged.

Every run in the project (CLI, claims, tests, benchmarks) goes through ``train_model``. Seeds are
set here and only here: the model initialisation from ``train.seed``, the data order and flips
from a generator seeded with the same value, so a CPU run is bit-for-bit repeatable.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from repro.config import RunConfig
from repro.data.base import ImageData
from repro.train.models import ConvNet, build_model
from repro.train.optim import Regularizer, StepSchedule, build_optimizer, set_lr

log = logging.getLogger(__name__)

# How many points the loss curve keeps, whatever the run length.
LOSS_POINTS = 200


@dataclass
class TrainOutcome:
    model: ConvNet
    steps: int
    wall_s: float
    history: dict = field(default_factory=dict)
    diverged_at: int | None = None


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class BatchStream:
    """Shuffled mini-batches of indices, one permutation per epoch; the incomplete tail of an
    epoch is dropped so BatchNorm never sees a tiny batch."""

    def __init__(self, n: int, batch_size: int, flip: bool, seed: int, device: torch.device):
        self.n, self.batch_size, self.flip, self.device = n, batch_size, flip, device
        self.generator = torch.Generator().manual_seed(seed)
        self.per_epoch = max(1, n // batch_size)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = self.per_epoch  # forces a new permutation on the first batch

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.position >= self.per_epoch:
            self.order = torch.randperm(self.n, generator=self.generator).to(self.device)
            self.position = 0
        start = self.position * self.batch_size
        index = self.order[start : start + self.batch_size]
        self.position += 1
        flip = None
        if self.flip:
            flip = (torch.rand(len(index), generator=self.generator) < 0.5).to(self.device)
        return index, flip


def bn_snapshot(model: ConvNet) -> dict[str, list[list[float]]]:
    return {
        "gamma": [b.bn.weight.detach().cpu().tolist() for b in model.blocks],
        "beta": [b.bn.bias.detach().cpu().tolist() for b in model.blocks],
    }


def train_model(
    config: RunConfig,
    data: ImageData,
    device: torch.device,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainOutcome:
    """Train one run from scratch. ``on_step(step, total)`` is called every ~1% for progress."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.in_channels, data.image_size, data.num_classes, config.data.dataset)
    model.to(device).train()
    optimizer = build_optimizer(model, config.optim)
    regularizer = Regularizer(config.optim.regularizer, config.optim.lam, list(model.parameters()))
    schedule = StepSchedule.for_run(config.train, data.train_size)
    stream = BatchStream(data.train_size, config.train.batch_size, config.data.flip, config.train.seed, device)
    total = schedule.total_steps
    loss_every = max(1, total // LOSS_POINTS)
    snapshot_at = {round(total * (i + 1) / config.train.snapshots) for i in range(config.train.snapshots)} | {0}
    loss_fn = nn.CrossEntropyLoss()

    history: dict = {"loss_steps": [], "loss": [], "lr_steps": [], "lr": [], "snapshot_steps": [], "snapshots": []}
    loss_sum = torch.zeros((), device=device)
    factor = None
    diverged_at = None
    start = time.perf_counter()
    for step in range(total):
        if step in snapshot_at:
            history["snapshot_steps"].append(step)
            history["snapshots"].append(bn_snapshot(model))
        new_factor = schedule.factor(step)
        if new_factor != factor:
            factor = new_factor
            set_lr(optimizer, config.optim.base_lr, factor)
            history["lr_steps"].append(step)
            history["lr"].append(config.optim.base_lr * factor)
        index, flip = stream.next()
        x, y = data.train_batch(index, flip)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        regularizer.before_step()
        optimizer.step()
        regularizer.after_step(factor)
        loss_sum += loss.detach()
        if (step + 1) % loss_every == 0 or step + 1 == total:
            # One host sync per recorded point, not per step.
            window = loss_every if (step + 1) % loss_every == 0 else (step + 1) % loss_every
            mean_loss = float(loss_sum) / window
            loss_sum.zero_()
            history["loss_steps"].append(step + 1)
            history["loss"].append(mean_loss)
            if not math.isfinite(mean_loss):
                diverged_at = step + 1
                log.warning("run diverged at step %d (loss %s)", diverged_at, mean_loss)
                break
            if on_step is not None:
                on_step(step + 1, total)
    if diverged_at is None:
        history["snapshot_steps"].append(total)
        history["snapshots"].append(bn_snapshot(model))
    model.eval()
    return TrainOutcome(model, total if diverged_at is None else diverged_at,
                        time.perf_counter() - start, history, diverged_at)
