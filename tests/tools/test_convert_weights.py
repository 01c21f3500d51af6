"""tools/convert_weights.py refuses wrong architectures (foreign formats: test_convert_weights_parity.py)."""
import torch

from backbones import build_backbone
from tests.utils import run_tool


def test_wrong_architecture_is_one_clear_error(tmp_path):
    torch.save(build_backbone("mit_b0").state_dict(), tmp_path / "mit.pth")
    result = run_tool("convert_weights.py", "pvt_v2_b0", tmp_path / "mit.pth", tmp_path / "out.pth")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot load") and "these weights fit mit_b0" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.pth").exists()
