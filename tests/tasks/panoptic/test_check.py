"""The ground-truth PNG/json check and the COCO panoptic release facts."""
import json
from pathlib import Path

import numpy as np
import pytest

from tasks.panoptic.check import (
    COCO_PANOPTIC_COUNTS, COCO_PANOPTIC_STUFF, COCO_PANOPTIC_THINGS, png_id_problems,
)
from tasks.panoptic.evaluator import read_panoptic_png

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "panoptic_sample"


def test_release_facts_match_the_categories_file():
    categories = json.loads((SAMPLE / "panoptic_coco_categories.json").read_text())
    assert sum(c["isthing"] for c in categories) == COCO_PANOPTIC_THINGS
    assert sum(1 - c["isthing"] for c in categories) == COCO_PANOPTIC_STUFF
    assert COCO_PANOPTIC_COUNTS == (118_287, 5_000)


def test_real_sample_is_consistent_and_broken_copies_are_named():
    document = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    for ann in document["annotations"]:
        ids = read_panoptic_png(SAMPLE / "panoptic_examples" / ann["file_name"])
        assert png_id_problems(ids, ann["segments_info"], ann["file_name"]) == []
    ann = document["annotations"][0]
    ids = read_panoptic_png(SAMPLE / "panoptic_examples" / ann["file_name"])
    ys, xs = np.nonzero(ids == 0)
    ids[ys[:6], xs[:6]] = 77  # an id the json does not have, on 6 VOID pixels
    info = ann["segments_info"][1:] + [{"id": 5, "category_id": 1, "area": 1}, ann["segments_info"][2]]
    info[0] = {**info[0], "area": info[0]["area"] + 1}
    problems = png_id_problems(ids, info, "000000142238.png (image 142238)")
    first, name = ann["segments_info"][0], "000000142238.png (image 142238)"
    missing_pixels = int(((ids == 77) | (ids == first["id"])).sum())
    assert problems == [
        f"{name}: segment ids {ann['segments_info'][2]['id']} appear more than once in segments_info",
        f"{name}: PNG ids {', '.join(map(str, sorted([77, first['id']])))} ({missing_pixels} pixels) are not in the "
        "json's segments_info",
        f"{name}: segments_info ids 5 are not in the PNG",
        f"{name}: json areas differ from the PNG's pixel counts for ids {info[0]['id']} "
        f"({info[0]['area']} vs {info[0]['area'] - 1})",
    ]


def break_toy(root) -> list[str]:
    """A toy COCO panoptic copy with the three ground-truth faults: a PNG id no segment lists (image 4), a segment
    the PNG does not hold (image 5), an image without an annotation entry (999). Returns the config options."""
    import cv2

    from tasks.panoptic.evaluator import id2rgb
    from tasks.panoptic.toy import write_toy_dataset

    write_toy_dataset(root, num_train=3, num_val=3, size=(48, 48))  # val image ids 4, 5, 6
    ann = root / "annotations" / "panoptic_val2017.json"
    document = json.loads(ann.read_text())
    png = root / "annotations" / "panoptic_val2017" / document["annotations"][0]["file_name"]
    ids = read_panoptic_png(png)
    ids[:2, :2] = 4242
    png.write_bytes(cv2.imencode(".png", id2rgb(ids)[..., ::-1])[1].tobytes())
    document["annotations"][1]["segments_info"].append({"id": 4243, "category_id": 1, "iscrowd": 0, "area": 5})
    document["images"].append({"id": 999, "file_name": "000000000999.jpg", "height": 48, "width": 48})
    ann.write_text(json.dumps(document))
    return [f"data.root={root}", "model.backbone_weights=None", "model.num_things_classes=3",
            "model.num_stuff_classes=3"]


CONFIG = Path(__file__).resolve().parents[3] / "configs" / "panoptic_segformer_pvt_b5_coco.py"


def test_check_data_finds_the_ground_truth_faults_and_training_start_up_the_cheap_one(tmp_path):
    from tasks.common.check_data import build_datasets, check_data, preflight
    from tasks.common.cli import config_and_task

    cfg, task = config_and_task(str(CONFIG), break_toy(tmp_path))
    table = check_data(cfg, samples=None, task=task).table()
    assert ("problem (val): 1 of the 4 images in panoptic_val2017.json have no entry in its annotations, so they are "
            "left out: 000000000999.jpg (image 999)") in table
    assert "wrong (val): 000000000004.png (image 4): PNG ids 4242 (4 pixels) are not in the json's segments_info" in table
    assert "wrong (val): 000000000005.png (image 5): segments_info ids 4243 are not in the PNG" in table
    assert "problem (train)" not in table and "wrong (train)" not in table and table.endswith("problems)")
    datasets = build_datasets(task)
    with pytest.raises(ValueError, match=r"^COCO panoptic 2017 val: 1 of the 4 images .* \(see python tools/check_data"):
        preflight(cfg, datasets["train"], datasets["val"])  # no decoding: the PNG faults wait for check_data


def test_the_splits_categories_and_the_model_counts_are_compared(tmp_path):
    from tasks.common.check_data import check_data
    from tasks.common.cli import config_and_task
    from tasks.panoptic.toy import write_toy_dataset

    write_toy_dataset(tmp_path, num_train=2, num_val=2, size=(48, 48))
    ann = tmp_path / "annotations" / "panoptic_train2017.json"
    document = json.loads(ann.read_text())
    document["categories"][0]["name"] = "disc"  # category 1 is "circle" in val
    ann.write_text(json.dumps(document))
    cfg, task = config_and_task(str(CONFIG), [f"data.root={tmp_path}", "model.backbone_weights=None"])
    problems = check_data(cfg, samples=0, task=task).splits[1].problems
    assert problems == [
        "panoptic_train2017.json and panoptic_val2017.json declare different categories (6 and 6; ids that differ: "
        "1), so their labels would not agree",
        "model.num_things_classes=80 but panoptic_val2017.json has 3 such categories",
        "model.num_stuff_classes=53 but panoptic_val2017.json has 3 such categories",
    ]
