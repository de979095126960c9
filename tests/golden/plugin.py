"""A plug-in model and trainer for the behaviour suite: the smallest users of the plug-in harness
(claimbench builds and seeds the network, hands it to the trainer, loads what comes back)."""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.plugins import ModelPlugin, TrainerPlugin


@dataclass(frozen=True)
class TinyFields:
    hidden: int = 6


def build_tiny(in_channels: int, image_size: int, num_classes: int, hidden: int = 6):  # noqa: ANN201
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes))


def train_plain_sgd(run):  # noqa: ANN001, ANN201
    import torch
    import torch.nn.functional as F

    from claimbench.plugins import TrainerResult

    opt = torch.optim.SGD(run.model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(run.config.train.seed)
    losses = []
    for _ in range(run.total_steps):
        index = torch.randint(0, run.data.train_size, (run.config.train.batch_size,), generator=gen)
        loss = F.cross_entropy(run.model(run.data.train_x[index]), run.data.train_y[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return TrainerResult(run.model.state_dict(), {"final_loss": losses[-1]}, {"loss": losses})


tiny = ModelPlugin(name="goldentiny", build=build_tiny, fields=TinyFields)
plainsgd = TrainerPlugin(name="goldensgd", train=train_plain_sgd, metrics=("final_loss",))
