"""Plug-ins for the behaviour suite, the smallest users of each plug-in path: a model and trainer
(claimbench builds and seeds the network, hands it to the trainer, loads what comes back), a
stackable model (trained by claimbench's loop, alone and stacked into one network with other
runs) and a dataset (loaded from its plug-in and normalised as claimbench's own)."""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.plugins import DatasetPlugin, ModelPlugin, TrainerPlugin


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
        run.report(len(losses))
    return TrainerResult(run.model.state_dict(), {"final_loss": losses[-1]}, {"loss": losses})


tiny = ModelPlugin(name="goldentiny", build=build_tiny, fields=TinyFields)
plainsgd = TrainerPlugin(name="goldensgd", train=train_plain_sgd, metrics=("final_loss",))


@dataclass(frozen=True)
class StackFields:
    widths: tuple[int, ...] = (4,)
    negative_slope: float | None = None  # None: ReLU


def build_stackable(in_channels: int, image_size: int, num_classes: int, runs: int = 1, widths: tuple[int, ...] = (4,),
                    negative_slope: float | None = None):  # noqa: ANN201
    """``runs`` small conv nets in one, as a stackable plug-in must build them: grouped convolutions
    (run k's channels are k*C..(k+1)*C), per-channel BatchNorm, a grouped 1x1 convolution as the
    classifier, so nothing mixes between runs."""
    import torch.nn as nn

    layers: list = []
    cin = in_channels
    for w in widths:
        act = nn.ReLU() if negative_slope is None else nn.LeakyReLU(negative_slope)
        layers += [nn.Conv2d(runs * cin, runs * w, 3, padding=1, bias=False, groups=runs), nn.BatchNorm2d(runs * w), act]
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(runs * cin, runs * num_classes, 1, groups=runs), nn.Flatten()]
    return nn.Sequential(*layers)


def load_blobs(root, seed: int) -> dict:  # noqa: ANN001
    """One-channel 8x8 images of three classes (a bright blob in one of three places, on noise),
    drawn from ``seed``: a dataset a plug-in loads from nothing on disk."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple:
        y = rng.integers(0, 3, size=n)
        x = rng.normal(0.0, 0.5, size=(n, 1, 8, 8))
        for i, label in enumerate(y):
            x[i, 0, 2 * label : 2 * label + 3, 2:5] += 2.0
        return x.astype(np.float32), y

    train_x, train_y = split(48)
    test_x, test_y = split(12)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


stackable = ModelPlugin(name="goldenstack", build=build_stackable, fields=StackFields, stackable=True)
blobs = DatasetPlugin(name="goldenblobs", load=load_blobs, train_size=48, image_size=8, channels=1, classes=3)
