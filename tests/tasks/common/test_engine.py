"""The engine never loses work: exact resume, atomic checkpoints, signals, non-finite losses, torchrun."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.common import checkpoint
from tasks.common.config import ConfigError
from tasks.common.engine import NonFiniteLoss, evaluate_checkpoint, fit
from tests.tasks.common.fake_task import FakeTask, fake_config

SCRIPT = Path(__file__).with_name("fake_task.py")
ROOT = Path(__file__).resolve().parents[3]


def _run(*args, wait=True, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)


def _weights(path):
    return checkpoint.load(path)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fit_writes_its_outputs(tmp_path):
    cfg = fake_config(8)
    result = fit(FakeTask(cfg), cfg, tmp_path)
    assert result["iteration"] == 8 and result["stopped"] is None
    for name in ("config.json", "log.jsonl", "curves.png", "last.pth", "best.pth", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["mode"] == "val"] == [4, 8]
    assert all({"lr", "loss", "loss_mse"} <= set(r) for r in records if r["mode"] == "train")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 8 and metrics["mae"] == result["metrics"]["mae"]
    best = checkpoint.load(tmp_path / "best.pth")
    assert best["best"]["metric"] == "mae" and best["meta"]["model"] == {"width": 8}
    # tools/test.py's path: evaluating the last checkpoint gives the metrics of the final evaluation
    assert evaluate_checkpoint(FakeTask(cfg), cfg, tmp_path / "last.pth", tmp_path)["mae"] == pytest.approx(metrics["mae"], abs=1e-12)


def test_resume_is_exact_with_grad_accumulation(tmp_path):
    cfg = fake_config(10, grad_accum=2, clip_grad=1.0)
    fit(FakeTask(cfg), cfg, tmp_path / "straight")
    cfg.model.crash_at = 15  # the first micro-batch of iteration 8; the last checkpoint is at 6
    with pytest.raises(SystemExit):
        fit(FakeTask(cfg), cfg, tmp_path / "resumed")
    assert checkpoint.load(tmp_path / "resumed" / "last.pth")["iteration"] == 6
    cfg.model.crash_at = -1
    fit(FakeTask(cfg), cfg, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pth")
    _assert_same_weights(_weights(tmp_path / "straight" / "last.pth"), _weights(tmp_path / "resumed" / "last.pth"))


def test_kill_9_and_resume_gives_the_same_weights(tmp_path):
    assert _run(tmp_path / "straight", 12).returncode == 0
    proc = _run(tmp_path / "killed", 12, "model.sleep=0.3", wait=False)
    last = tmp_path / "killed" / "last.pth"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline:  # wait for the first checkpoint, then kill at once
        time.sleep(0.02)
    time.sleep(0.4)
    proc.kill()
    proc.wait()
    assert checkpoint.load(last)["iteration"] < 12
    resumed = _run(tmp_path / "killed", 12, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(_weights(tmp_path / "straight" / "last.pth"), _weights(last))


def test_sigterm_saves_and_stops_cleanly(tmp_path):
    proc = _run(tmp_path, 40, "model.sleep=0.2", wait=False)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.is_file() or log.read_text().count('"train"') < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert 2 <= checkpoint.load(tmp_path / "last.pth")["iteration"] < 40


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    checkpoint.save_atomic({"iteration": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. killed in the middle of torch.save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"iteration": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["iteration"] == 1


def test_non_finite_loss_stops_with_the_iteration(tmp_path):
    cfg = fake_config(12)
    cfg.model.nan_at = 7
    with pytest.raises(NonFiniteLoss, match="non-finite loss at iteration 8"):
        fit(FakeTask(cfg), cfg, tmp_path)
    assert checkpoint.load(tmp_path / "last.pth")["iteration"] == 6  # the last good checkpoint is kept


def test_bad_config_values_are_config_errors(tmp_path):
    cfg = fake_config(4)
    cfg.optimizer.name = "lamb"
    with pytest.raises(ConfigError, match="optimizer.name"):
        fit(FakeTask(cfg), cfg, tmp_path)
    cfg = fake_config(4)
    cfg.runtime.amp = "fp16"
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        fit(FakeTask(cfg), cfg, tmp_path)


def test_bf16_autocast_on_cpu(tmp_path):
    cfg = fake_config(4)
    cfg.runtime.amp = "bf16"
    assert fit(FakeTask(cfg), cfg, tmp_path)["iteration"] == 4


def test_torchrun_two_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), str(tmp_path), "8"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    start = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    distributed = json.loads((tmp_path / "metrics.json").read_text())
    assert distributed["count"] == 24  # every validation sample once, across both ranks
    single = evaluate_checkpoint(FakeTask(fake_config(8)), fake_config(8), tmp_path / "last.pth", tmp_path / "single")
    assert single["mae"] == pytest.approx(distributed["mae"], rel=1e-6)


def test_epoch_schedule_is_computed_from_the_dataset(tmp_path):
    cfg = fake_config(None, epochs=3, epoch_milestones=(2,), policy="step")
    cfg.data.size, cfg.data.batch_size = 40, 4  # 10 iterations per epoch
    result = fit(FakeTask(cfg), cfg, tmp_path)
    assert result["iteration"] == 30 and cfg.schedule.max_iters is None  # resolved on fit's own copy
    resolved = json.loads((tmp_path / "config.json").read_text())["schedule"]
    assert resolved["max_iters"] == 30 and resolved["milestones"] == [20]


def test_max_iters_with_epochs_is_an_error_naming_both(tmp_path):
    cfg = fake_config(10, epochs=3)
    with pytest.raises(ConfigError, match="schedule.max_iters=10 and schedule.epochs=3 are both set"):
        fit(FakeTask(cfg), cfg, tmp_path)
    cfg = fake_config(10, epoch_milestones=(2,))
    with pytest.raises(ConfigError, match="schedule.epoch_milestones=.2,. needs schedule.epochs"):
        fit(FakeTask(cfg), cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written
