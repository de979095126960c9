"""Removing the features marked inactive by |gamma| (paper Table 2, and physically, beyond it).

In:  a ``ConvNet`` and a |gamma| threshold (paper: 1e-3). The input model is never modified.
Out:
  * ``kept_channels``: per conv layer the sorted indices of features with |gamma| >= threshold.
  * ``zero_pruned``: a deep copy with gamma AND beta of every pruned feature set to 0, so the
    feature outputs exactly 0 after ReLU/LeakyReLU (same architecture, same parameter count).
  * ``pruned_conv_params``: conv weights before / after removing those channels (a conv shrinks
    by its kept input and kept output channels).
  * ``slim_model``: a new, smaller ``ConvNet`` holding only the kept channels (conv weights,
    BN parameters and running stats, and the first fc layer's input columns); it computes the
    same function as ``zero_pruned`` up to float rounding. A layer with no kept channel keeps one
    channel with gamma = beta = 0 (it outputs zeros) instead of a zero-width layer.
  * ``fold_batchnorm``: a copy in which every eval-mode BN is folded into the preceding bias-free
    conv (which gains a bias) or Linear layer; the BN becomes ``nn.Identity``. Only valid in eval
    mode; the folded copy has no ``.bn`` gammas left, so measure sparsity on the unfolded model.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from claimbench.measure.sparsity import GAMMA_THRESHOLD
from claimbench.netcost import conv_param_count
from claimbench.train.models import ConvNet


def kept_channels(model: ConvNet, threshold: float = GAMMA_THRESHOLD) -> list[torch.Tensor]:
    """Per conv layer, the CPU int64 indices of the features with |gamma| >= ``threshold``."""
    return [
        torch.nonzero(block.bn.weight.detach().abs().cpu() >= threshold).flatten()
        for block in model.blocks
    ]


def zero_pruned(model: ConvNet, threshold: float = GAMMA_THRESHOLD) -> ConvNet:
    """Deep copy with gamma and beta of every feature with |gamma| < ``threshold`` set to 0."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for block in zeroed.blocks:
            pruned = block.bn.weight.abs() < threshold
            block.bn.weight[pruned] = 0.0
            block.bn.bias[pruned] = 0.0
    return zeroed


def pruned_conv_params(model: ConvNet, threshold: float = GAMMA_THRESHOLD) -> tuple[int, int]:
    """(dense conv weights, conv weights left once the pruned channels are removed)."""
    kept = [int(k.numel()) for k in kept_channels(model, threshold)]
    return conv_param_count(model.spec), conv_param_count(model.spec, kept)


def slim_model(model: ConvNet, threshold: float = GAMMA_THRESHOLD) -> ConvNet:
    """A physically smaller ConvNet with only the features kept at ``threshold``."""
    spec = model.spec
    kept = kept_channels(model, threshold)
    empty = [k.numel() == 0 for k in kept]
    keep = [torch.zeros(1, dtype=torch.long) if e else k for k, e in zip(kept, empty)]
    convs = tuple(dataclasses.replace(c, out_channels=int(k.numel())) for c, k in zip(spec.convs, keep))
    slim = ConvNet(dataclasses.replace(spec, convs=convs))

    old = model.state_dict()
    new: dict[str, torch.Tensor] = {}

    def take(t: torch.Tensor, index: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return t.detach().index_select(dim, index.to(t.device)).clone()

    prev = torch.arange(spec.in_channels)
    for i, (k, e) in enumerate(zip(keep, empty)):
        p = f"blocks.{i}."
        new[p + "conv.weight"] = take(take(old[p + "conv.weight"], k, 0), prev, 1)
        for name in ("weight", "bias", "running_mean", "running_var"):
            new[p + "bn." + name] = take(old[p + "bn." + name], k)
        new[p + "bn.num_batches_tracked"] = old[p + "bn.num_batches_tracked"].clone()
        if e:  # the one placeholder channel outputs exactly 0
            new[p + "bn.weight"].zero_()
            new[p + "bn.bias"].zero_()
        prev = k

    for key, value in old.items():
        if key.startswith("head."):
            new[key] = value.detach().clone()
    # features() flattens (N, C, s, s): channel c owns columns c*s*s .. (c+1)*s*s - 1.
    area = spec.pooled_size * spec.pooled_size
    cols = (prev[:, None] * area + torch.arange(area)[None, :]).flatten()
    new["head.0.weight"] = take(old["head.0.weight"], cols, 1)

    ref = next(model.parameters())
    slim.to(device=ref.device, dtype=ref.dtype)
    slim.load_state_dict(new, strict=True)
    for mine, theirs in zip(slim.modules(), model.modules()):
        if isinstance(mine, nn.modules.batchnorm._BatchNorm):
            mine.eps, mine.momentum = theirs.eps, theirs.momentum
    slim.train(model.training)
    return slim


def _fold_scale(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) with bn(x) == x * scale + shift in eval mode, or None if not exact."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    return scale, shift


def fold_batchnorm(model: ConvNet) -> ConvNet:
    """Eval-mode copy with each BN folded into the conv / Linear before it (BN -> Identity)."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for block in folded.blocks:
            conv, st = block.conv, _fold_scale(block.bn)
            if st is None or conv.bias is not None:
                continue
            scale, shift = st
            new = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
            ).to(device=conv.weight.device, dtype=conv.weight.dtype)
            new.weight.copy_(conv.weight * scale[:, None, None, None])
            new.bias.copy_(shift)
            block.conv, block.bn = new, nn.Identity()
        head = folded.head
        for i in range(1, len(head)):
            lin, bn = head[i - 1], head[i]
            if not (isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d)):
                continue
            st = _fold_scale(bn)
            if st is None:
                continue
            scale, shift = st
            bias = lin.bias if lin.bias is not None else torch.zeros_like(scale)
            new = nn.Linear(lin.in_features, lin.out_features, bias=True).to(
                device=lin.weight.device, dtype=lin.weight.dtype
            )
            new.weight.copy_(lin.weight * scale[:, None])
            new.bias.copy_(bias * scale + shift)
            head[i - 1], head[i] = new, nn.Identity()
    return folded
