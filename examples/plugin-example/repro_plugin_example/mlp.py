"""A multi-layer perceptron whose hidden units are repro features.

Each hidden layer is Linear -> BatchNorm -> ReLU. The BatchNorm is a BatchNorm2d over units seen
as 1x1 feature maps, registered right before its ReLU: that is how repro finds a plug-in's
features (one BatchNorm channel = one feature) and measures their gammas and activations.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: tuple[int, ...], classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = inputs
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.Unflatten(1, (h, 1, 1)), nn.BatchNorm2d(h), nn.ReLU(),
                       nn.Flatten()]
            width = h
        layers.append(nn.Linear(width, classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
