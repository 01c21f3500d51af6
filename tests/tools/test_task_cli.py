"""Depth and detection through tools/train.py and tools/test.py on tiny toy runs (the pipelines, not quality)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.num_train=16", "data.num_val=4", "data.num_workers=0", "schedule.max_iters=3", "schedule.eval_interval=3",
        "schedule.checkpoint_interval=3", "schedule.warmup_iters=0"]


@pytest.mark.parametrize("config, metric", [  # detection also trains and tests in test_custom_coco.py
    ("glpn_pvt_b0_toy", "abs_rel"), pytest.param("deformable_detr_pvt_b0_toy", "AP50", marks=pytest.mark.slow)])
def test_train_and_test(config, metric, tmp_path):
    options = [f"data.root={tmp_path / 'data'}", *TINY]
    train = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / f"{config}.py"),
             "--work-dir", str(tmp_path), "--cfg-options", *options]
    result = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 3 and metric in metrics
    test = [sys.executable, str(ROOT / "tools" / "test.py"), str(ROOT / "configs" / f"{config}.py"),
            str(tmp_path / "best.pth"), "--work-dir", str(tmp_path), "--cfg-options", *options]
    result = subprocess.run(test, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "test_metrics.json").read_text())[metric] == pytest.approx(metrics[metric])
    image = next(p for p in (tmp_path / "data").rglob("*.jpg") if "val" in str(p) or "test" in str(p))
    infer = [sys.executable, str(ROOT / "tools" / "infer.py"), str(tmp_path / "best.pth"), str(image),
             "--out", str(tmp_path / "pred")]
    result = subprocess.run(infer, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "pred" / f"{image.stem}.png").is_file()
