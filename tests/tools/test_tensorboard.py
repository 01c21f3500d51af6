"""runtime.loggers=("tensorboard",): a toy run leaves event files that TensorBoard's own reader reads, with every
loss term, the learning rate, the validation metrics and prediction pictures; a resumed run continues the curves."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "segformer_pvt_b0_toy.py"


def _train(tmp_path, *args):
    options = [f"data.root={tmp_path / 'data'}", "data.num_train=8", "data.num_val=2", "data.size=(64, 64)",
               "data.crop=64", "data.scale=(128, 64)", "data.test_scale=(256, 64)", "data.batch_size=2",
               "data.num_workers=0", "schedule.eval_interval=2", "schedule.checkpoint_interval=2",
               "schedule.warmup_iters=0", "schedule.log_interval=1", "model.backbone_weights=None",
               "runtime.loggers=('tensorboard',)"]
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(TOY), "--work-dir", str(tmp_path / "work"), *map(str, args[:-1]),
           "--cfg-options", *options, args[-1]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _read(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_scalars_images_and_resumed_curves(tmp_path):
    import shutil

    result = _train(tmp_path, "schedule.max_iters=2")
    assert result.returncode == 0, result.stderr[-2000:]
    shutil.copy(tmp_path / "work" / "last.pth", tmp_path / "iter2.pth")
    result = _train(tmp_path, "--resume", "schedule.max_iters=4")
    assert result.returncode == 0, result.stderr[-2000:]
    events = _read(tmp_path / "work" / "tensorboard")
    tags = events.Tags()
    assert {"train/loss", "train/loss_ce", "train/lr", "val/mIoU", "val/mAcc", "val/aAcc"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val/mIoU")] == [2, 4]
    assert sorted(tags["images"]) == ["val_predictions/0", "val_predictions/1"]  # both validation images
    assert [(e.step, e.width > 64) for e in events.Images("val_predictions/1")] == [(2, True), (4, True)]  # tools/infer.py's picture

    # as after a kill at iteration 4 with the last checkpoint at 2: iterations 3 and 4 are done again
    resumed = _train(tmp_path, "--resume", tmp_path / "iter2.pth", "schedule.max_iters=6")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = _read(tmp_path / "work" / "tensorboard")
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]  # one curve, each step once
    assert [e.step for e in events.Scalars("val/mIoU")] == [2, 4, 6]


def test_an_unknown_logger_is_one_error_line(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(TOY), "--work-dir", str(tmp_path),
           "--cfg-options", "runtime.loggers=('wandb',)"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "error: runtime.loggers must be a tuple of 'tensorboard', got ('wandb',)\n"
