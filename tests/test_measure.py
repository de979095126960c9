"""claimbench.measure: planted answers for sparsity, universality, pruning and slimming.

The network is BasicNet at width 0.125 on 8x8 images: conv widths 8,16,16,32,32,64,64
(232 features), kernels 5,3,3,3,3,3,3, head [256][4].
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from claimbench.config import ModelConfig
from claimbench.data.base import ImageData
from claimbench.measure import (
    activation_sparsity,
    fold_batchnorm,
    gamma_sparsity,
    kept_channels,
    measure_model,
    pooled_activations,
    slim_model,
    universality,
    zero_pruned,
)
from claimbench.netcost import flops_per_image
from claimbench.train.models import build_model, count_params

WIDTHS = [8, 16, 16, 32, 32, 64, 64]
TOTAL = 232
# Conv weights by hand: 5*5*3*8 + 9*8*16 + 9*16*16 + 9*16*32 + 9*32*32 + 9*32*64 + 9*64*64
DENSE_CONV = 600 + 1152 + 2304 + 4608 + 9216 + 18432 + 36864  # = 73176

BASE_KEYS = {
    "train_loss", "test_loss", "test_error",
    "sparsity_gamma", "sparsity_gamma_1e-2", "layer_sparsity_gamma", "layer_sparsity_gamma_1e-2",
    "layer_sizes",
    "sparsity_act", "sparsity_act_1e-4", "layer_sparsity_act", "layer_sparsity_act_1e-4",
    "universality",
    "pruned_features", "pruned_test_error", "conv_params_total", "conv_params_pruned_pct",
    "slim_params", "dense_params", "slim_flops", "dense_flops", "slim_max_abs_diff",
    "slim_matches_zeroed", "slim_folded_params", "slim_folded_max_abs_diff",
    "gamma", "beta",
}


def make_model(seed: int = 0, **cfg) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(width=0.125, **cfg), in_channels=3, image_size=8,
                       num_classes=4, dataset="digits").eval()


def make_data(n_train: int = 20, n_test: int = 10, size: int = 8, classes: int = 4, seed: int = 1) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(
        name="fake",
        train_x=torch.randn(n_train, 3, size, size, generator=g),
        train_y=torch.randint(0, classes, (n_train,), generator=g),
        test_x=torch.randn(n_test, 3, size, size, generator=g),
        test_y=torch.randint(0, classes, (n_test,), generator=g),
        num_classes=classes,
    )


def randomize_bn(model: nn.Module, seed: int = 2) -> None:
    """Non-trivial running stats and affine parameters, so that copying mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))


def set_bn(model, layer: int, channels, gamma: float | None = None, beta: float | None = None) -> None:
    bn = model.blocks[layer].bn
    with torch.no_grad():
        if gamma is not None:
            bn.weight[channels] = gamma
        if beta is not None:
            bn.bias[channels] = beta


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


# ----------------------------------------------------------------------------- gamma sparsity


def test_gamma_sparsity_both_thresholds():
    m = make_model()
    set_bn(m, 0, [0, 1], gamma=0.0)
    set_bn(m, 1, [3], gamma=-5e-4)  # |gamma| counts
    set_bn(m, 2, [5], gamma=5e-3)  # only below 1e-2
    set_bn(m, 6, [10], gamma=1e-3)  # not < 1e-3 (strict), but < 1e-2
    low, high = gamma_sparsity(m, 1e-3), gamma_sparsity(m, 1e-2)
    assert low.sizes == WIDTHS
    assert low.inactive == [2, 1, 0, 0, 0, 0, 0]
    assert low.layers == [25.0, 6.25, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert low.total == pytest.approx(100 * 3 / TOTAL, abs=1e-12)
    assert high.inactive == [2, 1, 1, 0, 0, 0, 1]
    assert high.layers == [25.0, 6.25, 6.25, 0.0, 0.0, 0.0, pytest.approx(100 / 64, abs=1e-12)]
    assert high.total == pytest.approx(100 * 5 / TOTAL, abs=1e-12)

    r = measure_model(m, make_data(), batch_size=7)
    assert r["sparsity_gamma"] == pytest.approx(100 * 3 / TOTAL, abs=1e-12)
    assert r["sparsity_gamma_1e-2"] == pytest.approx(100 * 5 / TOTAL, abs=1e-12)
    assert r["layer_sparsity_gamma"] == low.layers
    assert r["layer_sparsity_gamma_1e-2"] == high.layers
    assert r["layer_sizes"] == WIDTHS
    assert r["pruned_features"] == 3
    assert r["gamma"][1][3] == -5e-4 and r["gamma"][2][5] == 5e-3 and r["gamma"][0][:2] == [0.0, 0.0]
    assert [len(v) for v in r["gamma"]] == WIDTHS and [len(v) for v in r["beta"]] == WIDTHS


# ------------------------------------------------------------------------ activation sparsity


def constant_model(activation: str = "relu"):
    """Every feature outputs exactly its beta (gamma = 0), beta = 1 unless planted otherwise."""
    m = make_model(activation=activation)
    with torch.no_grad():
        for block in m.blocks:
            block.bn.weight.zero_()
            block.bn.bias.fill_(1.0)
    return m


def test_activation_sparsity_and_universality_planted():
    m = constant_model()
    set_bn(m, 0, [3], beta=-1.0)  # dead: relu(-1) = 0 on every image
    set_bn(m, 4, [0, 1, 2, 3], beta=-2.0)  # dead
    set_bn(m, 6, [7], beta=1e-6)  # active at 1e-12, inactive at 1e-4; universality 100
    set_bn(m, 6, [8], beta=0.0)  # exactly 0: dead
    set_bn(m, 5, [9], beta=1e-4)  # max == 1e-4 does not exceed 1e-4: inactive there only
    set_bn(m, 5, [10], beta=1e-13)  # positive but <= 1e-12: dead, universality 0 (not 100)
    data = make_data()
    pooled = pooled_activations(m, data, "train", batch_size=6)
    assert [tuple(p.shape) for p in pooled] == [(20, w) for w in WIDTHS]
    assert torch.all(pooled[0][:, 3] == 0) and torch.all(pooled[0][:, 0] == 1.0)

    a = activation_sparsity(pooled, 1e-12)
    assert a.inactive == [1, 0, 0, 0, 4, 1, 1]
    assert activation_sparsity(pooled, 1e-4).inactive == [1, 0, 0, 0, 4, 2, 2]

    r = measure_model(m, data, batch_size=6)
    assert r["layer_sparsity_act"] == [12.5, 0.0, 0.0, 0.0, 12.5, 100 / 64, pytest.approx(100 / 64, abs=1e-12)]
    assert r["sparsity_act"] == pytest.approx(100 * 7 / TOTAL, abs=1e-12)
    assert r["sparsity_act_1e-4"] == pytest.approx(100 * 9 / TOTAL, abs=1e-12)
    assert r["layer_sparsity_act_1e-4"][6] == pytest.approx(100 * 2 / 64, abs=1e-12)
    expected = [[100.0] * w for w in WIDTHS]
    expected[0][3] = 0.0
    expected[4][0:4] = [0.0] * 4
    expected[6][8] = 0.0
    expected[5][10] = 0.0
    assert r["universality"] == expected
    # gamma = 0 everywhere: by scale every feature is inactive, by activation most are not.
    assert r["sparsity_gamma"] == 100.0


def test_activation_uses_absolute_value():
    """LeakyReLU of a constant -1 is -0.01: an active feature (max |act| = 0.01)."""
    m = constant_model("leaky_relu")
    set_bn(m, 2, [4], beta=-1.0)
    pooled = pooled_activations(m, make_data(), "train", batch_size=50)
    assert torch.allclose(pooled[2][:, 4], torch.full((20,), 0.01), rtol=1e-6, atol=0)
    assert activation_sparsity(pooled).total == 0.0
    assert universality(pooled)[2][4].item() == 100.0


def test_universality_k_of_n():
    """Layer 0, feature 0 computes relu(x[0] - 0.5) of the input's channel 0 (centre tap of the
    5x5 kernel, BN eps 0, mean 0, var 1): it fires on exactly the k marked images."""
    n, marked, faint = 20, [0, 3, 4, 9, 12, 17, 19], 5
    data = make_data(n_train=n)
    x = data.train_x.clone()
    x[:, 0] = -1.0
    for j, i in enumerate(marked):  # one bright pixel each, at varying positions
        x[i, 0, j, (3 * j) % 8] = 0.5 + 1e-4 * (j + 1)
    # active but below 1e-3 of the feature's max: output ~1.2e-7 vs max 7e-4
    x[faint, 0, 2, 2] = 0.5 + 1e-7
    data = ImageData("fake", x, data.train_y, data.test_x, data.test_y, data.num_classes)

    m = make_model()
    block = m.blocks[0]
    with torch.no_grad():
        block.conv.weight[0].zero_()
        block.conv.weight[0, 0, 2, 2] = 1.0
        block.bn.eps = 0.0
        block.bn.running_mean[0] = 0.0
        block.bn.running_var[0] = 1.0
        block.bn.weight[0] = 1.0
        block.bn.bias[0] = -0.5

    pooled = pooled_activations(m, data, "train", batch_size=6)
    expected = torch.relu(x[:, 0].amax(dim=(1, 2)) - 0.5)
    assert torch.allclose(pooled[0][:, 0], expected, rtol=1e-6, atol=0)
    assert int((pooled[0][:, 0] > 0).sum()) == len(marked) + 1  # the faint image is active
    u = universality(pooled)
    assert u[0][0].item() == pytest.approx(100 * len(marked) / n, abs=1e-9)  # 35 %
    r = measure_model(m, data, batch_size=6)
    assert r["universality"][0][0] == 35.0
    assert r["layer_sparsity_act"][0] == 0.0


# ------------------------------------------------------------------------------------ pruning


@pytest.mark.slow
def test_zeroing_dead_channels_keeps_logits():
    m = make_model()
    randomize_bn(m)
    set_bn(m, 1, [2, 5], gamma=0.0, beta=-1.0)
    set_bn(m, 6, [0, 1, 2, 3], gamma=0.0, beta=-3.0)
    data = make_data()
    zeroed = zero_pruned(m)
    assert zeroed is not m
    assert torch.equal(logits(zeroed, data.test_x), logits(m, data.test_x))
    assert torch.equal(zeroed.blocks[1].bn.bias[[2, 5]], torch.zeros(2))
    assert m.blocks[1].bn.bias[2].item() == -1.0  # original untouched
    r = measure_model(m, data, batch_size=4)
    assert r["pruned_features"] == 6
    assert r["pruned_test_error"] == r["test_error"]
    assert r["slim_matches_zeroed"] is True


def test_slim_matches_zeroed_and_counts():
    m = make_model()
    randomize_bn(m)
    set_bn(m, 0, [1, 6], gamma=5e-4, beta=0.3)
    set_bn(m, 3, list(range(10)), gamma=-2e-4, beta=0.5)
    set_bn(m, 6, [5, 60, 63], gamma=0.0, beta=0.7)
    m.blocks[2].bn.eps = 0.1  # a non-default eps must be carried over
    data = make_data()
    zeroed, slim = zero_pruned(m), slim_model(m)
    assert slim.blocks[2].bn.eps == 0.1
    z = logits(zeroed, data.test_x)
    assert (z - logits(m, data.test_x)).abs().max() > 1e-4  # zeroing did change the function
    assert torch.allclose(logits(slim, data.test_x), z, rtol=0, atol=1e-5)
    assert [c.out_channels for c in slim.spec.convs] == [6, 16, 16, 22, 32, 64, 61]
    assert [len(k) for k in kept_channels(m)] == [6, 16, 16, 22, 32, 64, 61]
    assert slim.training is False

    # Hand counts. Kept conv weights: 25*3*6 + 9*6*16 + 9*16*16 + 9*16*22 + 9*22*32 + 9*32*64 + 9*64*61
    kept_conv = 450 + 864 + 2304 + 3168 + 6336 + 18432 + 35136
    # slim params: conv + BN (2 per feature: 2*217) + fc 61->256 (+bias) + BN1d 256 + fc 256->4
    slim_params = kept_conv + 434 + (61 * 256 + 256) + 512 + (256 * 4 + 4)
    dense_params = DENSE_CONV + 2 * TOTAL + (64 * 256 + 256) + 512 + (256 * 4 + 4)
    r = measure_model(m, data, batch_size=3)
    assert r["conv_params_total"] == DENSE_CONV == 73176
    assert r["conv_params_pruned_pct"] == pytest.approx(100 * (DENSE_CONV - kept_conv) / DENSE_CONV, abs=1e-12)
    assert r["slim_params"] == slim_params == count_params(slim)
    assert r["dense_params"] == dense_params == count_params(m)
    assert r["dense_flops"] == flops_per_image(m.spec, 8)
    assert r["slim_flops"] == flops_per_image(slim.spec, 8) < r["dense_flops"]
    assert r["pruned_features"] == 15
    assert r["slim_matches_zeroed"] is True and r["slim_max_abs_diff"] < 1e-5
    assert r["slim_folded_max_abs_diff"] < 1e-4
    # Folding removes gamma and beta and adds a conv bias (-217), and drops BN1d (-512).
    assert r["slim_folded_params"] == slim_params - 217 - 512


@pytest.mark.slow
def test_slim_with_avgpool_head_and_top5():
    """ImageNet-style head: avgpool(5, stride 4) on 9x9 -> 2x2, each channel owns 4 fc columns."""
    torch.manual_seed(3)
    m = build_model(ModelConfig(width=0.125, pool_after=(), fc_hidden=(32,)), in_channels=3,
                    image_size=9, num_classes=101, dataset="imagenet").eval()
    assert m.spec.pooling == "avg5s4" and m.spec.pooled_size == 2
    randomize_bn(m)
    set_bn(m, 6, [0, 9, 30, 63], gamma=1e-4, beta=0.4)
    set_bn(m, 2, [1], gamma=0.0, beta=0.2)
    data = make_data(n_train=12, n_test=8, size=9, classes=101)
    zeroed, slim = zero_pruned(m), slim_model(m)
    assert slim.head[0].in_features == 60 * 4
    z = logits(zeroed, data.test_x)
    assert (z - logits(m, data.test_x)).abs().max() > 1e-4
    assert torch.allclose(logits(slim, data.test_x), z, rtol=0, atol=1e-5)
    r = measure_model(m, data, batch_size=5)
    assert BASE_KEYS | {"test_error_top5", "pruned_test_error_top5"} == set(r)
    assert r["slim_matches_zeroed"] is True
    top5 = logits(m, data.test_x).topk(5, dim=1).indices
    expected = 100.0 * float((~(top5 == data.test_y[:, None]).any(dim=1)).float().mean())
    assert r["test_error_top5"] == pytest.approx(expected, abs=1e-9)
    top5z = z.topk(5, dim=1).indices
    expected_z = 100.0 * float((~(top5z == data.test_y[:, None]).any(dim=1)).float().mean())
    assert r["pruned_test_error_top5"] == pytest.approx(expected_z, abs=1e-9)


# layer -> conv weights removed with every channel of it: its own and the next layer's inputs
ALL_PRUNED = {0: 25 * 3 * 8 + 9 * 8 * 16, 3: 9 * 16 * 32 + 9 * 32 * 32, 6: 9 * 64 * 64}


@pytest.mark.parametrize("layer", sorted(ALL_PRUNED))
def test_slim_layer_with_every_channel_pruned(layer):
    m = make_model()
    randomize_bn(m)
    set_bn(m, layer, slice(None), gamma=0.0)  # betas stay random and nonzero
    data = make_data()
    zeroed, slim = zero_pruned(m), slim_model(m)
    assert slim.spec.convs[layer].out_channels == 1
    assert slim.blocks[layer].bn.weight.item() == 0.0 and slim.blocks[layer].bn.bias.item() == 0.0
    assert torch.allclose(logits(slim, data.test_x), logits(zeroed, data.test_x), rtol=0, atol=1e-5)
    r = measure_model(m, data)
    assert r["conv_params_pruned_pct"] == pytest.approx(100 * ALL_PRUNED[layer] / DENSE_CONV, abs=1e-12)
    assert r["pruned_features"] == WIDTHS[layer]
    assert r["slim_matches_zeroed"] is True


def test_fold_batchnorm_is_exact():
    m = make_model()
    randomize_bn(m)
    data = make_data()
    folded = fold_batchnorm(m)
    assert not any(isinstance(x, (nn.BatchNorm1d, nn.BatchNorm2d)) for x in folded.modules())
    assert all(b.conv.bias is not None for b in folded.blocks)
    assert torch.allclose(logits(folded, data.test_x), logits(m, data.test_x), rtol=1e-5, atol=1e-5)
    assert count_params(folded) == count_params(m) - TOTAL - 2 * 256
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())  # original untouched


# ------------------------------------------------------------------------- the whole report


@pytest.mark.slow
def test_measure_model_losses_keys_and_no_side_effects():
    m = make_model()
    randomize_bn(m)
    set_bn(m, 5, [1, 2], gamma=1e-4)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    data = make_data(n_train=23, n_test=11)
    r = measure_model(m, data, batch_size=5)
    assert m.training is False  # put in eval mode, nothing restored
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(r) == BASE_KEYS
    json.dumps(r, allow_nan=False)

    with torch.no_grad():
        lt, ls = m(data.train_x), m(data.test_x)
    assert r["train_loss"] == pytest.approx(F.cross_entropy(lt, data.train_y).item(), rel=1e-5)
    assert r["test_loss"] == pytest.approx(F.cross_entropy(ls, data.test_y).item(), rel=1e-5)
    wrong = int((ls.argmax(1) != data.test_y).sum())
    assert r["test_error"] == pytest.approx(100 * wrong / 11, abs=1e-12)
    assert [len(u) for u in r["universality"]] == WIDTHS
    assert all(0.0 <= v <= 100.0 for u in r["universality"] for v in u)
    assert r["pruned_features"] == 2
