"""The ground-truth PNG/json check and the COCO panoptic release facts."""
import json
from pathlib import Path

import numpy as np

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
