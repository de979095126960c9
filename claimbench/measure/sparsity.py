"""Feature sparsity and selectivity of a trained ConvNet (paper sections 2.1 and 2.3).

In:  a ``ConvNet`` (its ``.blocks``: conv -> BN -> activation, one BN channel = one feature) and,
     for the activation metrics, an ``ImageData`` whose training split is scanned once.
Out: percentages in 0..100.
  * ``gamma_sparsity``: % of features with |gamma| < threshold (total and per layer).
  * ``pooled_activations``: per layer an (N x C) CPU tensor, the spatial max of the absolute
    post-activation output of every feature for every image of a split.
  * ``activation_sparsity``: % of features whose pooled value never exceeds the threshold over
    the split (paper: 1e-12 over the whole training corpus).
  * ``universality``: per feature, % of images whose pooled value, normalised by the feature's max
    over the split, exceeds 1e-3; 0 for a feature whose max is <= 1e-12 (selectivity = 100 - it).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn

from claimbench.data.base import ImageData
from claimbench.train.models import ConvNet

GAMMA_THRESHOLD = 1e-3
GAMMA_THRESHOLD_HIGH = 1e-2
ACT_THRESHOLD = 1e-12
ACT_THRESHOLD_HIGH = 1e-4
UNIVERSALITY_THRESHOLD = 1e-3


class Sparsity(NamedTuple):
    """``total``: % inactive over all conv features; ``layers``: % per conv layer;
    ``inactive``: count per layer; ``sizes``: features per layer."""

    total: float
    layers: list[float]
    inactive: list[int]
    sizes: list[int]


def _sparsity(inactive_masks: list[torch.Tensor]) -> Sparsity:
    counts = [int(m.sum()) for m in inactive_masks]
    sizes = [int(m.numel()) for m in inactive_masks]
    layers = [100.0 * c / s for c, s in zip(counts, sizes)]
    total = 100.0 * sum(counts) / sum(sizes)
    return Sparsity(total, layers, counts, sizes)


def gamma_sparsity(model: ConvNet, threshold: float = GAMMA_THRESHOLD) -> Sparsity:
    """Features with |gamma| < ``threshold`` (paper: 1e-3; also reported at 1e-2)."""
    masks = [block.bn.weight.detach().abs().cpu() < threshold for block in model.blocks]
    return _sparsity(masks)


@contextmanager
def recording_pooled(model: ConvNet) -> Iterator[list[list[torch.Tensor]]]:
    """While active, every forward pass appends, per block, the (batch x C) spatial max of the
    absolute block output (after the activation) to the yielded lists, on CPU."""

    store: list[list[torch.Tensor]] = [[] for _ in model.blocks]

    def hook(index: int):
        def record(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            store[index].append(output.detach().abs().amax(dim=(2, 3)).float().cpu())

        return record

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(model.blocks)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def concat_pooled(store: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.cat(parts) if parts else torch.zeros(0, 0) for parts in store]


def pooled_activations(
    model: ConvNet, data: ImageData, split: str = "train", batch_size: int = 500
) -> list[torch.Tensor]:
    """Per layer an (N x C) tensor of max |activation| over each feature plane (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    with recording_pooled(model) as store, torch.no_grad():
        for x, _ in data.eval_batches(split, batch_size):
            model(x.to(device))
    return concat_pooled(store)


def feature_max(pooled: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer the (C,) max over images of the pooled values."""
    return [p.amax(dim=0) if p.shape[0] else torch.zeros(p.shape[1]) for p in pooled]


def activation_sparsity(pooled: list[torch.Tensor], threshold: float = ACT_THRESHOLD) -> Sparsity:
    """A feature is inactive if its pooled value does not exceed ``threshold`` on any image."""
    return _sparsity([m <= threshold for m in feature_max(pooled)])


def universality(
    pooled: list[torch.Tensor],
    threshold: float = UNIVERSALITY_THRESHOLD,
    dead: float = ACT_THRESHOLD,
) -> list[torch.Tensor]:
    """Per layer a (C,) tensor: % of images whose pooled value / the feature's max > ``threshold``.

    A feature whose max is <= ``dead`` (inactive by activation) has universality 0.
    """
    out = []
    for p, m in zip(pooled, feature_max(pooled)):
        alive = m > dead
        if p.shape[0] == 0:
            out.append(torch.zeros_like(m))
            continue
        # p > threshold * m is p / m > threshold without dividing by a zero max.
        pct = 100.0 * (p > threshold * m).double().mean(dim=0)
        out.append(torch.where(alive, pct, torch.zeros_like(pct)).float())
    return out
