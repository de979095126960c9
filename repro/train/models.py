"""The networks of Mehta et al. (CVPR 2019): BasicNet and VGG-11/16/19, all with BatchNorm.

In:  ModelConfig, input channels/size and number of classes.
Out: ``ConvNet``, an nn.Module whose conv part is a list of ``ConvBNAct`` blocks. Metrics,
pruning and slimming find the paper's features through ``ConvNet.blocks`` (one BN channel = one
feature = one filter), so every architecture here exposes the same structure.

One definition for one run or K runs trained together: ``ConvNet(spec, runs=K)`` is K independent
networks stacked along channels. Convolutions have ``groups=K``, BatchNorm is per channel (so per
run), fc layers are ``GroupedLinear`` (K batched matmuls); every parameter and buffer has K times
the leading dimension of the single-run one, run k's slice being ``run_view(t, K, k)``. With
``runs=1`` (the default) this is exactly the plain network, with the same state_dict keys and
shapes, so measurement, pruning and the cache only ever see single-run ``ConvNet``s
(``stack_models`` / ``unstack_model`` convert).

BasicNet (paper section 2.1, 4): C1 5x5 3->64, C2-C7 3x3 with 128,128,256,256,512,512 filters,
no conv bias, BN + activation after every conv, global average pooling, fc head with BN+ReLU
between fc layers. 4,649,664 conv parameters at width 1 (Table 2 header; pinned by a test).
The pooling positions are a configurable assumption (ModelConfig.pool_after).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from repro.config import ModelConfig

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


class ConvBNAct(nn.Module):
    """conv (no bias) -> BatchNorm -> activation: one paper feature per output channel (per run)."""

    def __init__(self, cin: int, cout: int, kernel: int, activation: str, negative_slope: float, runs: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(runs * cin, runs * cout, kernel, padding=kernel // 2, bias=False, groups=runs)
        self.bn = nn.BatchNorm2d(runs * cout)
        self.act = make_activation(activation, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def make_activation(name: str, negative_slope: float) -> nn.Module:
    return nn.LeakyReLU(negative_slope) if name == "leaky_relu" else nn.ReLU()


class GroupedLinear(nn.Linear):
    """``groups`` independent linear layers in one: input (B, groups * in), output (B, groups * out).

    The weight is (groups * out, in), so ``groups=1`` is an ``nn.Linear`` in every respect (same
    parameters, same call)."""

    def __init__(self, in_features: int, out_features: int, groups: int = 1):
        super().__init__(in_features, out_features * groups)
        self.in_features, self.out_features, self.groups = in_features, out_features, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return nn.functional.linear(x, self.weight, self.bias)
        g, batch = self.groups, x.shape[0]
        # (G, B, in) @ (G, in, out) + bias, one batched matmul for all runs.
        out = torch.baddbmm(self.bias.view(g, 1, -1), x.view(batch, g, -1).transpose(0, 1),
                            self.weight.view(g, -1, self.in_features).transpose(1, 2))
        return out.transpose(0, 1).reshape(batch, -1)


class ConvNet(nn.Module):
    """``runs`` networks of one layout (see the module docstring). Input (B, runs * C, H, W): run
    k's images in channels k*C..(k+1)*C; output (B, runs * classes)."""

    def __init__(self, spec: NetSpec, runs: int = 1):
        super().__init__()
        self.spec = spec
        self.runs = runs
        self.blocks = nn.ModuleList()
        cin = spec.in_channels
        for c in spec.convs:
            self.blocks.append(ConvBNAct(cin, c.out_channels, c.kernel, spec.activation, spec.negative_slope, runs))
            cin = c.out_channels
        self.pool = nn.MaxPool2d(2)
        flat = cin * spec.pooled_size * spec.pooled_size
        layers: list[nn.Module] = []
        for h in spec.head_hidden:
            layers += [GroupedLinear(flat, h, runs), nn.BatchNorm1d(runs * h), nn.ReLU()]
            flat = h
        layers.append(GroupedLinear(flat, spec.num_classes, runs))
        self.head = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block, c in zip(self.blocks, self.spec.convs):
            x = block(x)
            if c.pool_after:
                x = self.pool(x)
        if self.spec.pooling == "global":
            return x.mean(dim=(2, 3))
        return nn.functional.avg_pool2d(x, 5, 4).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def run_view(t: torch.Tensor, runs: int, k: int) -> torch.Tensor:
    """Run k's part of a parameter, gradient or buffer of a ``runs``-network: a view, so that
    writing to it writes to the stacked tensor. 0-dim tensors (BN's batch counter) are shared."""
    if t.dim() == 0 or runs == 1:
        return t
    n = t.shape[0] // runs
    return t[k * n : (k + 1) * n]


@torch.no_grad()
def stack_models(models: list[ConvNet]) -> ConvNet:
    """One ``ConvNet(spec, runs=len(models))`` holding copies of the single-run models."""
    with torch.device("meta"):  # no initialisation work: every value is copied in below
        net = ConvNet(models[0].spec, runs=len(models))
    net = net.to_empty(device=next(models[0].parameters()).device)
    states = [m.state_dict() for m in models]
    for name, t in net.state_dict().items():
        if t.dim() == 0:
            t.copy_(states[0][name])
        else:
            torch.cat([s[name] for s in states], out=t)
    return net


@torch.no_grad()
def unstack_model(net: ConvNet, k: int, device: torch.device | str | None = None) -> ConvNet:
    """Run k of a stacked network as a single-run ``ConvNet`` (a copy, on ``device``)."""
    single = ConvNet(net.spec)
    single.load_state_dict({name: run_view(t, net.runs, k).clone() for name, t in net.state_dict().items()})
    return single.to(device) if device is not None else single


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


def build_model(cfg: ModelConfig, in_channels: int, image_size: int, num_classes: int, dataset: str) -> ConvNet:
    """Build and initialise: Xavier with the ReLU gain, BN gamma=1 and beta=cfg.bn_beta_init."""
    model = ConvNet(net_spec(cfg, in_channels, image_size, num_classes, dataset))
    init_weights(model, cfg.bn_beta_init)
    return model


def init_weights(model: nn.Module, beta_init: float) -> None:
    gain = nn.init.calculate_gain("relu")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, beta_init if isinstance(m, nn.BatchNorm2d) else 0.0)


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


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

