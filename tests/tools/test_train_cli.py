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

    _bad_reruns_and_checkpoints(tmp_path, work)

    image = next((tmp_path / "data").rglob("ADE_val_00000001.jpg"))
    inferred = _tool("infer", work / "best.pth", image, "--out", tmp_path / "pred")
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


def _one_error_line(result, code=2):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def _bad_reruns_and_checkpoints(tmp_path, work):
    """After a finished run: training again, resuming from the wrong file or with another model, and testing
    a damaged checkpoint each give one line and change nothing."""
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    again = _tool("train", TOY, "--work-dir", work, "--cfg-options", *_tiny(tmp_path))
    assert "already holds a run" in _one_error_line(again) and "--resume" in again.stderr and "--restart" in again.stderr
    weights_only = _tool("train", TOY, "--work-dir", work, "--resume", work / "best.pth", "--cfg-options", *_tiny(tmp_path))
    assert "holds model weights only" in _one_error_line(weights_only)
    changed = _tool("train", TOY, "--work-dir", work, "--resume", "--cfg-options", *_tiny(tmp_path), "model.decoder_dim=32")
    line = _one_error_line(changed)
    assert "the model differs from the checkpoint's" in line and "model.decoder_dim" in line and "head." in line
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((work / "last.pth").read_bytes()[:4096])
    resumed = _tool("train", TOY, "--work-dir", work, "--resume", truncated, "--cfg-options", *_tiny(tmp_path))
    assert f"cannot resume: {truncated} is not a readable checkpoint" in _one_error_line(resumed)
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 64)
    for bad in (truncated, noise, tmp_path / "missing.pth"):
        tested = _tool("test", TOY, bad, "--work-dir", tmp_path / "t", "--cfg-options", *_tiny(tmp_path))
        assert str(bad) in _one_error_line(tested)


@pytest.mark.parametrize(
    "source, message",
    [
        ("config = Config(task='segmentation',\n", r"bad.py, line 1: .*never closed"),
        ("from tasks.common.nothing import Config\n", r"bad.py, line 1: ModuleNotFoundError: No module named 'tasks.common.nothing'"),
        ("import os\nconfig = undefined_name\n", r"bad.py, line 2: NameError: name 'undefined_name' is not defined"),
    ],
)
def test_broken_config_files_are_one_line_with_file_and_line(source, message, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    for tool in ("train", "test"):
        args = (bad, tmp_path / "x.pth") if tool == "test" else (bad,)
        assert re.search(message, _one_error_line(_tool(tool, *args, "--work-dir", tmp_path / "w"))), tool


@pytest.mark.parametrize("tool, extra", [("train", []), ("test", ["best.pth"]), ("check_data", [])])
def test_task_name_typo_names_the_line(tool, extra, tmp_path):
    """Every tool starts the same way (tasks.common.cli): a misspelt task is the same one line in each."""
    typo = tmp_path / "typo.py"
    typo.write_text(TOY.read_text().replace('task="segmentation"', 'task="segmentaton"'))
    assert 'task="segmentaton"' in typo.read_text()
    work = ["--work-dir", str(tmp_path / "w")] if tool != "check_data" else []
    line = _one_error_line(_tool(tool, typo, *extra, *work))
    assert re.search(rf"{typo}, line \d+: unknown task 'segmentaton'; available: .*segmentation", line)


def test_crop_below_the_backbone_minimum_names_data_crop(tmp_path):
    result = _tool("train", TOY, "--work-dir", tmp_path / "w", "--cfg-options", *_tiny(tmp_path), "data.crop=16")
    assert "data.crop=16: pvt_v2_b0 needs inputs of at least 32 px per side" in _one_error_line(result)
    assert not (tmp_path / "w" / "log.jsonl").exists()


def test_max_iters_on_an_epoch_recipe_names_both(tmp_path):
    config = ROOT / "configs" / "glpn_pvt_b4_nyu.py"
    result = _tool("train", config, "--work-dir", tmp_path, "--cfg-options", "schedule.max_iters=10")
    assert "schedule.max_iters=10 and schedule.epochs=25 are both set" in _one_error_line(result)
