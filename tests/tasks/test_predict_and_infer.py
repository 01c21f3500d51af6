"""One prediction API for every task model (raw uint8 image in, result at its own size out), the dtype and
empty-batch rule at the boundary, load_pretrained / checkpoint_task, and tools/infer.py's loop (unique names,
bad images reported and skipped)."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks import checkpoint_task, get_task_spec, load_pretrained
from tasks.depth import GLPN
from tasks.detection import DeformableDETR
from tasks.infer import infer_images, output_names
from tasks.segmentation import SegFormer
from tests.utils import perturb

ROOT = Path(__file__).resolve().parents[2]
TINY_DETR = dict(num_queries=10, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=32,
                 backbone_args={"depths": (1, 1, 1, 1)})


def _models():
    return {
        "segmentation": SegFormer("mit_b0", num_classes=4, decoder_dim=32, class_names=["a", "b", "c", "d"]),
        "depth": GLPN("mit_b0", decoder_dim=16),
        "detection": DeformableDETR("pvt_v2_b0", num_classes=5, **TINY_DETR),
    }


def _image(h=70, w=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("task", ["segmentation", "depth", "detection"])
def test_predict_gives_the_image_size(task):
    model = perturb(_models()[task])
    model.train()
    out = model.predict(_image())
    assert model.training  # the training flag is restored
    if task == "segmentation":
        assert out.shape == (70, 90) and out.dtype == np.int64 and out.max() < 4
    elif task == "depth":
        assert out.shape == (70, 90) and out.dtype == np.float32 and (out > 0).all()
    else:
        assert set(out) == {"boxes", "scores", "labels"}
        centres = (out["boxes"][:, :2] + out["boxes"][:, 2:]) / 2  # sigmoid centres: inside the image's pixels
        assert len(centres) == 10 * 5 and (centres >= 0).all()
        assert (centres[:, 0] <= 90).all() and (centres[:, 1] <= 70).all() and (centres[:, 1] > 1).any()
    with pytest.raises(TypeError, match="HxWx3 uint8 RGB"):
        model.predict(_image().astype(np.float32))


@pytest.mark.parametrize("task", ["segmentation", "depth", "detection"])
def test_one_dtype_rule_and_empty_batches(task):
    model = _models()[task].eval()
    with pytest.raises(TypeError, match=r"the input is torch.float16 but the weights are torch.float32"):
        model(torch.randn(1, 3, 64, 64, dtype=torch.float16))
    with pytest.raises(TypeError, match="torch.float64"):
        model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="B >= 1|empty batch"):
        model(torch.randn(0, 3, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # autocast decides the dtypes
        model(torch.randn(1, 3, 128, 128, dtype=torch.bfloat16))


@pytest.mark.parametrize("task", ["segmentation", "depth", "detection"])
def test_checkpoint_alone_is_enough(task, tmp_path):
    """Our checkpoint keeps the preprocessing and class names: load_pretrained rebuilds the same predictor."""
    model = perturb(_models()[task])
    torch.save({"model": model.state_dict(), "meta": {"task": task, "model": model.config}}, tmp_path / "best.pth")
    assert checkpoint_task(tmp_path / "best.pth") == task
    loaded = load_pretrained(tmp_path / "best.pth")
    assert type(loaded) is get_task_spec(task).model and loaded.preprocessing == model.preprocessing
    assert loaded.class_names == model.class_names
    a, b = model.predict(_image()), loaded.predict(_image())
    if task == "detection":
        torch.testing.assert_close(a["boxes"], b["boxes"])
    else:
        np.testing.assert_array_equal(a, b)


def test_checkpoint_task_errors(tmp_path):
    (tmp_path / "bare.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bare.pth with torch.load"):
        checkpoint_task(tmp_path / "bare.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="not a checkpoint written by tools/train.py"):
        checkpoint_task(tmp_path / "weights.pth")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="'bert' model, which no task reads"):
        checkpoint_task(tmp_path / "folder")


def test_output_names_are_unique(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "b" / "y.png", tmp_path / "b" / "y.jpg",
             tmp_path / "z.jpg"]
    names = output_names(paths)
    assert names == ["a__x_jpg.png", "b__x_jpg.png", "b__y_png.png", "b__y_jpg.png", "z.png"]
    with pytest.raises(ValueError, match="more than once"):
        output_names([paths[0], paths[0]])


def _write_inputs(root: Path) -> list[Path]:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    paths = [root / "a" / "x.jpg", root / "b" / "x.jpg", root / "b" / "y.png"]
    for i, p in enumerate(paths):
        cv2.imwrite(str(p), _image(64 + 8 * i, 80, seed=i))
    bad = root / "b" / "broken.jpg"
    bad.write_bytes((root / "a" / "x.jpg").read_bytes()[:300])  # a truncated JPEG
    return [paths[0], bad, paths[1], paths[2]]


def test_infer_images_skips_bad_images(tmp_path):
    paths = _write_inputs(tmp_path / "in")
    written, failures = infer_images(perturb(_models()["depth"]), paths, tmp_path / "out")
    assert [p.name for p in written] == ["a__x_jpg.png", "b__x_jpg.png", "y.png"]
    assert all(p.stat().st_size > 0 for p in written)
    assert len(failures) == 1 and "broken.jpg" in failures[0]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_infer_cli_exit_code_and_error_line(tmp_path):
    paths = _write_inputs(tmp_path / "in")
    model = perturb(_models()["segmentation"])
    torch.save({"model": model.state_dict(), "meta": {"task": "segmentation", "model": model.config}}, tmp_path / "m.pth")
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), str(tmp_path / "m.pth"), *map(str, paths),
           "--out", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0] and "Traceback" not in result.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    result = subprocess.run([*cmd[:2], str(tmp_path / "missing.pth"), str(paths[0])], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
