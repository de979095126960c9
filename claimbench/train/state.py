"""What a group's training holds between steps: the state the loop steps and a checkpoint saves.

In:  RunConfigs of one group (``group_key``), their ImageData and device.
Out: ``init_state``: a ``TrainState`` (the stacked network, each run's optimizer and regularizer,
     the gradients, the data order, the schedule, the loss accumulators and histories);
     ``BatchStream``: each run's shuffled mini-batches and flips.

Seeds are set here and only here: each run's initialisation from its ``train.seed`` (the model is
built right after ``torch.manual_seed``), its data order and flips from its own CPU generator
seeded with the same value. ``claimbench.train.loop`` steps the state, ``claimbench.train.graphs``
replays its step, ``claimbench.train.checkpoint`` saves and restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from claimbench.config import RunConfig, group_key
from claimbench.data.base import ImageData
from claimbench.train.models import ConvNet, build_model, run_view, stack_models
from claimbench.train.optim import (Regularizer, StepSchedule, build_optimizers, build_regularizers,
                                   param_groups)


# --- data order -----------------------------------------------------------------------------


class BatchStream:
    """Each run's shuffled mini-batches and flips, one permutation per epoch; the incomplete tail
    of an epoch is dropped so BatchNorm never sees a tiny batch.

    Every run draws from its own CPU generator in the same sequence as one permutation then one
    flip draw per step, but a whole epoch at a time, and the K runs' epoch is copied to the device
    in one transfer (pinned, asynchronous on CUDA): a step only slices device tensors.
    """

    def __init__(self, n: int, batch_size: int, flip: bool, seeds: list[int], device: torch.device):
        self.n, self.flip, self.device = n, flip, device
        self.batch = min(batch_size, n)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.per_epoch = max(1, n // batch_size)
        self.index = torch.empty(len(seeds), 0, dtype=torch.long, device=device)
        self.flips: torch.Tensor | None = None
        self.position = self.per_epoch  # forces a new epoch on the first batch

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _new_epoch(self) -> None:
        orders, flips = [], []
        used = self.per_epoch * self.batch
        for g in self.generators:
            orders.append(torch.randperm(self.n, generator=g)[:used])
            if self.flip:
                flips.append(torch.cat([torch.rand(self.batch, generator=g) < 0.5 for _ in range(self.per_epoch)]))
        self.index = self._to_device(torch.stack(orders))
        self.flips = self._to_device(torch.stack(flips)) if self.flip else None
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, batch) indices and (K, batch) flips (None without flipping), on the device."""
        if self.position >= self.per_epoch:
            self._new_epoch()
        batch = self._batch(self.position)
        self.position += 1
        return batch

    def peek(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """What ``next`` will return, without advancing; None when the next batch opens a new
        epoch (not drawn yet: drawing it early would change nothing but is not needed)."""
        return self._batch(self.position) if self.position < self.per_epoch else None

    def _batch(self, position: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = position * self.batch
        flip = self.flips[:, start : start + self.batch] if self.flips is not None else None
        return self.index[:, start : start + self.batch], flip

    def get_state(self) -> dict:
        return {"rng": [g.get_state() for g in self.generators], "index": self.index.cpu(),
                "flips": self.flips.cpu() if self.flips is not None else None, "position": self.position}

    def set_state(self, state: dict) -> None:
        for g, rng in zip(self.generators, state["rng"]):
            g.set_state(rng)
        self.index = state["index"].to(self.device)
        self.flips = state["flips"].to(self.device) if state["flips"] is not None else None
        self.position = state["position"]


# --- state ----------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a group's training needs, and everything a checkpoint saves."""

    configs: list[RunConfig]
    net: ConvNet  # ConvNet(spec, runs=K)
    optimizers: list[torch.optim.Optimizer]
    regularizers: list[Regularizer]
    grads: list[torch.Tensor]  # the stacked parameters' gradients: allocated once, zeroed per step
    stream: BatchStream
    schedule: StepSchedule
    loss_sum: torch.Tensor  # (K,) on the device: summed losses since the last recorded point
    histories: list[dict]
    diverged: list[int | None]
    step: int = 0  # steps done
    loss_count: int = 0  # steps summed in loss_sum
    factor: float | None = None  # the current learning-rate multiplier
    wall_s: float = 0.0  # training time spent before this process (resumed runs)
    # How the steps ran, one PhaseRun.to_dict() per phase and process; the last is counted into.
    phase_runs: list[dict] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.configs)


def init_state(configs: list[RunConfig], data: ImageData, device: torch.device, capturable: bool = False,
               dtype: torch.dtype | None = None) -> TrainState:
    """Build the group: each run initialised from its own seed, stacked into one network.
    ``dtype``: what the network computes in after its float32 initialisation (None: float32);
    float64 is the exact-arithmetic reference of ``claimbench gpu-check``, started from the very
    weights a float32 run starts from (torch draws float64 initial values from another stream)."""
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("runs trained together must share architecture, data, batch size, schedule and precision")
    first = configs[0]
    models = []
    for c in configs:
        torch.manual_seed(c.train.seed)
        models.append(build_model(c.model, data.in_channels, data.image_size, data.num_classes, c.data.dataset))
    k = len(configs)
    net = stack_models(models).to(device=device, dtype=dtype).train()
    grads = []
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    members, reg_members = [], []
    for i, c in enumerate(configs):
        def view(p: torch.Tensor, i: int = i) -> torch.Tensor:
            # A leaf sharing the stacked parameter's storage, with its gradient a view of the
            # stacked gradient: the run's optimizer updates its slice in place.
            v = run_view(p.detach(), k, i)
            v.grad = run_view(p.grad, k, i)
            return v
        groups = param_groups(net, c.optim, select=view)
        members.append((c.optim, groups))
        reg_members.append((c.optim, [p for g in groups for p in g["params"]]))
    histories = [{"loss_steps": [], "loss": [], "lr_steps": [], "lr": [], "snapshot_steps": [], "snapshots": []}
                 for _ in configs]
    return TrainState(
        configs=list(configs),
        net=net,
        optimizers=build_optimizers(members, device.type, capturable),
        regularizers=build_regularizers(reg_members),
        grads=grads,
        # Data decoded on the host per batch (image folders) takes host indices: no device sync.
        stream=BatchStream(data.train_size, first.train.batch_size, first.data.flip, [c.train.seed for c in configs],
                           torch.device("cpu") if data.decodes_on_host else device),
        schedule=StepSchedule.for_run(first.train, data.train_size),
        loss_sum=torch.zeros(k, device=device),
        histories=histories,
        diverged=[None] * k,
    )
