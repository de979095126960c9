import pytest
import torch

from claimbench.config import ModelConfig
from claimbench.netcost import conv_param_count, flops_per_image
from claimbench.netshape import net_spec
from claimbench.train.models import build_model


def test_basicnet_conv_parameter_count_matches_the_paper():
    # 002 Table 2 header: "% Param Pruned (4649664)".
    spec = net_spec(ModelConfig(), 3, 32, 10, "cifar10")
    assert conv_param_count(spec) == 4_649_664
    assert [c.out_channels for c in spec.convs] == [64, 128, 128, 256, 256, 512, 512]
    assert [c.kernel for c in spec.convs] == [5, 3, 3, 3, 3, 3, 3]
    model = build_model(ModelConfig(), 3, 32, 10, "cifar10")
    assert sum(b.conv.weight.numel() for b in model.blocks) == 4_649_664
    assert all(b.conv.bias is None for b in model.blocks)


@pytest.mark.parametrize(
    "width,c1,expected",
    [
        (0.5, 64, [64, 64, 64, 128, 128, 256, 256]),  # 64-0.5x (Table 6)
        (0.25, 32, [32, 32, 32, 64, 64, 128, 128]),  # 32-0.25x
    ],
)
def test_width_variants(width, c1, expected):
    spec = net_spec(ModelConfig(width=width, c1_channels=c1), 3, 32, 10, "cifar10")
    assert [c.out_channels for c in spec.convs] == expected


def test_heads_follow_the_paper():
    assert net_spec(ModelConfig(), 3, 32, 100, "cifar100").head_hidden == (256,)
    assert net_spec(ModelConfig(), 3, 64, 200, "tinyimagenet").head_hidden == (512, 256)
    imagenet = net_spec(ModelConfig(), 3, 224, 1000, "imagenet")
    assert imagenet.head_hidden == (4096, 2048) and imagenet.pooling == "avg5s4"
    assert net_spec(ModelConfig(arch="vgg16"), 3, 32, 10, "cifar10").head_hidden == (512,)


@pytest.mark.parametrize("arch,convs", [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_forward_and_depth(arch, convs):
    model = build_model(ModelConfig(arch=arch, width=0.125), 3, 32, 10, "cifar10")
    assert len(model.blocks) == convs
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_init_gamma_one_beta_configurable_and_leaky():
    model = build_model(ModelConfig(width=0.125, bn_beta_init=-0.1, activation="leaky_relu", negative_slope=0.1), 3, 8, 10, "digits")
    for b in model.blocks:
        assert torch.all(b.bn.weight == 1) and torch.allclose(b.bn.bias, torch.full_like(b.bn.bias, -0.1))
        assert isinstance(b.act, torch.nn.LeakyReLU) and b.act.negative_slope == 0.1


def test_imagenet_basicnet_forward():
    model = build_model(ModelConfig(width=0.0625, fc_hidden=(8,)), 3, 224, 1000, "imagenet")
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_flops_counts_convs_and_head():
    spec = net_spec(ModelConfig(width=0.125, pool_after=()), 3, 8, 10, "digits")
    expected_c1 = 2 * 25 * 3 * 8 * 64
    assert flops_per_image(spec, 8) > expected_c1
    assert flops_per_image(spec, 8, kept=[1] * 7) < flops_per_image(spec, 8)


@pytest.mark.parametrize("cfg,side,dataset", [
    (ModelConfig(width=0.125), 8, "cifar10"),
    (ModelConfig(width=0.0625, fc_hidden=(8, 6)), 64, "tinyimagenet"),
    (ModelConfig(width=0.0625, fc_hidden=(8,)), 224, "imagenet"),  # avgpool(5, 4) + flatten head
])
def test_a_stacked_network_is_its_runs_side_by_side(cfg, side, dataset):
    from claimbench.train.models import ConvNet, stack_models, unstack_model

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(cfg, 3, side, 10, dataset).train())
    net = stack_models(models).train()
    assert isinstance(net, ConvNet) and net.runs == 3
    assert net.blocks[0].conv.groups == 3
    xs = [torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(10 + i)) for i in range(3)]
    out = net(torch.cat(xs, dim=1)).view(4, 3, 10)
    for k, (m, x) in enumerate(zip(models, xs)):
        torch.testing.assert_close(out[:, k], m(x), rtol=1e-4, atol=1e-4)  # BN over 4 images: rounding x ~10
        # BatchNorm statistics are per run too.
        back = unstack_model(net, k)
        torch.testing.assert_close(back.blocks[2].bn.running_mean, m.blocks[2].bn.running_mean)
    # Unstacking gives exactly the single-run networks (same keys, shapes and values).
    back = unstack_model(stack_models(models), 1)
    for (name, a), (name_b, b) in zip(back.state_dict().items(), models[1].state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
