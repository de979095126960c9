"""What a network of a ``NetSpec`` costs, as pure arithmetic: FLOPs per image and conv parameters.

In:  a ``NetSpec`` (``claimbench.netshape``), the image size, optionally the channels kept per layer.
Out: multiply-accumulates x2 of one forward pass; conv weights. Planning prices runs with them
(``claimbench.plan.estimate``) and measurement reports a pruned network's savings
(``claimbench.measure``); training never counts, so these sit apart from the shape it builds.
"""

from __future__ import annotations

from claimbench.netshape import NetSpec


def conv_param_count(spec: NetSpec, kept: list[int] | None = None) -> int:
    """Conv weights only (the paper's '% Param Pruned (4649664)'); ``kept`` = channels per layer."""
    outs = kept if kept is not None else [c.out_channels for c in spec.convs]
    total, cin = 0, spec.in_channels
    for c, cout in zip(spec.convs, outs):
        total += c.kernel * c.kernel * cin * cout
        cin = cout
    return total


def flops_per_image(spec: NetSpec, image_size: int, kept: list[int] | None = None) -> int:
    """Multiply-accumulates x2 of the conv and fc layers for one forward pass."""
    outs = kept if kept is not None else [c.out_channels for c in spec.convs]
    flops, cin, side = 0, spec.in_channels, image_size
    for c, cout in zip(spec.convs, outs):
        flops += 2 * c.kernel * c.kernel * cin * cout * side * side
        cin = cout
        if c.pool_after:
            side = max(1, side // 2)
    flat = cin * spec.pooled_size * spec.pooled_size
    for h in (*spec.head_hidden, spec.num_classes):
        flops += 2 * flat * h
        flat = h
    return flops
