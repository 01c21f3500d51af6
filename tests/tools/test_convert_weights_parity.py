"""tools/convert_weights.py writes weights in our format from timm's."""
import pytest
import torch

from backbones import build_backbone
from tests.utils import perturb, run_tool

timm = pytest.importorskip("timm")


def test_timm_to_ours(tmp_path):
    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False))
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    result = run_tool("convert_weights.py", "pvt_v2_b0", tmp_path / "timm.pth", tmp_path / "ours.safetensors")
    assert result.returncode == 0, result.stderr
    assert "key format: timm" in result.stderr and "head.bias, head.weight" in result.stderr
    model = build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights=tmp_path / "ours.safetensors").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        for a, b in zip(model(x).values(), expected):
            # the same weights through the same layers (timm and ours differ only in memory layout): ~1e-6
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
