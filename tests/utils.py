"""Helpers shared by the tests."""
import torch


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every parameter (and BN statistic) so that no weight keeps a trivial init (LN = 1/0)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return module.eval()


def assert_features_close(ours: dict, reference, atol: float = 1e-4) -> None:
    """``ours``: {stage name: tensor}; ``reference``: the 4 stage tensors in order."""
    assert list(ours) == ["stage1", "stage2", "stage3", "stage4"]
    for (name, a), b in zip(ours.items(), reference):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        err = (a - b).abs().max().item()
        assert err <= atol, f"{name}: max abs diff {err:.3g} > {atol}"
