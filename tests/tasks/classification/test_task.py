"""The classification task through tools/train.py and tools/test.py on a tiny toy run (the pipeline, not quality):
checkpoints carry the class names and preprocessing, test.py prints top-1/top-5 and, on request, every class."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks import get_task, load_pretrained
from tasks.classification import ImageClassifier
from tasks.classification.toy import TOY_CLASSES
from tasks.common.config import apply_options, load_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "classifier_pvt_b0_toy.py"
TINY = ["data.num_train=2", "data.num_val=2", "data.size=(40,40)", "data.input_size=32", "data.num_workers=0",
        "data.batch_size=4", "schedule.max_iters=3", "schedule.eval_interval=3", "schedule.checkpoint_interval=3",
        "schedule.warmup_iters=0"]


def _run(script, *args):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / script), *map(str, args)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_train_test_and_load(tmp_path):
    options = [f"data.root={tmp_path / 'data'}", *TINY]
    _run("train.py", CONFIG, "--work-dir", tmp_path, "--cfg-options", *options)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 3 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    out = _run("test.py", CONFIG, tmp_path / "best.pth", "--work-dir", tmp_path, "--cfg-options", *options,
               "data.per_class=True")
    tested = json.loads((tmp_path / "test_metrics.json").read_text())
    assert tested["top1"] == pytest.approx(metrics["top1"]) and len(tested["per_class"]) == len(TOY_CLASSES)
    assert "top-1" in out and "top-5" in out and all(name in out for name in TOY_CLASSES)
    model = load_pretrained(tmp_path / "best.pth")  # the checkpoint alone is enough
    assert isinstance(model, ImageClassifier) and model.class_names == tuple(sorted(TOY_CLASSES))
    assert model.preprocessing.resize == "short_side_crop" and model.preprocessing.size == (36, 32)  # 32 / 0.875


def test_task_checks_the_config(tmp_path):
    cfg = apply_options(load_config(CONFIG), [f"data.root={tmp_path / 'data'}", *TINY, "model.num_classes=5"])
    task = get_task(cfg)
    with pytest.raises(ValueError, match="num_classes is 5 but the dataset has 6 classes"):
        task.build_model()
    cfg.model.num_classes = 6
    model = task.build_model()
    task.cfg.data.input_size = 16
    with pytest.raises(ValueError, match="data.input_size must be >= 32"):
        task.validate(model)


def test_loss_on_a_mixed_batch(tmp_path):
    cfg = apply_options(load_config(CONFIG), [f"data.root={tmp_path / 'data'}", *TINY, "data.mixup_alpha=0.8",
                                              "data.cutmix_alpha=1.0"])
    task = get_task(cfg)
    dataset = task.train_dataset()
    batch = task.collate([dataset[(i, (0, 0, i))] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 6)
    losses = task.loss(task.build_model(), batch, torch.device("cpu"))
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
