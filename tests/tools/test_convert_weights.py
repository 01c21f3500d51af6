"""tools/convert_weights.py writes weights in our format from a foreign one, and refuses wrong architectures."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones import build_backbone
from tests.utils import perturb

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_weights.py"
timm = pytest.importorskip("timm")


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_timm_to_ours(tmp_path):
    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False))
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    result = _run("pvt_v2_b0", tmp_path / "timm.pth", tmp_path / "ours.safetensors")
    assert result.returncode == 0, result.stderr
    assert "key format: timm" in result.stderr and "head.bias, head.weight" in result.stderr
    model = build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights=tmp_path / "ours.safetensors").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        for a, b in zip(model(x).values(), expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_wrong_architecture_is_one_clear_error(tmp_path):
    torch.save(build_backbone("mit_b0").state_dict(), tmp_path / "mit.pth")
    result = _run("pvt_v2_b0", tmp_path / "mit.pth", tmp_path / "out.pth")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot load") and "these weights fit mit_b0" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.pth").exists()
