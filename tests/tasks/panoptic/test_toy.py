"""The panoptic toy: COCO panoptic layout, PNG ids that agree with the json, the categories, VOID and crowd,
determinism, and that the dataset and its pipelines read it."""
import json

import numpy as np
import pytest

from tasks.common.synthetic import make_scene
from tasks.panoptic import transforms as T
from tasks.panoptic.check import sample_problems, summarize_samples
from tasks.panoptic.datasets import CocoPanoptic, collate
from tasks.panoptic.evaluator import pq_compute
from tasks.panoptic.toy import CATEGORIES, ensure_toy_dataset, panoptic_scene, write_toy_dataset

SMALL = dict(num_train=13, num_val=6, seed=3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("panoptic"), **SMALL)


def split(root, name):
    return CocoPanoptic(root / f"{name}2017", root / "annotations" / f"panoptic_{name}2017.json")


def test_layout_categories_and_consistency(toy):
    train, val = split(toy, "train"), split(toy, "val")
    assert train.image_ids == list(range(1, 14)) and val.image_ids == list(range(14, 20))
    assert train.class_names == ["circle", "square", "triangle", "sand", "sky", "floor"]
    assert train.categories.category_ids == (1, 3, 7, 154, 187, 190)  # not contiguous, as COCO's
    assert (train.num_things, train.num_stuff) == (3, 3)
    seen, crowd, void = set(), 0, 0
    for ds in (train, val):
        for index in range(len(ds)):
            sample = ds.read(index)
            assert sample["image"].shape == (128, 128, 3)
            assert sample_problems(sample) == []  # PNG ids == json ids, areas equal
            for segment in sample["segments_info"]:
                ys, xs = np.nonzero(sample["panoptic"] == segment["id"])
                assert segment["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            seen |= {s["category_id"] for s in sample["segments_info"]}
            crowd += sum(s["iscrowd"] for s in sample["segments_info"])
            void += (sample["panoptic"] == 0).sum()
    assert seen == {c["id"] for c in CATEGORIES} and crowd >= 1 and void > 0


def test_scene_is_the_documented_one(toy):
    sample = split(toy, "val").read(2)
    scene = make_scene(np.random.default_rng([3, 1, 2]), 128, 128)
    _, ids, segments = panoptic_scene(scene, np.random.default_rng([3, 3, 2]))
    assert (ids == sample["panoptic"]).all() and segments == sample["segments_info"]
    things = [s for s in segments if s["category_id"] in (1, 3, 7)]
    assert [s["area"] for s in things] == [int(i.mask.sum()) for i in scene.instances]


def test_deterministic_and_cached(toy, tmp_path):
    again = write_toy_dataset(tmp_path / "again", **SMALL)
    for path in sorted(p.relative_to(toy) for p in toy.rglob("*") if p.is_file()):
        assert (again / path).read_bytes() == (toy / path).read_bytes(), path
    marker = (again / ".complete").stat().st_mtime_ns
    assert ensure_toy_dataset(again, **SMALL) == again and (again / ".complete").stat().st_mtime_ns == marker
    ensure_toy_dataset(again, **{**SMALL, "num_val": 2})
    assert len(json.loads((again / "annotations" / "panoptic_val2017.json").read_text())["annotations"]) == 2


def test_pipelines_and_pq_of_the_ground_truth(toy):
    train = CocoPanoptic(toy / "train2017", toy / "annotations" / "panoptic_train2017.json",
                         transforms=T.train_pipeline(scales=(96, 128, 160), max_size=200, crop_resize=(100, 140),
                                                     crop_size=(64, 120)))
    batch = collate([train[(i, i)] for i in range(4)])
    assert batch["image"].shape[:2] == (4, 3) and len(batch["targets"]) == 4
    for target, meta in zip(batch["targets"], batch["meta"]):
        assert target["masks"].shape[1:] == batch["image"].shape[2:] and target["masks"].flatten(1).any(1).all()
        assert int(target["labels"].max()) < 6 and target["boxes"].shape == (len(target["labels"]), 4)
    ann = toy / "annotations" / "panoptic_val2017.json"
    results = pq_compute(ann, ann)  # the ground truth as prediction: crowd segments are ignored, PQ = 1
    assert results["All"]["pq"] == 1.0 and results["Things"]["n"] == 3 and results["Stuff"]["n"] == 3


def test_summary(toy):
    ds = split(toy, "val")
    lines = summarize_samples([ds.read(i) for i in range(len(ds))], ds)
    assert lines[0].endswith("crowd)") and "segments per image" in lines[0]
    assert lines[1].startswith("VOID ") and lines[2] == "6 of 6 categories seen (3 things, 3 stuff)"
