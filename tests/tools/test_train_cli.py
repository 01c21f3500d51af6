"""tools/train.py, tools/test.py and tools/infer.py end to end on a tiny toy run, and their error messages."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "segformer_pvt_b0_toy.py"
ADE = ROOT / "configs" / "segformer_pvt_b2_ade.py"


def _tool(name, *args, cwd=None):
    cmd = [sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def _tiny(tmp_path):
    return [
        f"data.root={tmp_path / 'data'}", "data.num_train=16", "data.num_val=4", "data.size=(64, 64)", "data.crop=64",
        "data.scale=(128, 64)", "data.test_scale=(256, 64)", "data.batch_size=2", "data.num_workers=0",
        "schedule.max_iters=4", "schedule.eval_interval=2", "schedule.checkpoint_interval=2", "schedule.warmup_iters=0",
    ]


def test_toy_train_test_infer(tmp_path):
    work = tmp_path / "work"
    result = _tool("train", TOY, "--work-dir", work, "--cfg-options", *_tiny(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mIoU" in result.stdout and "triangle" in result.stdout  # the per-class table
    for name in ("config.json", "log.jsonl", "curves.png", "last.pth", "best.pth", "metrics.json"):
        assert (work / name).is_file(), name
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and 0.0 <= metrics["mIoU"] <= 1.0 and len(metrics["IoU"]) == 4
    assert json.loads((work / "config.json").read_text())["schedule"]["max_iters"] == 4

    resumed = _tool("train", TOY, "--work-dir", work, "--resume", "--cfg-options", *_tiny(tmp_path)[:-4],
                    "schedule.max_iters=6", "schedule.eval_interval=2", "schedule.checkpoint_interval=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((work / "metrics.json").read_text())["iteration"] == 6

    tested = _tool("test", TOY, work / "best.pth", "--work-dir", work, "--cfg-options", *_tiny(tmp_path))
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert "mIoU" in tested.stdout and (work / "test_metrics.json").is_file()

    image = next((tmp_path / "data").rglob("ADE_val_00000001.jpg"))
    inferred = _tool("infer", work / "best.pth", image, "--out", tmp_path / "pred", "--scale", 256, 64)
    assert inferred.returncode == 0, inferred.stderr[-2000:]
    assert (tmp_path / "pred" / "ADE_val_00000001.png").is_file()


@pytest.mark.parametrize(
    "options, message",
    [
        (["schedule.max_iter=5"], "unknown key 'schedule.max_iter'; valid keys at schedule: max_iters"),
        (["schedule.max_iters=many"], "schedule.max_iters expects int, got 'many'"),
        (["model.backbone_weights=None", "data.root=/nonexistent/ade"],
         "expected the folder /nonexistent/ade/images/training.*segformer_pvt_b0_toy.py"),
        (["data.root=/nonexistent/ade", "data.batch_size=0"], "data.batch_size must be an int >= 1, got 0"),
    ],
)
def test_config_errors_are_one_message(options, message, tmp_path):
    result = _tool("train", ADE, "--work-dir", tmp_path, "--cfg-options", *options)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert re.search(message, result.stderr), result.stderr


def test_resume_without_checkpoint(tmp_path):
    result = _tool("train", TOY, "--work-dir", tmp_path, "--resume")
    assert result.returncode == 2 and f"no checkpoint at {tmp_path / 'last.pth'}" in result.stderr
