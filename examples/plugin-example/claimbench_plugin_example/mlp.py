"""A multi-layer perceptron whose hidden units are claimbench features, for one run or several stacked.

Each hidden layer is Linear -> BatchNorm -> ReLU. The BatchNorm is a BatchNorm2d over units seen
as 1x1 feature maps, registered right before its ReLU: that is how claimbench finds a plug-in's
features (one BatchNorm channel = one feature) and measures their gammas and activations.

``MLP(..., runs=K)`` is K independent MLPs in one, the way claimbench stacks its own networks when
runs train together: input (B, K * C, H, W) with run k's images in channels k*C..(k+1)*C,
output (B, K * classes); every weight has K times the rows of the single network's (run k's
rows are k*n..(k+1)*n), the linear layers are K batched matmuls and the BatchNorm is per unit,
so per run. ``runs=1`` is the plain MLP with the same parameter names.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GroupedLinear(nn.Module):
    """``runs`` independent linear layers: input (B, runs * inputs), output (B, runs * outputs);
    the weight is (runs * outputs, inputs), initialised as ``nn.Linear`` initialises its own."""

    def __init__(self, inputs: int, outputs: int, runs: int = 1, bias: bool = True):
        super().__init__()
        self.inputs, self.runs = inputs, runs
        self.weight = nn.Parameter(torch.empty(runs * outputs, inputs))
        self.bias = nn.Parameter(torch.empty(runs * outputs)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(inputs), 1 / math.sqrt(inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs == 1:
            return nn.functional.linear(x, self.weight, self.bias)
        batch = x.shape[0]
        # (runs, B, inputs) @ (runs, inputs, outputs): one batched matmul for all runs.
        out = torch.bmm(x.view(batch, self.runs, self.inputs).transpose(0, 1),
                        self.weight.view(self.runs, -1, self.inputs).transpose(1, 2))
        if self.bias is not None:
            out = out + self.bias.view(self.runs, 1, -1)
        return out.transpose(0, 1).reshape(batch, -1)


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: tuple[int, ...], classes: int, runs: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = inputs
        for h in hidden:
            layers += [GroupedLinear(width, h, runs, bias=False), nn.Unflatten(1, (runs * h, 1, 1)),
                       nn.BatchNorm2d(runs * h), nn.ReLU(), nn.Flatten()]
            width = h
        layers.append(GroupedLinear(width, classes, runs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
