"""One step of each regularizer against a hand computation (paper section 2.1)."""

import math

import pytest
import torch
from torch import nn

from claimbench.config import OptimConfig, TrainConfig
from claimbench.train.optim import (
    GRAPH_SAFE,
    CapturableAdagrad,
    KernelUsed,
    Regularizer,
    StepSchedule,
    build_optimizer,
    build_optimizers,
    build_regularizers,
    kernel_options,
    kernel_used,
    load_keeping_kernels,
    make_torch_optimizer,
    param_groups,
    set_lr,
)


def one_param_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def step(model, cfg: OptimConfig, grad: float, factor: float = 1.0):
    opt = build_optimizer(model, cfg)
    set_lr([opt], factor)
    reg = Regularizer(cfg.regularizer, cfg.lam, list(model.parameters()))
    model.weight.grad = torch.full_like(model.weight, grad)
    reg.before_step()
    opt.step()
    reg.after_step(factor)
    return float(model.weight.detach())


def test_adam_l2_first_step_is_normalised_by_the_summed_gradient():
    theta, g, lam = 2.0, 1e-5, 1e-2
    got = step(one_param_model(theta), OptimConfig(name="adam", regularizer="l2", lam=lam), g)
    total = g + lam * theta  # L2 enters the gradient before Adam sees it
    m_hat = total  # first step: bias-corrected moments are the gradient itself
    v_hat = total**2
    assert got == pytest.approx(theta - 1e-3 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-6)


def test_adam_weight_decay_multiplies_after_the_update():
    theta, g, lam = 2.0, 1e-5, 1e-2
    got = step(one_param_model(theta), OptimConfig(name="adam", regularizer="wd", lam=lam), g)
    after_adam = theta - 1e-3 * g / (abs(g) + 1e-8)
    assert got == pytest.approx(after_adam * (1 - lam), rel=1e-6)


def test_weight_decay_follows_the_lr_schedule():
    theta, lam = 1.0, 1e-2
    got = step(one_param_model(theta), OptimConfig(name="sgd", regularizer="wd", lam=lam), 0.0, factor=0.1)
    assert got == pytest.approx(theta * (1 - lam * 0.1), rel=1e-6)


def test_sgd_l2_step():
    theta, g, lam = 1.5, 0.2, 1e-3
    got = step(one_param_model(theta), OptimConfig(name="sgd", regularizer="l2", lam=lam), g)
    assert got == pytest.approx(theta - 0.1 * (g + lam * theta), rel=1e-6)


def test_zero_lambda_is_no_regularization():
    a = step(one_param_model(1.0), OptimConfig(name="adam", regularizer="l2", lam=0.0), 0.1)
    b = step(one_param_model(1.0), OptimConfig(name="adam", regularizer="none", lam=0.0), 0.1)
    assert a == b


def test_bn_groups_get_their_own_lr_scale():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    cfg = OptimConfig(name="adam", gamma_lr_scale=0.1, beta_lr_scale=0.5)
    opt = build_optimizer(model, cfg)
    lrs = {tuple(g["names"]): g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({("weights",): 1e-3, ("bn_gamma",): 1e-4, ("bn_beta",): 5e-4})
    names = [g["name"] for g in param_groups(model, cfg)]
    assert names == ["weights", "bn_gamma", "bn_beta"]


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("adam", 1e-3), ("amsgrad", 1e-3), ("adamax", 2e-3),
                                     ("rmsprop", 1e-3), ("adagrad", 1e-2), ("adadelta", 1.0)])
def test_paper_base_learning_rates(name, lr):
    opt = build_optimizer(one_param_model(1.0), OptimConfig(name=name))
    assert opt.param_groups[0]["lr"] == lr


def test_cifar_schedule_is_exact_and_keeps_iterations_when_batch_changes():
    sched = StepSchedule.for_run(TrainConfig(), 50_000)
    assert sched.boundaries == (312_500, 406_250)  # 250 + 75 epochs at 1,250 steps/epoch
    assert sched.factor(312_499) == 1 and sched.factor(312_500) == pytest.approx(0.1)
    bigger = StepSchedule.for_run(TrainConfig(batch_size=160), 50_000)
    assert bigger.boundaries == sched.boundaries
    tiny = StepSchedule.for_run(TrainConfig(phases=(250, 75, 75)), 100_000)
    assert tiny.total_steps == 400 * 2500 and tiny.factor(tiny.total_steps - 1) == pytest.approx(0.01)


def test_runs_share_optimizers_by_name_and_keep_their_own_rates():
    a, b, c = one_param_model(1.0), one_param_model(1.0), one_param_model(1.0)
    cfgs = [OptimConfig(name="adam"), OptimConfig(name="sgd"), OptimConfig(name="adam", lr=3e-3)]
    opts = build_optimizers([(cfg, param_groups(m, cfg)) for m, cfg in zip((a, b, c), cfgs)])
    assert [type(o).__name__ for o in opts] == ["Adam", "SGD"]
    adam_lrs = sorted(g["lr"] for g in opts[0].param_groups)
    assert adam_lrs == pytest.approx([1e-3, 3e-3])
    set_lr(opts, 0.1)
    assert opts[1].param_groups[0]["lr"] == pytest.approx(0.01)


def test_regularizers_merge_runs_with_the_same_kind_and_lambda():
    params = [[torch.ones(1)] for _ in range(4)]
    cfgs = [OptimConfig(regularizer="l2", lam=1e-3), OptimConfig(regularizer="l2", lam=1e-3),
            OptimConfig(regularizer="wd", lam=1e-3), OptimConfig(regularizer="none", lam=0.0)]
    regs = build_regularizers(list(zip(cfgs, params)))
    assert [(r.kind, r.lam, len(r.params)) for r in regs] == [("l2", 1e-3, 2), ("wd", 1e-3, 1)]
    with pytest.raises(ValueError, match="unknown regularizer"):
        Regularizer("l1", 1e-3, [])


def test_kernels_follow_what_the_device_supports():
    # Nothing is fused on the meta device, so the choice must fall back rather than raise.
    assert dict(kernel_options("adam", "meta")) == {"foreach": True}
    assert dict(kernel_options("adam", "cpu")) == {"fused": True}  # torch >= 2.4 has fused CPU Adam
    for name in ("sgd", "amsgrad", "adamax", "rmsprop", "adagrad", "adadelta"):
        assert kernel_options(name, "cpu") in ((("fused", True),), (("foreach", True),))


ADAGRAD_SETTINGS = [
    {},  # the paper's (torch's defaults)
    {"lr_decay": 0.01},
    {"weight_decay": 0.1},
    {"initial_accumulator_value": 0.5, "eps": 1e-6},
    {"lr_decay": 0.05, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
]


@pytest.mark.parametrize("settings", ADAGRAD_SETTINGS, ids=lambda s: ",".join(s) or "defaults")
@pytest.mark.parametrize("kernel", [{"foreach": False}, {"foreach": True}, {"fused": True}], ids=lambda k: next(iter(k)))
def test_capturable_adagrad_steps_as_torchs_adagrad(settings, kernel):
    g = torch.Generator().manual_seed(0)
    ref = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g), torch.randn((), generator=g)]
    got = [t.clone() for t in ref]
    torch_opt = torch.optim.Adagrad([{"params": ref[:2]}, {"params": ref[2:], "lr": 0.2}], lr=0.05, **settings, **kernel)
    ours = CapturableAdagrad([{"params": got[:2]}, {"params": got[2:], "lr": 0.2}], lr=0.05, **settings)
    for step in range(400):
        if step == 300:  # a learning-rate drop, as the schedule makes
            for opt in (torch_opt, ours):
                for group in opt.param_groups:
                    group["lr"] *= 0.1
        for a, b in zip(ref, got):
            grad = torch.randn(a.shape, generator=g) * (10.0 if step % 7 == 0 else 1.0)
            a.grad, b.grad = grad.clone(), grad.clone()
        torch_opt.step()
        ours.step()
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(ref, got):
        assert torch.allclose(torch_opt.state[a]["sum"], ours.state[b]["sum"], rtol=1e-5)
        assert float(ours.state[b]["step"]) == float(torch_opt.state[a]["step"]) == 400
    if not settings.get("lr_decay") and kernel != {"fused": True}:
        assert all(torch.equal(a, b) for a, b in zip(ref, got))  # the same operations in the same order


def test_capturable_adagrad_keeps_its_counters_with_the_parameters_and_reads_no_host_value():
    p = torch.zeros(3, device="meta")
    p.grad = torch.zeros(3, device="meta")
    opt = CapturableAdagrad([p], lr_decay=0.1, weight_decay=0.1)
    assert opt.state[p]["step"].device.type == "meta"
    opt.step()  # a host read of a meta tensor would raise
    with pytest.raises(ValueError, match="lr_decay"):
        CapturableAdagrad([torch.zeros(1)], lr_decay=-1.0)


def test_adagrad_is_capturable_only_when_asked():
    model = one_param_model(1.0)
    cfg = OptimConfig(name="adagrad")
    eager = make_torch_optimizer("adagrad", param_groups(model, cfg), 1e-2)
    graphed = make_torch_optimizer("adagrad", param_groups(model, cfg), 1e-2, capturable=True)
    assert type(eager) is torch.optim.Adagrad and type(graphed) is CapturableAdagrad
    assert kernel_used(graphed) == KernelUsed("adagrad", "CapturableAdagrad", "foreach", True)
    assert "adagrad" in GRAPH_SAFE


def test_kernel_used_reads_the_optimizers_own_flags():
    model = one_param_model(1.0)
    (opt,) = build_optimizers([(OptimConfig(name="adam"), param_groups(model, OptimConfig(name="adam")))])
    assert kernel_used(opt) == KernelUsed("adam", "Adam", "fused", False)
    plain = torch.optim.SGD(model.parameters(), lr=0.1, foreach=False)
    assert kernel_used(plain).kernel == "plain"
    default = torch.optim.SGD(model.parameters(), lr=0.1)  # foreach=None: torch's choice, a loop on the CPU
    assert kernel_used(default).kernel == "plain"


def test_loading_a_checkpoint_keeps_the_loading_optimizers_kernels():
    # torch's load_state_dict copies the saved groups' kernel flags over the new ones; a resumed
    # run must step with the kernels it chose (a checkpoint from a GPU asks for capturable Adam).
    def trained(**flags):
        model = one_param_model(1.0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **flags)
        model.weight.grad = torch.ones_like(model.weight)
        opt.step()
        return model, opt

    _, saved_by = trained(foreach=False)
    saved = saved_by.state_dict()
    saved["param_groups"][0].update(capturable=True, fused=None, foreach=False)
    model, opt = trained(fused=True)
    load_keeping_kernels(opt, saved)
    assert (opt.param_groups[0]["fused"], opt.param_groups[0]["capturable"]) == (True, False)
    state = opt.state[model.weight]
    assert state["step"].dtype == torch.float32 and float(state["step"]) == 1  # placed for the fused kernel
    opt.step()  # a capturable Adam on the CPU would refuse to step
    plain = torch.optim.Adam(one_param_model(1.0).parameters(), lr=1e-3, fused=True)
    plain.load_state_dict(saved)
    assert plain.param_groups[0]["capturable"] is True  # what the helper exists to prevent
