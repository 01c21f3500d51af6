"""tools/benchmark.py keeps working: the quick smoke mode of each suite runs and its outputs agree (for
`train`: losses, input gradients and gradient norms of ours and Hugging Face)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("timm")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"


@pytest.mark.parametrize("suite", ["backbone", "segformer", "glpn", "msda", "classifier", *(
    pytest.param(s, marks=pytest.mark.slow) for s in ("detr", "train", "inference"))])  # the long ones: -m slow
def test_quick_suite(suite):
    result = subprocess.run([sys.executable, str(TOOL), suite, "--quick"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all outputs agree" in result.stdout and "OK" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["train", "inference"])
def test_quick_suite_bf16(suite):
    result = subprocess.run([sys.executable, str(TOOL), suite, "--quick", "--amp", "bf16"], capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bf16 autocast on both sides" in result.stdout and "MISMATCH" not in result.stdout


def test_amp_only_where_supported():
    result = subprocess.run([sys.executable, str(TOOL), "msda", "--amp", "bf16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--amp is supported by train, inference, not msda" in result.stderr
