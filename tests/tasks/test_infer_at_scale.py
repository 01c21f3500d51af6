"""tools/infer.py at scale: a machine-readable result per image in the datasets' formats plus an index, images
whose result exists skipped (a killed run continues), any per-image failure one line, large images predicted
scaled down with the prediction scaled back, and the images shared out over torchrun processes (gloo, CPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks.infer import infer_images, write_index
from tasks.infer_results import DEPTH_UNITS, predict_bounded, result_of
from tests.tasks.test_predict_and_infer import ROOT, _image, _models
from tests.utils import perturb


def _inputs(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:012d}.png" for i in range(count)]  # COCO-style names: the image_id is the number
    for i, p in enumerate(paths):
        cv2.imwrite(str(p), _image(64 + 8 * i, 80, seed=i))
    return paths


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("task", ["segmentation", "depth", "detection"])
def test_results_in_the_datasets_formats_and_an_index(tmp_path, task):
    model = perturb(_models()[task])
    paths = _inputs(tmp_path / "in")
    written, failures = infer_images(model, paths, tmp_path / "out")
    assert not failures and len(written) == 3
    counts = write_index(tmp_path / "out", paths)
    assert counts == {"images": 3, "done": 3, "missing": 0, "detections": counts["detections"]}
    index = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert [r["image"] for r in index] == [str(p) for p in paths]
    image = cv2.cvtColor(cv2.imread(str(paths[1])), cv2.COLOR_BGR2RGB)
    expected = model.predict(image)
    if task == "segmentation":  # class indices, uint8
        labels = _read(tmp_path / "out" / index[1]["result"])
        assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    elif task == "depth":  # uint16 millimetres (NYU's format); rounding: half a millimetre
        depth = _read(tmp_path / "out" / index[1]["result"])
        assert depth.dtype == np.uint16 and np.abs(depth / DEPTH_UNITS - expected).max() <= 0.5 / DEPTH_UNITS + 1e-6
    else:  # COCO result lines: image_id from the file name, xywh boxes, category ids = our class indices
        lines = [json.loads(x) for x in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
        mine = [x for x in lines if x["image_id"] == 1]
        assert len(lines) == counts["detections"] == sum(r["detections"] for r in index)
        x0, y0, x1, y1 = expected["boxes"][0].tolist()
        assert mine[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-4)
        assert mine[0]["category_id"] == int(expected["labels"][0]) and "result" not in index[1]


def test_panoptic_and_classification_results():
    panoptic = {"panoptic": np.array([[0, 1], [300, 70000]], np.int32),
                "segments": [{"id": np.int64(300), "category_id": 7, "isthing": True, "score": np.float32(0.5)}]}
    result = result_of(panoptic, "x", None)
    ids = result.png.astype(np.int64) @ np.array([1, 256, 65536])  # COCO panoptic: R + 256 G + 256^2 B
    assert np.array_equal(ids, panoptic["panoptic"]) and result.record["segments_info"][0]["id"] == 300
    json.dumps(result.record)  # numpy scalars made plain
    probs = np.array([0.1, 0.6, 0.3], np.float32)
    top = result_of(probs, "x", ("cat", "dog", "eel")).record["top5"]
    assert [t[:2] for t in top] == [[1, "dog"], [2, "eel"], [0, "cat"]]


def test_a_killed_run_continues_where_it_stopped(tmp_path):
    model = perturb(_models()["segmentation"])
    paths = _inputs(tmp_path / "in", 4)
    infer_images(model, paths, tmp_path / "out")
    (tmp_path / "out" / "results" / f"{paths[2].stem}.json").unlink()  # as if killed before its result was done
    calls = []
    original = model.predict
    model.predict = lambda image, **kw: calls.append(image.shape) or original(image, **kw)
    written, failures = infer_images(model, paths, tmp_path / "out")
    assert [p.name for p in written] == [f"{paths[2].stem}.png"] and len(calls) == 1 and not failures
    assert write_index(tmp_path / "out", paths)["done"] == 4


def test_any_per_image_failure_is_one_line_and_the_rest_go_on(tmp_path):
    model = perturb(_models()["depth"])
    paths = _inputs(tmp_path / "in", 3)
    original = model.predict

    def predict(image, **kw):
        if image.shape[0] == 72:  # the second image
            raise RuntimeError("CUDA out of memory.\nTried to allocate 6.40 GiB")
        return original(image, **kw)

    model.predict = predict
    lines = []
    written, failures = infer_images(model, paths, tmp_path / "out", on_failure=lines.append)
    assert len(written) == 2 and failures == lines and len(failures) == 1
    assert failures[0] == f"{paths[1]}: RuntimeError: CUDA out of memory. Tried to allocate 6.40 GiB"
    write_index(tmp_path / "out", paths, failures)
    assert (tmp_path / "out" / "failures.txt").read_text() == failures[0] + "\n"


def test_large_images_are_predicted_scaled_down_and_scaled_back(tmp_path):
    model = perturb(_models()["segmentation"])
    seen = []
    original = model.predict
    model.predict = lambda image, **kw: seen.append(image.shape[:2]) or original(image, **kw)
    image = _image(300, 500)
    labels = predict_bounded(model, image, {}, max_pixels=100 * 150)
    assert seen[-1][0] * seen[-1][1] <= 100 * 150 and labels.shape == (300, 500)
    assert np.array_equal(np.unique(labels), np.unique(original(cv2.resize(image, seen[-1][::-1], interpolation=cv2.INTER_AREA))))
    detector = perturb(_models()["detection"])
    small = detector.predict(cv2.resize(image, (250, 150), interpolation=cv2.INTER_AREA))
    boxes = predict_bounded(detector, image, {}, max_pixels=250 * 150)["boxes"]
    assert torch.allclose(boxes, small["boxes"] * 2, atol=1e-4)  # 500 x 300 from 250 x 150
    assert predict_bounded(model, _image(64, 80), {}, max_pixels=64 * 80).shape == (64, 80)  # at the bound: as is


def _checkpoint(model, path: Path) -> Path:
    torch.save({"model": model.state_dict(), "meta": {"task": model.task, "model": model.config}}, path)
    return path


def test_torchrun_shares_the_images_over_two_processes(tmp_path):
    paths = _inputs(tmp_path / "in", 5)
    (tmp_path / "list.txt").write_text("# five images\n" + "".join(f"in/{p.name}\n" for p in paths) + "in/missing.png\n")
    ckpt = _checkpoint(perturb(_models()["segmentation"]), tmp_path / "m.pth")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tools" / "infer.py"), str(ckpt), str(tmp_path / "list.txt"), "--out", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.png does not exist" in errors[0] and "Traceback" not in result.stderr
    printed = sorted(Path(line).name for line in result.stdout.split())
    assert printed == sorted(f"{p.stem}.png" for p in paths)  # each image once, over both processes
    index = [json.loads(x) for x in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in index] == [p.name for p in paths]
    assert "missing.png" in (tmp_path / "out" / "failures.txt").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)  # all done: all skipped
    assert again.returncode == 0 and again.stdout.split() == [], again.stderr[-3000:]
