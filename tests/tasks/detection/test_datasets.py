"""CocoDetection and the Deformable-DETR pipelines: boxes follow flips, resizes and crops (checked against drawn
rectangles), target construction, the synthetic COCO toy, seeding, errors."""
import json

import cv2
import numpy as np
import pytest
import torch

from tasks.detection import transforms as T
from tasks.detection.datasets import CocoDetection, coco_targets
from tasks.detection.toy import ensure_toy_dataset


def drawn_sample(height=60, width=90, boxes=((10, 5, 30, 25), (50, 30, 85, 55))):
    """Box k is a filled rectangle in colour channel k (up to 3 boxes), so its pixels can be found after any
    transform."""
    image = np.zeros((height, width, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        image[y0:y1, x0:x1, k] = 255
    return {"image": image, "boxes": np.array(boxes, np.float32), "labels": np.arange(len(boxes), dtype=np.int64),
            "rng": np.random.default_rng(0)}


def pixel_box(image, channel):
    ys, xs = np.nonzero(image[..., channel] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_boxes_follow_pixels(sample, tolerance):
    for box, label in zip(sample["boxes"], sample["labels"]):
        visible = pixel_box(sample["image"], int(label))
        assert np.abs(box - visible).max() <= tolerance, (box, visible)


def test_flip_hand_case():
    sample = drawn_sample()
    sample = T.RandomHorizontalFlip(prob=1.0, keys={"boxes": "xyxy"})(sample)
    assert sample["boxes"].tolist() == [[60, 5, 80, 25], [5, 30, 40, 55]]  # W = 90: x -> 90 - x
    assert_boxes_follow_pixels(sample, 0)
    untouched = T.RandomHorizontalFlip(prob=0.0, keys={"boxes": "xyxy"})(drawn_sample())
    assert untouched["boxes"].tolist() == drawn_sample()["boxes"].tolist()


def test_get_size_matches_the_original_rule():
    assert T.get_size(480, 640, 800, 1333) == (800, 1066)
    assert T.get_size(640, 480, 800, 1333) == (1066, 800)
    assert T.get_size(100, 1000, 800, 1333) == (133, 1330)  # capped: short side round(1333 * 100 / 1000)
    assert T.get_size(800, 1000, 800, 1333) == (800, 1000)  # already there


def test_resize_moves_boxes_with_the_image():
    sample = T.Resize(size=120, max_size=1000)(drawn_sample())
    assert sample["image"].shape[:2] == (120, 180)
    assert sample["boxes"].tolist() == [[20, 10, 60, 50], [100, 60, 170, 110]]
    assert_boxes_follow_pixels(sample, 1.5)  # bilinear blur at the edges


def test_crop_shifts_clips_and_drops():
    sample = drawn_sample(boxes=((10, 5, 30, 25), (50, 30, 85, 55), (0, 0, 8, 8)))
    sample = T.crop(sample, top=10, left=20, height=40, width=50)
    assert sample["image"].shape[:2] == (40, 50)
    # box 0 is clipped on the left, box 1 on the right and bottom, box 2 falls outside and goes with its label
    assert sample["boxes"].tolist() == [[0, 0, 10, 15], [30, 20, 50, 40]]
    assert sample["labels"].tolist() == [0, 1]
    assert_boxes_follow_pixels(sample, 0)


def test_crop_carries_a_mask_and_needs_no_boxes():
    """The panoptic task crops its target map (no boxes yet) with detection's crop: labels index the map, so stay."""
    image = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16, 1).repeat(3, axis=2)
    mask = np.arange(12 * 16, dtype=np.int32).reshape(12, 16)
    sample = T.crop({"image": image, "mask": mask, "labels": np.array([3, 4])}, top=2, left=5, height=6, width=7)
    assert np.array_equal(sample["mask"], mask[2:8, 5:12]) and sample["image"].shape == (6, 7, 3)
    assert sample["labels"].tolist() == [3, 4] and "boxes" not in sample
    drawn = T.RandomSizeCrop(4, 8)({"image": image, "mask": mask, "rng": np.random.default_rng(1)})
    assert np.array_equal(drawn["mask"].astype(np.uint8), drawn["image"][..., 0])  # the same window
    normalised = T.Normalize()({"image": image})
    assert normalised["image"].dtype == np.float32 and "boxes" not in normalised


@pytest.mark.parametrize("seed", range(5))
def test_random_size_crop_bounds_and_boxes(seed):
    sample = drawn_sample()
    sample["rng"] = np.random.default_rng(seed)
    sample = T.RandomSizeCrop(40, 70)(sample)
    height, width = sample["image"].shape[:2]
    assert 40 <= height <= 60 and 40 <= width <= 70
    assert_boxes_follow_pixels(sample, 0)


def test_train_pipeline_follows_boxes_and_normalises():
    for seed in range(8):
        sample = drawn_sample()
        sample["rng"] = np.random.default_rng(seed)
        pipeline = T.train_pipeline(scales=(64, 96, 128), max_size=200, crop_resize=(70, 80), crop_size=(40, 60))
        geometric = T.Compose(pipeline.transforms[:2])(sample)
        assert_boxes_follow_pixels(geometric, 2.0)
        boxes_xyxy = geometric["boxes"].copy()
        out = T.Compose(pipeline.transforms[2:])(geometric)
        height, width = out["size"]
        assert out["image"].shape == (3, height, width) and out["image"].dtype == torch.float32
        assert min(height, width) in (64, 96, 128)
        expected = torch.from_numpy(np.stack([(boxes_xyxy[:, 0] + boxes_xyxy[:, 2]) / 2 / width,
                                              (boxes_xyxy[:, 1] + boxes_xyxy[:, 3]) / 2 / height,
                                              (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) / width,
                                              (boxes_xyxy[:, 3] - boxes_xyxy[:, 1]) / height], 1))
        assert torch.allclose(out["boxes"], expected, atol=1e-6)
        assert out["labels"].dtype == torch.int64


def test_normalize_uses_imagenet_statistics_on_unit_range():
    sample = {"image": np.full((2, 4, 3), 255, np.uint8), "boxes": np.array([[0, 0, 4, 2]], np.float32)}
    out = T.Normalize()(sample)
    assert np.allclose(out["image"][0, 0], (1 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD))
    assert out["boxes"].tolist() == [[0.5, 0.5, 1.0, 1.0]]


def test_random_select_takes_both_branches_and_needs_rng():
    first = lambda s: {**s, "branch": 1}  # noqa: E731
    second = lambda s: {**s, "branch": 2}  # noqa: E731
    branches = {T.RandomSelect(first, second)({"rng": np.random.default_rng(i)})["branch"] for i in range(20)}
    assert branches == {1, 2}
    with pytest.raises(ValueError, match=r"RandomResize draws from sample\['rng'\]"):
        T.RandomResize((32,))({"image": np.zeros((8, 8, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32)})
    with pytest.raises(ValueError, match="min_size 9 > max_size 5"):
        T.RandomSizeCrop(9, 5)


def test_coco_targets_rules():
    annotations = [
        {"bbox": [10, 10, 20, 5], "category_id": 3, "iscrowd": 0},
        {"bbox": [0, 0, 50, 50], "category_id": 1, "iscrowd": 1},   # crowd
        {"bbox": [90, 40, 30, 30], "category_id": 7},              # runs off the right edge: clipped
        {"bbox": [5, 5, 0, 10], "category_id": 2, "iscrowd": 0},    # no width: dropped
        {"bbox": [120, 10, 5, 5], "category_id": 4, "iscrowd": 0},  # fully outside: dropped
    ]
    boxes, labels = coco_targets(annotations, height=60, width=100)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    assert boxes.tolist() == [[10, 10, 30, 15], [90, 40, 100, 60]] and labels.tolist() == [3, 7]
    boxes, labels = coco_targets(annotations, 60, 100, remove_crowd=False)
    assert labels.tolist() == [3, 1, 7]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return ensure_toy_dataset(tmp_path_factory.mktemp("coco"), num_train=4, num_val=2, size=(96, 128))


def test_synthetic_toy(toy):
    dataset = CocoDetection(toy / "train2017", toy / "annotations" / "instances_train2017.json")
    raw = json.loads((toy / "annotations" / "instances_train2017.json").read_text())
    assert len(dataset) == 4 and dataset.num_classes == 4 and dataset.categories == {1: "circle", 2: "square", 3: "triangle"}
    empty = dataset[0]  # the toy's first image has no objects
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    for index in range(4):
        sample = dataset[index]
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (96, 128, 3)
        assert sample["orig_size"] == (96, 128) and sample["image_id"] == dataset.image_ids[index]
        anns = [a for a in raw["annotations"] if a["image_id"] == sample["image_id"]]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert sample["boxes"].tolist() == expected
        assert sample["labels"].tolist() == [a["category_id"] for a in anns]
    val = CocoDetection(toy / "val2017", toy / "annotations" / "instances_val2017.json", transforms=T.test_pipeline(64, 100))
    sample = val[1]
    assert sample["image"].shape == (3, 64, 85) and sample["size"] == (64, 85) and sample["orig_size"] == (96, 128)
    assert ((sample["boxes"] >= 0) & (sample["boxes"] <= 1)).all()


def test_seeded_augmentation_is_deterministic(toy):
    pipeline = T.train_pipeline(scales=(64, 80, 96), max_size=160, crop_resize=(70,), crop_size=(48, 64))
    dataset = CocoDetection(toy / "train2017", toy / "annotations" / "instances_train2017.json", transforms=pipeline)
    a, b = dataset[(2, (0, 1, 2))], dataset[(2, (0, 1, 2))]
    assert "rng" not in a
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    sizes = {dataset[(2, seed)]["image"].shape for seed in range(12)}
    assert len(sizes) > 1
    with pytest.raises(TypeError, match="index or"):
        dataset[(1, 2, 3)]


def test_own_categories_and_errors(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((20, 30, 3), np.uint8))
    document = {
        "images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 9, "file_name": "missing.png", "height": 20, "width": 30},
                   {"id": 8, "file_name": "a.png", "height": 30, "width": 30}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 0, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "cell"}, {"id": 1, "name": "debris"}],
    }
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(document))
    dataset = CocoDetection(tmp_path / "images", ann_file)
    assert dataset.num_classes == 2 and dataset.image_ids == [7, 8, 9]
    assert dataset[0]["labels"].tolist() == [0] and dataset[0]["boxes"].tolist() == [[1, 2, 4, 6]]
    with pytest.raises(ValueError, match="a.png is 20x30 but ann.json says 30x30"):
        dataset[1]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        dataset[2]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(tmp_path / "images", tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="image folder .*nodir"):
        CocoDetection(tmp_path / "nodir", ann_file)
    document["annotations"][0]["category_id"] = 5
    ann_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"category ids \[5\]"):
        CocoDetection(tmp_path / "images", ann_file)


def _coco_folder(tmp_path, annotations):
    (tmp_path / "images").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((20, 30, 3), 90, np.uint8))
    document = {"images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
                "annotations": annotations, "categories": [{"id": 1, "name": "cell"}]}
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(document))
    return tmp_path / "images", ann_file


@pytest.mark.parametrize("content, words", [
    ("", r"ann\.json is empty \(0 bytes\)"),
    ("\n  \n", r"ann\.json is empty"),
    ('{"images": [', r"ann\.json is not valid JSON: Expecting value: line 1"),
    ("[1, 2]", r"ann\.json must hold a JSON object with an 'images' list"),
    ('{"images": {}}', r"ann\.json must hold a JSON object with an 'images' list"),
])
def test_bad_annotation_files_are_named(tmp_path, content, words):
    images, ann_file = _coco_folder(tmp_path, [])
    ann_file.write_text(content)
    with pytest.raises(ValueError, match=words):
        CocoDetection(images, ann_file)


@pytest.mark.parametrize("annotation, words", [
    ({"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
     r"ann\.json: annotation id 17 has bbox \[1, 2, 3\]; expected \[x, y, width, height\]"),
    ({"id": 18, "image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4]}, r"annotation id 18 has bbox \[1, 2, '3', 4\]"),
    ({"id": 19, "image_id": 1, "category_id": 1, "bbox": [1, 2, float("nan"), 4]}, r"annotation id 19 has bbox \[1, 2, nan, 4\]"),
    ({"id": 20, "image_id": 1, "bbox": [1, 2, 3, 4]}, r"ann\.json: annotation id 20 has no 'category_id'"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}, r"annotation number 0 has no 'id'"),
])
def test_bad_annotations_are_named_with_their_id(tmp_path, annotation, words):
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}
    with pytest.raises(ValueError, match=words):
        CocoDetection(*_coco_folder(tmp_path, [good, annotation] if "id" in annotation else [annotation]))


def test_truncated_image_is_named(tmp_path):
    images, ann_file = _coco_folder(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}])
    dataset = CocoDetection(images, ann_file)
    assert dataset[0]["boxes"].tolist() == [[0, 0, 5, 5]]
    path = images / "a.jpg"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match=r"image file .*a\.jpg is truncated"):
        dataset[0]


def test_the_evaluator_reads_the_json_with_the_same_checks(tmp_path):
    from tasks.detection.evaluator import CocoEvaluator

    _, ann_file = _coco_folder(tmp_path, [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}])
    with pytest.raises(ValueError, match=r"ann\.json: annotation id 3 has bbox \[0, 0, 5\]"):
        CocoEvaluator(ann_file)
    ann_file.write_text("")
    with pytest.raises(ValueError, match=r"ann\.json is empty"):
        CocoEvaluator(ann_file)
