"""The README's main job: the toy config trains from scratch and reaches its quality bar (slow: minutes)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _train_toy(config: str, tmp_path: Path) -> dict:
    """Run ``tools/train.py configs/<config>.py`` with its data under ``tmp_path``; the final metrics."""
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / f"{config}.py"),
           "--work-dir", str(tmp_path), "--cfg-options", f"data.root={tmp_path / 'data'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
def test_segmentation_toy_reaches_miou(tmp_path):
    metrics = _train_toy("segformer_pvt_b0_toy", tmp_path)
    assert metrics["iteration"] == 150
    assert metrics["mIoU"] >= 0.60, metrics


@pytest.mark.slow
def test_depth_toy_reaches_its_bar(tmp_path):
    metrics = _train_toy("glpn_pvt_b0_toy", tmp_path)
    assert metrics["abs_rel"] <= 0.15 and metrics["d1"] >= 0.80, metrics


@pytest.mark.slow
def test_classification_toy_reaches_top1(tmp_path):
    metrics = _train_toy("classifier_pvt_b0_toy", tmp_path)
    assert metrics["iteration"] == 250
    assert metrics["top1"] >= 0.85, metrics
