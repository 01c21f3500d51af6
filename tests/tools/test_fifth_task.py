"""Adding a task is one package: ``tests/tasks/fifth_task`` (defined here, registered through the registry API,
named nowhere in the shared code) runs through tools/train.py, test.py, infer.py and export.py."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tasks import list_tasks
from tests.tasks.fifth_task.task import Discs

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "tasks" / "fifth_task" / "config.py"


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # The task package lives in tests/, which is not installed: the tools find it as a user's own package would
    # be found, on PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, args)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, f"{tool}: {result.stderr[-2000:]}"
    return result


def test_the_fifth_task_is_registered_by_its_package_alone():
    assert "foreground" in list_tasks()
    assert "foreground" not in (ROOT / "tasks" / "__init__.py").read_text()


def test_the_fifth_task_through_every_tool(tmp_path):
    _run("train", CONFIG, "--work-dir", tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and 0 <= metrics["IoU"] <= 1
    meta = __import__("torch").load(tmp_path / "best.pth", weights_only=True)["meta"]
    assert meta["task"] == "foreground" and meta["module"] == "tests.tasks.fifth_task.model"

    out = _run("test", CONFIG, tmp_path / "best.pth", "--work-dir", tmp_path)
    assert json.loads((tmp_path / "test_metrics.json").read_text())["IoU"] == pytest.approx(metrics["IoU"])
    assert "IoU" in out.stdout and "note:" not in out.stdout

    # A config whose data section disagrees with the checkpoint: one line says so, the checkpoint's is used.
    out = _run("test", CONFIG, tmp_path / "best.pth", "--work-dir", tmp_path / "other", "--cfg-options",
               "data.mean=(0.1,0.2,0.3)")
    notes = [line for line in out.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "mean=[0.1, 0.2, 0.3] (checkpoint: [0.5, 0.5, 0.5])" in notes[0], out.stdout
    assert json.loads((tmp_path / "other" / "test_metrics.json").read_text())["IoU"] == pytest.approx(metrics["IoU"])

    image = tmp_path / "disc.png"
    cv2.imwrite(str(image), Discs(1, 64, 7).read(0)["image"][:, :, ::-1])
    _run("infer", tmp_path / "best.pth", image, "--flip", "--out", tmp_path / "pred")  # the task from the checkpoint
    assert (tmp_path / "pred" / "disc.png").is_file()

    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnxscript")):
        pytest.skip("the export extra is not installed")
    out = _run("export", tmp_path / "best.pth", tmp_path / "fg.onnx", "--height", 96, "--width", 96)
    assert "foreground -> logits" in out.stdout
    _run("infer", "--onnx", tmp_path / "fg.onnx", image, "--out", tmp_path / "pred_onnx")
    assert (tmp_path / "pred_onnx" / "disc.png").is_file()
