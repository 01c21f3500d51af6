"""CocoPanoptic on panopticapi's two real COCO sample annotations (with stand-in images), the label mapping,
batching and the errors."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks.panoptic import transforms as T
from tasks.panoptic.datasets import CocoPanoptic, PanopticCategories, collate
from tasks.panoptic.evaluator import read_panoptic_png

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "panoptic_sample"


@pytest.fixture()
def coco_sample(tmp_path):
    """panopticapi's sample in COCO's layout, with grey JPEGs of the right sizes for the images."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    shutil.copy(SAMPLE / "panoptic_examples.json", tmp_path / "annotations" / "panoptic_val2017.json")
    shutil.copytree(SAMPLE / "panoptic_examples", tmp_path / "annotations" / "panoptic_val2017")
    for image in json.loads((SAMPLE / "panoptic_examples.json").read_text())["images"]:
        grey = np.full((image["height"], image["width"], 3), 128, np.uint8)
        cv2.imwrite(str(tmp_path / "val2017" / image["file_name"]), grey)
    return tmp_path


def dataset(root, **kwargs):
    return CocoPanoptic(root / "val2017", root / "annotations" / "panoptic_val2017.json", **kwargs)


def test_label_mapping_of_coco_categories():
    categories = json.loads((SAMPLE / "panoptic_coco_categories.json").read_text())
    mapping = PanopticCategories.from_json(categories)
    assert (len(mapping), mapping.num_things, mapping.num_stuff) == (133, 80, 53)
    assert mapping.category_ids[:3] == (1, 2, 3) and mapping.category_ids[79] == 90  # things, ids 1..90 with gaps
    assert mapping.category_ids[80] == 92 and mapping.category_ids[-1] == 200  # then stuff, ids 92..200
    assert all(mapping.isthing[:80]) and not any(mapping.isthing[80:])
    assert mapping.names[0] == "person" and mapping.label_of(92) == 80
    assert mapping.as_json()[80] == {"id": 92, "name": "banner", "isthing": 0}


def test_label_mapping_sorts_things_first_by_id():
    mapping = PanopticCategories.from_json([{"id": 50, "name": "road", "isthing": 0}, {"id": 9, "name": "b", "isthing": 1},
                                            {"id": 2, "name": "sky", "isthing": 0}, {"id": 4, "name": "a", "isthing": 1}])
    assert mapping.category_ids == (4, 9, 2, 50) and mapping.names == ("a", "b", "sky", "road")
    with pytest.raises(ValueError, match="id 4 appears twice"):
        PanopticCategories.from_json([{"id": 4, "name": "a", "isthing": 1}, {"id": 4, "name": "b", "isthing": 0}])
    with pytest.raises(ValueError, match="isthing"):
        PanopticCategories.from_json([{"id": 4, "name": "a"}])


def test_reads_the_real_sample(coco_sample):
    ds = dataset(coco_sample)
    assert ds.image_ids == [142238, 439180] and ds.num_classes == 133 and ds.class_names[0] == "person"
    sample = ds[0]
    document = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    ann = document["annotations"][0]
    assert sample["image"].shape == (427, 640, 3) and sample["orig_size"] == (427, 640)
    assert sample["panoptic"].dtype == np.int32
    assert (sample["panoptic"] == read_panoptic_png(SAMPLE / "panoptic_examples" / ann["file_name"])).all()
    assert sample["segments_info"] == ann["segments_info"] and sample["file_name"] == ann["file_name"]
    assert sample["labels"].tolist() == [ds.categories.label_of(s["category_id"]) for s in ann["segments_info"]]
    # PNG areas are the json's
    for segment in ann["segments_info"]:
        assert (sample["panoptic"] == segment["id"]).sum() == segment["area"]


def test_training_targets_of_the_real_sample(coco_sample):
    ds = dataset(coco_sample, transforms=T.Compose([T.SegmentTargets(), T.Normalize(), T.ToTensor()]))
    raw = dataset(coco_sample).read(1)
    sample = ds[1]
    kept = [s for s in raw["segments_info"] if not s["iscrowd"]]
    assert len(kept) == len(raw["segments_info"]) - 2  # the person and horse crowds
    assert sample["masks"].shape == (len(kept), 360, 640) and sample["masks"].dtype == torch.bool
    for mask, label, segment in zip(sample["masks"], sample["labels"], kept):
        assert (mask.numpy() == (raw["panoptic"] == segment["id"])).all()
        assert int(label) == ds.categories.label_of(segment["category_id"])
    x, y, w, h = np.array([s["bbox"] for s in kept], np.float32).T  # COCO's boxes are the masks' pixel boxes
    expected = np.stack([(x + w / 2) / 640, (y + h / 2) / 360, w / 640, h / 360], axis=1)
    np.testing.assert_allclose(sample["boxes"].numpy(), expected, atol=1e-6)
    assert set(sample) == {"image", "labels", "masks", "boxes", "image_id", "orig_size", "size"}


def test_evaluation_sample_keeps_the_ground_truth_at_its_size(coco_sample):
    sample = dataset(coco_sample, transforms=T.test_pipeline(size=200, max_size=400))[0]
    assert sample["image"].shape == (3, 200, 299) and sample["size"] == (200, 299)  # int(200 * 640 / 427)
    assert sample["panoptic"].shape == (427, 640) and sample["panoptic"].dtype == torch.int32
    assert sample["orig_size"] == (427, 640) and len(sample["segments_info"]) == 18


def test_collate_pads_images_masks_and_keeps_meta():
    samples = []
    for h, w, n in ((5, 7, 2), (6, 4, 0)):
        masks = torch.zeros((n, h, w), dtype=torch.bool)
        masks[:, 1:3, 1:3] = True
        samples.append({"image": torch.ones(3, h, w), "labels": torch.arange(n), "masks": masks,
                        "boxes": torch.rand(n, 4), "image_id": h, "orig_size": (h * 2, w * 2), "size": (h, w)})
    batch = collate(samples)
    assert batch["image"].shape == (2, 3, 6, 7) and batch["pixel_mask"].dtype == torch.long
    assert batch["pixel_mask"][0].sum() == 35 and batch["pixel_mask"][1].sum() == 24
    assert batch["image"][0, :, 5:].abs().sum() == 0 and batch["image"][1, :, :, 4:].abs().sum() == 0
    assert batch["targets"][0]["masks"].shape == (2, 6, 7) and batch["targets"][0]["masks"].sum() == 8
    assert batch["targets"][1]["masks"].shape == (0, 6, 7)
    assert batch["meta"] == [{"image_id": 5, "orig_size": (10, 14), "size": (5, 7)},
                             {"image_id": 6, "orig_size": (12, 8), "size": (6, 4)}]
    assert torch.equal(batch["targets"][0]["boxes"], samples[0]["boxes"])


def test_collate_of_evaluation_samples(coco_sample):
    ds = dataset(coco_sample, transforms=T.test_pipeline(size=100, max_size=200))
    batch = collate([ds[0], ds[1]])
    assert "targets" not in batch and batch["image"].shape == (2, 3, 100, 177)
    assert batch["meta"][1]["panoptic"].shape == (360, 640) and batch["meta"][1]["file_name"] == "000000439180.png"


def test_errors_name_the_file(coco_sample, tmp_path):
    with pytest.raises(FileNotFoundError, match="panoptic PNG folder"):
        CocoPanoptic(coco_sample / "val2017", coco_sample / "annotations" / "panoptic_val2017.json",
                     png_dir=tmp_path / "nowhere")
    ann_file = coco_sample / "annotations" / "panoptic_val2017.json"
    document = json.loads(ann_file.read_text())
    document["annotations"][1]["segments_info"][0]["category_id"] = 91
    ann_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"panoptic_val2017.json: image 439180 segment 3937500 has category_id 91"):
        dataset(coco_sample)
    del document["annotations"][1]["segments_info"]
    ann_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="annotation number 1 has no 'segments_info'"):
        dataset(coco_sample)
    shutil.copy(SAMPLE / "panoptic_examples.json", ann_file)
    cv2.imwrite(str(coco_sample / "val2017" / "000000142238.jpg"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="000000142238.png is 427x640 but its image .* is 10x10"):
        dataset(coco_sample)[0]
