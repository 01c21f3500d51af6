"""Your own COCO json: category ids 3 / 17 / 42 train with num_classes=3 (labels mapped to 0..2 and back to the
ids for evaluation and pictures), COCO's 91-class convention is unchanged, and a count that fits neither is one
line in tools/train.py, tools/test.py and tools/check_data.py saying what would fit."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.common.config import ConfigError
from tasks.detection import DeformableDETR
from tasks.detection.datasets import CocoDetection, class_ids
from tasks.detection.toy import ensure_toy_dataset

ROOT = Path(__file__).resolve().parents[3]
IDS = {1: 3, 2: 17, 3: 42}  # the toy's ids 1..3 (circle, square, triangle) become a user's 3 / 17 / 42
TINY = dict(num_queries=10, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=32,
            backbone_args={"depths": (1, 1, 1, 1)})

CONFIG = '''
from tasks.common.config import Config, RuntimeConfig, adamw, poly
from tasks.detection.presets import CocoData, DeformableDETRModel

config = Config(
    task="detection",
    model=DeformableDETRModel(backbone="pvt_v2_b0", num_classes=3, num_queries=10, hidden_dim=32, nheads=2,
                              enc_layers=1, dec_layers=1, dim_feedforward=32, backbone_args={"depths": (1, 1, 1, 1)}),
    data=CocoData(root="{root}", scales=(96,), max_size=128, crop_resize=(96,), crop_size=(64, 96), test_size=96,
                  batch_size=2, val_batch_size=2, num_workers=0),
    optimizer=adamw(lr=1e-4),
    schedule=poly(max_iters=2, eval_interval=2, checkpoint_interval=2),
    runtime=RuntimeConfig(device="cpu"),
)
'''


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """The toy detection data with its category ids renumbered, and a config for it."""
    root = tmp_path_factory.mktemp("custom")
    ensure_toy_dataset(root / "data", num_train=6, num_val=4, size=(96, 96))
    for name in ("train2017", "val2017"):
        path = root / "data" / "annotations" / f"instances_{name}.json"
        doc = json.loads(path.read_text())
        for c in doc["categories"]:
            c["id"] = IDS[c["id"]]
        for a in doc["annotations"]:
            a["category_id"] = IDS[a["category_id"]]
        path.write_text(json.dumps(doc))
    (root / "config.py").write_text(CONFIG.replace("{root}", str(root / "data")))
    return root


def test_class_ids():
    assert class_ids({3: "a", 17: "b", 42: "c"}, 3, "x.json") == (3, 17, 42)
    assert class_ids({3: "a", 17: "b", 42: "c"}, 43, "x.json") is None
    coco = {i: str(i) for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)}  # 80 ids, max 90
    assert class_ids(coco, 91, "coco") is None and class_ids(coco, 80, "coco") == tuple(sorted(coco))
    with pytest.raises(ConfigError) as info:
        class_ids({3: "a", 17: "b", 42: "c"}, 4, "x.json")
    assert str(info.value) == ("model.num_classes=4 does not fit x.json: its categories have ids 3, 17, 42; use "
                               "model.num_classes=3 (one class per category, in id order) or 43 (the ids themselves, "
                               "COCO's convention)")


def test_labels_are_mapped_to_a_contiguous_range(custom):
    folder, ann = custom / "data" / "train2017", custom / "data" / "annotations" / "instances_train2017.json"
    raw, mapped = CocoDetection(folder, ann), CocoDetection(folder, ann, num_classes=3)
    assert mapped.class_ids == (3, 17, 42) and mapped.num_classes == 3 and raw.num_classes == 43
    for i in range(len(raw)):
        a, b = raw.read(i), mapped.read(i)
        assert [IDS[c + 1] for c in b["labels"].tolist()] == a["labels"].tolist()


def _tool(name, *args):
    cmd = [sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_custom_coco_trains_with_its_category_count_and_tests_per_class(custom, tmp_path):
    trained = _tool("train", custom / "config.py", "--work-dir", tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    model = DeformableDETR.from_pretrained(tmp_path / "best.pth")
    assert model.num_classes == 3 and model.class_names == ("circle", "square", "triangle")
    tested = _tool("test", custom / "config.py", tmp_path / "best.pth", "--work-dir", tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    table = tested.stdout.splitlines()
    assert [line.split()[:2] for line in table if line.split()[:1] in (["circle"], ["square"], ["triangle"])] == [
        ["circle", "3"], ["square", "17"], ["triangle", "42"]]
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert len(metrics["per_class_AP"]) == 3


@pytest.mark.parametrize("tool", ["train", "check_data", "test"])
def test_a_class_count_that_fits_neither_is_one_line(custom, tmp_path, tool):
    expected = ("model.num_classes=4 does not fit {}: its categories have ids 3, 17, 42; use model.num_classes=3 "
                "(one class per category, in id order) or 43 (the ids themselves, COCO's convention)")
    if tool == "test":  # the checkpoint's class count is what is evaluated
        model = DeformableDETR("pvt_v2_b0", num_classes=4, **TINY)
        torch.save({"model": model.state_dict(), "meta": {"task": "detection", "model": model.config}}, tmp_path / "m.pth")
        result = _tool("test", custom / "config.py", tmp_path / "m.pth", "--work-dir", tmp_path)
        ann = custom / "data" / "annotations" / "instances_val2017.json"
    else:
        args = ["--work-dir", tmp_path] if tool == "train" else []
        result = _tool(tool, custom / "config.py", *args, "--cfg-options", "model.num_classes=4")
        ann = custom / "data" / "annotations" / "instances_train2017.json"
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {expected.format(ann)}"], result.stderr[-3000:]
    if tool == "train":
        assert not (tmp_path / "last.pth").exists() and not (tmp_path / "log.jsonl").exists()  # before the first step
