"""Parameter groups by module identity, and the learning-rate schedules against their formulas."""
import math

import pytest
import torch
from torch import nn

from tasks.common.config import OptimizerConfig, ScheduleConfig
from tasks.common.optim import build_optimizer, build_scheduler, lr_factor, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False))
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
        self.head[2].weight.requires_grad_(False)  # frozen: left out


def _group_of(groups, p):
    return next(g for g in groups if any(q is p for q in g["params"]))


def test_groups_by_module_identity():
    net = Net()
    cfg = OptimizerConfig(lr=1e-3, weight_decay=0.05, lr_mults={"head": 10.0, "head.2": 2.0})
    groups = param_groups(net, cfg)
    conv, bn, conv2 = net.backbone
    lin, ln, lin2 = net.head
    expect = {
        conv.weight: (1e-3, 0.05), conv.bias: (1e-3, 0.0), bn.weight: (1e-3, 0.0), bn.bias: (1e-3, 0.0),
        conv2.weight: (1e-3, 0.05), lin.weight: (1e-2, 0.05), lin.bias: (1e-2, 0.0), ln.weight: (1e-2, 0.0), ln.bias: (1e-2, 0.0),
        lin2.bias: (2e-3, 0.0),  # the longer path wins
    }
    for p, (lr, wd) in expect.items():
        g = _group_of(groups, p)
        assert math.isclose(g["lr"], lr) and g["weight_decay"] == wd
    assert all(q is not lin2.weight for g in groups for q in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(expect)
    with pytest.raises(ValueError, match="no submodule or group .neck..*backbone, head"):
        param_groups(net, OptimizerConfig(lr_mults={"neck": 1.0}))


def test_decay_everything_when_asked():
    groups = param_groups(Net(), OptimizerConfig(weight_decay=0.1, decay_norm_and_bias=True))
    assert all(g["weight_decay"] == 0.1 for g in groups)


def test_poly_with_linear_warmup_matches_mmcv():
    cfg = ScheduleConfig(max_iters=1000, policy="poly", power=1.0, warmup_iters=100, warmup_ratio=1e-6)
    for it in (0, 50, 99, 100, 500, 999):
        regular = (1 - it / 1000) ** 1.0
        if it < 100:
            regular *= 1 - (1 - it / 100) * (1 - 1e-6)
        assert math.isclose(lr_factor(cfg, it), regular, rel_tol=1e-12)
    assert lr_factor(cfg, 0) == pytest.approx(1e-6)


def test_glpn_onecycle():
    cfg = ScheduleConfig(max_iters=200, policy="onecycle", power=0.9, onecycle_start_ratio=0.3, onecycle_peak=0.5)
    base = 1e-4
    for it in (0, 40, 100, 150, 199):
        t = it / 100  # GLPN: t = step / half_iterations
        glpn = 3e-5 + (1e-4 - 3e-5) * t**0.9 if t < 1 else 1e-4 + (3e-5 - 1e-4) * (t - 1) ** 0.9
        assert math.isclose(base * lr_factor(cfg, it), glpn, rel_tol=1e-9)


def test_step_cosine_and_scheduler():
    step = ScheduleConfig(max_iters=50, policy="step", milestones=(40,), gamma=0.1)
    assert lr_factor(step, 39) == 1.0 and lr_factor(step, 40) == pytest.approx(0.1)
    cos = ScheduleConfig(max_iters=10, policy="cosine", min_lr_ratio=0.0)
    assert lr_factor(cos, 5) == pytest.approx(0.5)
    net = Net()
    opt = build_optimizer(net, OptimizerConfig(lr=1.0, lr_mults={"head": 10.0}))
    sched = build_scheduler(opt, ScheduleConfig(max_iters=4, policy="poly"))
    lrs = []
    for _ in range(4):
        lrs.append(sorted(g["lr"] for g in opt.param_groups))
        opt.step()
        sched.step()
    assert [min(x) for x in lrs] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert [max(x) for x in lrs] == pytest.approx([10.0, 7.5, 5.0, 2.5])
    with pytest.raises(ValueError, match="policy must be"):
        build_scheduler(opt, ScheduleConfig(max_iters=10, policy="linear"))
    with pytest.raises(ValueError, match="optimizer.name"):
        build_optimizer(net, OptimizerConfig(name="lamb"))
    assert isinstance(build_optimizer(net, OptimizerConfig(name="sgd")), torch.optim.SGD)


def test_named_module_groups_declared_by_the_model():
    net = Net()
    named = {"offsets": [net.head[0], net.backbone[0]]}  # modules spread over the tree
    groups = param_groups(net, OptimizerConfig(lr=1.0, lr_mults={"backbone": 0.1, "offsets": 0.5}), named)
    assert _group_of(groups, net.backbone[0].weight)["lr"] == 0.5  # the named group wins over the path
    assert _group_of(groups, net.head[0].weight)["lr"] == 0.5
    assert _group_of(groups, net.backbone[2].weight)["lr"] == pytest.approx(0.1)
    assert _group_of(groups, net.head[1].weight)["lr"] == 1.0


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_adam_is_fused_on_cpu_and_steps_like_the_loop(name):
    """The fused update (one kernel per parameter) against torch's per-tensor loop: the same formula, so the
    parameters agree to float32 rounding after several steps. A regression whose gradients stay far from 0:
    Adam's m / sqrt(v) turns rounding-level differences of a near-zero gradient into whole steps."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    cfg = OptimizerConfig(name=name, lr=1e-3, weight_decay=0.05)
    fused = build_optimizer(nets[0], cfg)
    assert all(g["fused"] for g in fused.param_groups)
    loop = type(fused)(param_groups(nets[1], cfg), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=False)
    x, y = torch.randn(64, 8), torch.randn(64, 1) + 3
    for _ in range(5):
        for net, opt in zip(nets, (fused, loop)):
            (net(x) - y).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
