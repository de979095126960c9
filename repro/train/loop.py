"""The one training loop, for one run or a group of runs trained together.

In:  RunConfigs that share architecture, data, batch size, schedule and optimizer (see
     ``group_key``), and an ImageData already on the training device.
Out: one ``TrainOutcome`` per run: the trained model, its histories (loss, learning rate, BN
     gamma/beta snapshots for the paper's Figure 2) and whether/when its loss diverged.

Every run in the project (CLI, claims, tests, benchmarks) goes through ``train_models``; a single
run is a group of one. Seeds are set here and only here: each run's initialisation from its
``train.seed`` (the model is built right after ``torch.manual_seed``), its data order and flips
from its own generator seeded with the same value, so a CPU run is bit-for-bit repeatable and a
run trains the same whether alone or in a group.

Why groups: at the paper's batch of 40 a GPU step is bound by kernel launches, not arithmetic.
K runs of one architecture are stacked channel-wise into one network: convolutions become
grouped convolutions (groups=K), BatchNorm is per channel and so per run, the fc layers are
batched matmuls, and one optimizer holds every run's parameter groups (all optimizers here are
elementwise, so each run keeps its own state, learning rate, scales and regularizer). Nothing
mixes between runs: run k's loss depends only on run k's parameters and batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

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


def group_key(config: RunConfig) -> str:
    """Runs with equal keys can train together: everything but seed, regularizer, lambda,
    learning rate (and its BN scales) and the BN beta initialisation."""
    d = config.to_dict()
    d["model"].pop("bn_beta_init")
    for k in ("lr", "regularizer", "lam", "gamma_lr_scale", "beta_lr_scale"):
        d["optim"].pop(k)
    d["train"].pop("seed")
    return json.dumps(d, sort_keys=True)


class BatchStream:
    """Shuffled mini-batches of indices, one permutation per epoch; the incomplete tail of an
    epoch is dropped so BatchNorm never sees a tiny batch."""

    def __init__(self, n: int, batch_size: int, flip: bool, seed: int, device: torch.device):
        self.n, self.batch_size, self.flip, self.device = n, batch_size, flip, device
        self.generator = torch.Generator().manual_seed(seed)
        self.per_epoch = max(1, n // batch_size)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = self.per_epoch  # forces a new permutation on the first batch

    def get_state(self) -> dict:
        return {"rng": self.generator.get_state(), "order": self.order.cpu(), "position": self.position}

    def set_state(self, state: dict) -> None:
        self.generator.set_state(state["rng"])
        self.order = state["order"].to(self.device)
        self.position = state["position"]

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


class StackedForward:
    """K ConvNets of one layout evaluated as one channel-stacked network (training mode).

    The members' parameters stay the leaves the optimizer updates; each step concatenates them
    (cheap next to the convolutions). BatchNorm running statistics live in packed buffers during
    training and are written back to the members by ``write_back``.
    """

    def __init__(self, models: list[ConvNet]):
        self.models = models
        self.k = len(models)
        spec = models[0].spec
        self.spec = spec
        self.conv_stats = [self._pack_stats([m.blocks[i].bn for m in models]) for i in range(len(spec.convs))]
        self.head_bns = [[mod for mod in m.head if isinstance(mod, torch.nn.BatchNorm1d)] for m in models]
        self.head_stats = [self._pack_stats([bns[j] for bns in self.head_bns]) for j in range(len(self.head_bns[0]))]

    @staticmethod
    def _pack_stats(bns) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.cat([b.running_mean for b in bns]).clone(), torch.cat([b.running_var for b in bns]).clone())

    def __call__(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """xs: K batches (B, C, H, W) -> logits (B, K, classes)."""
        k, spec = self.k, self.spec
        x = torch.cat(xs, dim=1)
        for i, c in enumerate(spec.convs):
            blocks = [m.blocks[i] for m in self.models]
            weight = torch.cat([b.conv.weight for b in blocks])
            x = F.conv2d(x, weight, padding=c.kernel // 2, groups=k)
            bn = blocks[0].bn
            mean, var = self.conv_stats[i]
            x = F.batch_norm(x, mean, var, torch.cat([b.bn.weight for b in blocks]),
                             torch.cat([b.bn.bias for b in blocks]), True, bn.momentum, bn.eps)
            x = blocks[0].act(x)
            if c.pool_after:
                x = F.max_pool2d(x, 2)
        x = x.mean(dim=(2, 3)) if spec.pooling == "global" else F.avg_pool2d(x, 5, 4).flatten(1)
        batch = x.shape[0]
        x = x.view(batch, k, -1)
        linears = [[mod for mod in m.head if isinstance(mod, torch.nn.Linear)] for m in self.models]
        for j in range(len(linears[0])):
            weight = torch.stack([lin[j].weight for lin in linears])  # (K, out, in)
            bias = torch.stack([lin[j].bias for lin in linears])  # (K, out)
            x = torch.einsum("bki,koi->bko", x, weight) + bias
            if j < len(self.head_stats):
                bns = [b[j] for b in self.head_bns]
                mean, var = self.head_stats[j]
                flat = F.batch_norm(x.reshape(batch, -1), mean, var, torch.cat([b.weight for b in bns]),
                                    torch.cat([b.bias for b in bns]), True, bns[0].momentum, bns[0].eps)
                x = F.relu(flat).view(batch, k, -1)
        return x

    def get_stats(self) -> dict:
        return {"conv": [(m.clone(), v.clone()) for m, v in self.conv_stats],
                "head": [(m.clone(), v.clone()) for m, v in self.head_stats]}

    @torch.no_grad()
    def set_stats(self, stats: dict) -> None:
        for (m, v), (sm, sv) in zip(self.conv_stats + self.head_stats, stats["conv"] + stats["head"]):
            m.copy_(sm)
            v.copy_(sv)

    @torch.no_grad()
    def write_back(self, steps: int) -> None:
        for i, (mean, var) in enumerate(self.conv_stats):
            self._unpack([m.blocks[i].bn for m in self.models], mean, var, steps)
        for j, (mean, var) in enumerate(self.head_stats):
            self._unpack([bns[j] for bns in self.head_bns], mean, var, steps)

    @staticmethod
    def _unpack(bns, mean: torch.Tensor, var: torch.Tensor, steps: int) -> None:
        for b, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
            b.running_mean.copy_(m)
            b.running_var.copy_(v)
            b.num_batches_tracked.add_(steps)


def train_model(config: RunConfig, data: ImageData, device: torch.device,
                on_step: Callable[[int, int], None] | None = None) -> TrainOutcome:
    return train_models([config], data, device, on_step)[0]


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a reader (or a resumed run) sees the previous checkpoint or this one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path | None, configs: list[RunConfig]) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        log.warning("checkpoint %s is unreadable (%s); starting from scratch", path, e)
        return None
    if state.get("configs") != [c.canonical_json() for c in configs]:
        log.warning("checkpoint %s belongs to other runs; starting from scratch", path)
        return None
    return state


def train_models(
    configs: list[RunConfig],
    data: ImageData,
    device: torch.device,
    on_step: Callable[[int, int], None] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every_s: float = 300.0,
) -> list[TrainOutcome]:
    """Train runs together. ``on_step(step, total)`` is called every ~0.5%.

    With ``checkpoint``, the whole training state (weights, optimizer state, BN statistics, data
    order and RNG positions, histories) is saved there atomically at most every
    ``checkpoint_every_s`` seconds, and a run started with an existing checkpoint of the same
    configs resumes from it; on CPU the result is bit-identical to an uninterrupted run.
    """
    keys = {group_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("runs trained together must share architecture, data, batch size, schedule and optimizer")
    first = configs[0]
    models = []
    for c in configs:
        torch.manual_seed(c.train.seed)
        models.append(build_model(c.model, data.in_channels, data.image_size, data.num_classes, c.data.dataset).to(device).train())
    optimizer = build_optimizer(models, [c.optim for c in configs])
    regularizers = [Regularizer(c.optim.regularizer, c.optim.lam, list(m.parameters())) for c, m in zip(configs, models)]
    streams = [BatchStream(data.train_size, first.train.batch_size, first.data.flip, c.train.seed, device) for c in configs]
    schedule = StepSchedule.for_run(first.train, data.train_size)
    total = schedule.total_steps
    loss_every = max(1, total // LOSS_POINTS)
    snapshot_at = {round(total * (i + 1) / first.train.snapshots) for i in range(first.train.snapshots)} | {0}
    stacked = StackedForward(models) if len(models) > 1 else None
    histories = [{"loss_steps": [], "loss": [], "lr_steps": [], "lr": [], "snapshot_steps": [], "snapshots": []}
                 for _ in configs]
    diverged: list[int | None] = [None] * len(configs)
    loss_sum = torch.zeros(len(configs), device=device)
    factor = None
    start = time.perf_counter()
    first_step, previous_wall = 0, 0.0
    resumed = load_checkpoint(checkpoint, configs)
    if resumed is not None:
        for m, sd in zip(models, resumed["models"]):
            m.load_state_dict(sd)
        optimizer.load_state_dict(resumed["optimizer"])
        for stream, st in zip(streams, resumed["streams"]):
            stream.set_state(st)
        if stacked is not None:
            stacked.set_stats(resumed["stacked"])
        histories, diverged, factor = resumed["histories"], resumed["diverged"], resumed["factor"]
        first_step, previous_wall = resumed["step"], resumed["wall_s"]
        log.info("resumed %d runs from %s at step %d", len(configs), checkpoint, first_step)
    last_save = time.perf_counter()
    step = first_step - 1
    for step in range(first_step, total):
        if step in snapshot_at:
            for h, m in zip(histories, models):
                h["snapshot_steps"].append(step)
                h["snapshots"].append(bn_snapshot(m))
        new_factor = schedule.factor(step)
        if new_factor != factor:
            factor = new_factor
            set_lr(optimizer, factor)
            for h, c in zip(histories, configs):
                h["lr_steps"].append(step)
                h["lr"].append(c.optim.base_lr * factor)
        batches = [data.train_batch(*s.next()) for s in streams]
        if stacked is None:
            x, y = batches[0]
            losses = F.cross_entropy(models[0](x), y).unsqueeze(0)
        else:
            logits = stacked([b[0] for b in batches])  # (B, K, classes)
            y = torch.stack([b[1] for b in batches], dim=1)  # (B, K)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(0)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # runs share no parameter: each gets the gradient of its own loss
        for r in regularizers:
            r.before_step()
        optimizer.step()
        for r in regularizers:
            r.after_step(factor)
        loss_sum += losses.detach()
        if (step + 1) % loss_every == 0 or step + 1 == total:
            # One host sync per recorded point, not per step.
            window = loss_every if (step + 1) % loss_every == 0 else (step + 1) % loss_every
            means = (loss_sum / window).tolist()
            loss_sum.zero_()
            for i, (h, mean_loss) in enumerate(zip(histories, means)):
                if diverged[i] is not None:
                    continue
                h["loss_steps"].append(step + 1)
                h["loss"].append(mean_loss)
                if not math.isfinite(mean_loss):
                    diverged[i] = step + 1
                    log.warning("run %s diverged at step %d (loss %s)", configs[i].summary(), step + 1, mean_loss)
            if all(d is not None for d in diverged):
                break
            if on_step is not None:
                on_step(step + 1, total)
            if checkpoint is not None and step + 1 < total and time.perf_counter() - last_save >= checkpoint_every_s:
                save_checkpoint(checkpoint, {
                    "configs": [c.canonical_json() for c in configs],
                    "step": step + 1,
                    "wall_s": previous_wall + time.perf_counter() - start,
                    "models": [m.state_dict() for m in models],
                    "optimizer": optimizer.state_dict(),
                    "streams": [st.get_state() for st in streams],
                    "stacked": stacked.get_stats() if stacked is not None else None,
                    "histories": histories,
                    "diverged": diverged,
                    "factor": factor,
                })
                last_save = time.perf_counter()
    if stacked is not None:
        stacked.write_back(step + 1)
    wall = previous_wall + time.perf_counter() - start
    outcomes = []
    for h, m, d in zip(histories, models, diverged):
        if d is None:
            h["snapshot_steps"].append(total)
            h["snapshots"].append(bn_snapshot(m))
        m.eval()
        outcomes.append(TrainOutcome(m, total if d is None else d, wall, h, d))
    return outcomes
