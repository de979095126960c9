"""The shape of every network, as pure arithmetic: layer widths, pooling, head.

In:  ModelConfig, input channels/size, number of classes, dataset name.
Out: ``NetSpec``, what ``claimbench.train.models.ConvNet`` builds; what it costs (FLOPs, conv
parameters) is ``claimbench.netcost``. No torch: planning (``claimbench.plan``) prices runs from
configs without loading the training stack, and the models build from the same spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.config import ModelConfig

BASICNET_WIDTHS = (64, 128, 128, 256, 256, 512, 512)
BASICNET_KERNELS = (5, 3, 3, 3, 3, 3, 3)
# VGG conv configurations ("M" = 2x2 max-pool), Simonyan & Zisserman.
VGG_LAYOUTS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    # Network Slimming's CIFAR VGG-19 (Liu et al. 2017, public code), which the paper says its
    # VGG-19 is identical to: four max-pools, the last stage ends in a 2x2 average pool (= the
    # global pooling here) and a single Linear(512, classes).
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512),
}


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    pool_after: bool


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network with other channel counts (used by slimming)."""

    convs: tuple[ConvSpec, ...]
    in_channels: int
    head_hidden: tuple[int, ...]
    num_classes: int
    # "global": global average pooling; "avg5s4": ImageNet BasicNet's avgpool(5, stride 4) + flatten
    # (needs the spatial size to size the first fc layer).
    pooling: str
    pooled_size: int  # spatial side after the conv part (1 for global pooling)
    activation: str
    negative_slope: float


def scaled(width: int, mult: float) -> int:
    return max(1, int(round(width * mult)))


def net_spec(cfg: ModelConfig, in_channels: int, image_size: int, num_classes: int, dataset: str) -> NetSpec:
    """The layout for a config; pure arithmetic so that plans can count FLOPs without a model."""
    if cfg.arch == "basicnet":
        widths = [scaled(w, cfg.width) for w in BASICNET_WIDTHS]
        if cfg.c1_channels is not None:
            widths[0] = cfg.c1_channels
        convs = tuple(
            ConvSpec(w, k, (i + 1) in cfg.pool_after)
            for i, (w, k) in enumerate(zip(widths, BASICNET_KERNELS))
        )
    else:
        layout = VGG_LAYOUTS[cfg.arch]
        convs_list: list[ConvSpec] = []
        for item in layout:
            if item == "M":
                last = convs_list[-1]
                convs_list[-1] = ConvSpec(last.out_channels, last.kernel, True)
            else:
                convs_list.append(ConvSpec(scaled(int(item), cfg.width), 3, False))
        if cfg.c1_channels is not None:
            convs_list[0] = ConvSpec(cfg.c1_channels, 3, convs_list[0].pool_after)
        convs = tuple(convs_list)
    side = image_size
    for c in convs:
        if c.pool_after:
            side = max(1, side // 2)
    pooling, pooled = "global", 1
    if dataset == "imagenet" and cfg.arch == "basicnet":
        pooling, pooled = "avg5s4", (side - 5) // 4 + 1
    hidden = cfg.fc_hidden if cfg.fc_hidden is not None else default_head(cfg.arch, dataset)
    return NetSpec(convs, in_channels, tuple(hidden), num_classes, pooling, pooled,
                   cfg.activation, cfg.negative_slope)


def default_head(arch: str, dataset: str) -> tuple[int, ...]:
    """Hidden fc sizes from the paper (section 4, 'Network Architectures')."""
    if dataset == "tinyimagenet":
        return (512, 256)
    if dataset == "imagenet":
        # BasicNet: [4096][2048][1000]; VGG on ImageNet uses the structure of Simonyan & Zisserman.
        return (4096, 2048) if arch == "basicnet" else (4096, 4096)
    if arch == "basicnet":
        return (256,)
    if arch == "vgg19":
        # "an fc structure identical to [14]" (Network Slimming): no hidden fc layer.
        return ()
    return (512,)
