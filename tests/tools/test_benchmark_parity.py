"""tools/benchmark.py keeps working: the quick smoke mode of each suite runs and its outputs agree (for
`train`: losses, input gradients and gradient norms of ours and Hugging Face)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("timm")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"


@pytest.mark.parametrize("suite", ["backbone", "segformer", "glpn", "detr", "msda", "train", "classifier"])
def test_quick_suite(suite):
    result = subprocess.run([sys.executable, str(TOOL), suite, "--quick"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all outputs agree" in result.stdout and "OK" in result.stdout
