"""The segmentation task in the engine: an interrupted toy run resumed ends with the same weights."""
from pathlib import Path

import pytest
import torch

from tasks import get_task
from tasks.common import checkpoint
from tasks.common.config import apply_options, load_config
from tasks.common.engine import fit


class Crash(Exception):
    pass


def _cfg(tmp_path):
    cfg = load_config("configs/segformer_pvt_b0_toy.py")
    return apply_options(cfg, [
        f"data.root={tmp_path / 'data'}", "data.num_train=12", "data.num_val=3", "data.size=(64, 64)", "data.crop=64",
        "data.scale=(128, 64)", "data.test_scale=(256, 64)", "data.batch_size=2", "data.num_workers=2",
        "schedule.max_iters=6", "schedule.eval_interval=3", "schedule.checkpoint_interval=2", "schedule.warmup_iters=2",
        "model.dropout=0.1", "model.backbone_args={'drop_path_rate': 0.1}",  # randomness that must be restored too
    ])


def test_resumed_toy_run_is_bitwise_equal(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[3])  # the config's paths are relative to the repo
    cfg = _cfg(tmp_path)
    fit(get_task(cfg), cfg, tmp_path / "straight")

    task = get_task(cfg)
    calls = {"n": 0}
    loss = task.loss

    def crashing_loss(*args):
        calls["n"] += 1
        if calls["n"] == 6:  # iteration 6: the last checkpoint is at 4
            raise Crash
        return loss(*args)

    task.loss = crashing_loss
    with pytest.raises(Crash):
        fit(task, cfg, tmp_path / "resumed")
    assert checkpoint.load(tmp_path / "resumed" / "last.pth")["iteration"] == 4
    fit(get_task(cfg), cfg, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pth")

    a = checkpoint.load(tmp_path / "straight" / "last.pth")["model"]
    b = checkpoint.load(tmp_path / "resumed" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
