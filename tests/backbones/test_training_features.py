"""Training-time behaviour: gradients, stochastic depth, frozen stages, activation checkpointing."""
import pytest
import torch

from backbones import build_backbone
from tests.utils import perturb

ALL = (0, 1, 2, 3)


def _loss(out: dict) -> torch.Tensor:
    return sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in out.values())


def test_training_forward_equals_inference_and_gradients_flow():
    for name in ("pvt_v2_b0", "pvt_v2_b2_li"):
        model = perturb(build_backbone(name, out_indices=ALL, depths=[1, 1, 1, 1]))
        x = torch.randn(2, 3, 64, 80)
        with torch.inference_mode():  # the in-place activation path
            expected = model(x)
        model.train()
        out = model(x)
        for a, b in zip(out.values(), expected.values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        _loss(out).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_gradient_matches_finite_differences_in_double():
    small = dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 2, 2, 4], mlp_ratios=[2] * 4)
    model = build_backbone("pvt_v2_b0", out_indices=ALL, linear_attention=True, **small).double()
    x = torch.randn(1, 3, 32, 36, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _loss(model(t)), (x,), eps=1e-6, atol=1e-4, fast_mode=True)


def test_drop_path_is_stochastic_in_training_only():
    model = build_backbone("pvt_v2_b0", drop_path_rate=0.5)
    blocks = [b for s in ("stage1", "stage2", "stage3", "stage4") for b in getattr(model, s).blocks]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates == torch.linspace(0, 0.5, 8).tolist()  # one linear schedule over all blocks
    x = torch.randn(4, 3, 64, 64)
    model.train()
    assert not torch.equal(model(x)["stage4"], model(x)["stage4"])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["stage4"], model(x)["stage4"])


def test_frozen_stages():
    model = build_backbone("pvt_v2_b0", frozen_stages=2, drop_path_rate=0.3).train()
    for stage, frozen in [("stage1", True), ("stage2", True), ("stage3", False), ("stage4", False)]:
        module = getattr(model, stage)
        assert all(p.requires_grad != frozen for p in module.parameters()), stage
        assert module.training != frozen, stage
    resnet = build_backbone("resnet50", frozen_stages=1, norm_layer="frozen_bn").train()
    assert not any(p.requires_grad for p in resnet.stem.parameters())
    assert not any(p.requires_grad for p in resnet.stage1.parameters())
    assert all(p.requires_grad for p in resnet.stage2.parameters())


def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_backbone("pvt_v2_b0", out_indices=ALL, grad_checkpointing=ckpt).train()
        _loss(model(x)).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_layer", ["bn", "frozen_bn"])
def test_resnet_checkpointing_gives_the_same_gradients_and_statistics(norm_layer):
    """Recomputed bottlenecks: the same gradients, bit for bit, and training batch norms update their running
    statistics once (the recomputation must not move them again)."""
    x = torch.randn(2, 3, 32, 32)  # the smallest input; batch 2 for BN at stride 32
    runs = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_backbone("resnet50", out_indices=ALL, norm_layer=norm_layer, grad_checkpointing=ckpt).train()
        _loss(model(x)).backward()
        runs.append(({n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())))
    (grads, buffers), (grads_ckpt, buffers_ckpt) = runs
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        assert torch.equal(grads[name], grads_ckpt[name]), name
    for name in buffers:
        assert torch.equal(buffers[name], buffers_ckpt[name]), name
