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

import copy
from typing import Callable

import torch
from torch import nn

from claimbench.config import ARCHS, ModelConfig, plugin_registry

# The layout of every network (widths, pooling, head, FLOPs) is pure arithmetic in
# ``claimbench.netshape``, torch-free so that plans can price runs; the modules here build from it.
from claimbench.netshape import NetSpec, net_spec


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


class FeatureLayer:
    """One BatchNorm2d of a plug-in network and the activation module after it: what measurement
    reads from a ``ConvNet`` block (``.bn``, and a forward hook that sees the activations)."""

    def __init__(self, bn: nn.BatchNorm2d, act: nn.Module):
        self.bn, self.act = bn, act

    def register_forward_hook(self, hook):  # noqa: ANN001, ANN201  (nn.Module's signature)
        return self.act.register_forward_hook(hook)


class PluginNet(nn.Module):
    """A plug-in's network (``claimbench.plugins.ModelPlugin.build``) as the loop and the measurements
    see a network: ``runs`` networks in one (1 unless a stackable plug-in was stacked, see
    ``stack_models``), no ``spec`` (its layout is not claimbench's, so nothing slims or counts its conv
    weights), and ``blocks``: its features, one ``FeatureLayer`` per BatchNorm2d, each measured
    after the ReLU/LeakyReLU module registered right after it. Its weights are the plug-in
    module's under the prefix ``net.``. ``make(runs)`` builds the plug-in's network for ``runs``
    runs again (None: the plug-in is not stackable)."""

    spec = None

    def __init__(self, name: str, net: nn.Module, runs: int = 1,
                 make: Callable[[int], nn.Module] | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"the plug-in architecture {name}: build returned a {type(net).__name__}, "
                            f"not a torch.nn.Module")
        self.name, self.net, self.runs, self.make = name, net, runs, make
        self.blocks  # noqa: B018  (checks the features now, before any training)

    @property
    def blocks(self) -> list[FeatureLayer]:
        modules = list(self.net.modules())
        layers, acts = [], set()
        for i, m in enumerate(modules):
            if not isinstance(m, nn.BatchNorm2d):
                continue
            act = modules[i + 1] if i + 1 < len(modules) else None
            if not isinstance(act, (nn.ReLU, nn.LeakyReLU)) or id(act) in acts:
                raise ValueError(f"the plug-in architecture {self.name}: BatchNorm2d number {len(layers) + 1} is not "
                                 f"followed by its own nn.ReLU or nn.LeakyReLU module (registered right after it), "
                                 f"so its features' activations cannot be measured")
            acts.add(id(act))
            layers.append(FeatureLayer(m, act))
        if not layers:
            raise ValueError(f"the plug-in architecture {self.name} has no BatchNorm2d layer: claimbench's features "
                             f"are BatchNorm channels, so it has nothing to measure")
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.no_grad()
def stack_models(models: list[ConvNet]) -> ConvNet:
    """One ``ConvNet(spec, runs=len(models))`` holding copies of the single-run models; for a
    stackable plug-in, its ``build(..., runs=K)`` holding them. A group of one is that network."""
    if isinstance(models[0], PluginNet):
        return _stack_plugin(models)
    with torch.device("meta"):  # no initialisation work: every value is copied in below
        net = ConvNet(models[0].spec, runs=len(models))
    net = net.to_empty(device=next(models[0].parameters()).device)
    return _copy_stacked(net, [m.state_dict() for m in models])


def _copy_stacked(net: nn.Module, states: list[dict]) -> nn.Module:
    """``net`` holding the runs' states one after another along each tensor's first dimension
    (0-dim tensors, BatchNorm's batch counter, are shared: the first run's)."""
    for name, t in net.state_dict().items():
        if t.dim() == 0:
            t.copy_(states[0][name])
        else:
            torch.cat([s[name] for s in states], out=t)
    return net


def _stack_plugin(models: list[PluginNet]) -> PluginNet:
    first, k = models[0], len(models)
    if k == 1:
        return first
    if first.make is None:
        raise ValueError(f"plug-in architecture {first.name}: not stackable, so its runs train one at a time, "
                         f"not in a group of {k}")
    # Building draws initial weights that are overwritten below: the global generator is put back
    # so that building a group leaves it as building its runs did.
    with torch.random.fork_rng(devices=[]):
        net = PluginNet(first.name, first.make(k), runs=k, make=first.make)
    states = [m.state_dict() for m in models]
    stacked = net.state_dict()
    problems = _stack_problems(states[0], stacked, k)
    if problems:
        raise ValueError(f"plug-in architecture {first.name} (stackable=True): build(..., runs={k}) is not {k} "
                         f"networks of build(..., runs=1) stacked along the first dimension: "
                         + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return _copy_stacked(net.to(next(first.parameters()).device), states)


def _stack_problems(single: dict, stacked: dict, k: int) -> list[str]:
    """How a stacked state_dict differs from K single ones stacked (empty: it does not)."""
    problems = []
    missing, extra = sorted(single.keys() - stacked.keys()), sorted(stacked.keys() - single.keys())
    if missing:
        problems.append(f"runs={k} lacks {', '.join(missing)}")
    if extra:
        problems.append(f"runs={k} has {', '.join(extra)}, which runs=1 lacks")
    for name in single.keys() & stacked.keys():
        one, many = tuple(single[name].shape), tuple(stacked[name].shape)
        want = one if not one else (k * one[0], *one[1:])
        if many != want:
            problems.append(f"{name} is {list(many)} for {k} runs, expected {list(want)} (runs=1: {list(one)})")
    return sorted(problems)


@torch.no_grad()
def unstack_model(net: ConvNet, k: int, device: torch.device | str | None = None) -> ConvNet:
    """Run k of a stacked network as a single-run ``ConvNet`` (a copy, on ``device``); for a
    plug-in, as its ``build(..., runs=1)``."""
    if isinstance(net, PluginNet):
        if net.runs == 1:
            single = copy.deepcopy(net)
        else:
            with torch.random.fork_rng(devices=[]):
                single = PluginNet(net.name, net.make(1), make=net.make)
            single.load_state_dict({name: run_view(t, net.runs, k).clone() for name, t in net.state_dict().items()})
        return single.to(device) if device is not None else single
    single = ConvNet(net.spec)
    single.load_state_dict({name: run_view(t, net.runs, k).clone() for name, t in net.state_dict().items()})
    return single.to(device) if device is not None else single


def build_model(cfg: ModelConfig, in_channels: int, image_size: int, num_classes: int, dataset: str) -> ConvNet:
    """Build and initialise: Xavier with the ReLU gain, BN gamma=1 and beta=cfg.bn_beta_init. A
    plug-in architecture builds and initialises itself (``PluginNet``)."""
    if cfg.arch not in ARCHS:
        registry = plugin_registry()
        plugin = registry.model_plugin(cfg.arch).plugin
        fields = registry.field_values(cfg.params)
        if not plugin.stackable:
            return PluginNet(cfg.arch, plugin.build(in_channels, image_size, num_classes,  # type: ignore[return-value]
                                                    **fields))

        def make(runs: int) -> nn.Module:
            return plugin.build(in_channels, image_size, num_classes, runs=runs, **fields)

        return PluginNet(cfg.arch, make(1), make=make)  # type: ignore[return-value]
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






def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

