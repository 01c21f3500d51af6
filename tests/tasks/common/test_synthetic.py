"""The synthetic toy datasets: scene invariants, the three on-disk formats, determinism and the markers."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tasks.common import synthetic
from tasks.common.synthetic import (
    MIN_VISIBLE_PIXELS,
    SHAPE_CLASSES,
    ensure_ade20k_toy,
    ensure_coco_toy,
    ensure_nyu_toy,
    make_scene,
    write_ade20k_layout,
    write_coco_layout,
    write_nyu_layout,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")  # numpy 2 vs annToMask
SMALL = dict(num_train=5, num_val=12, seed=3)


def scene_of(split: int, index: int, size, seed=SMALL["seed"]):
    """The scene a writer draws for (split, index): 0 = train, 1 = val (the documented seeding)."""
    return make_scene(np.random.default_rng([seed, split, index]), *size)


def all_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return write_ade20k_layout(tmp_path_factory.mktemp("ade"), **SMALL)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return write_nyu_layout(tmp_path_factory.mktemp("nyu"), **SMALL)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_layout(tmp_path_factory.mktemp("coco"), **SMALL)


def test_scene_invariants():
    for index in range(20):
        scene = make_scene(np.random.default_rng(index), 96, 128)
        assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.uint8
        assert scene.labels.shape == (96, 128) and scene.labels.dtype == np.uint8 and scene.labels.max() <= 3
        assert scene.depth.dtype == np.float32 and 1.0 <= scene.depth.min() and scene.depth.max() <= 8.0
        covered = np.zeros((96, 128), bool)
        for class_id, mask, (x0, y0, x1, y1) in scene.instances:
            assert 1 <= class_id <= 3 and mask.sum() >= MIN_VISIBLE_PIXELS
            assert (scene.labels[mask] == class_id).all() and not (covered & mask).any()
            ys, xs = np.nonzero(mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.ptp(scene.depth[mask]) == 0  # an object is a fronto-parallel board
            covered |= mask
    empty = make_scene(np.random.default_rng(0), 64, 64, num_objects=0)
    assert empty.instances == [] and not empty.labels.any()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="height and width"):
        make_scene(np.random.default_rng(0), 16, 64)
    with pytest.raises(ValueError, match="num_val"):
        write_ade20k_layout(tmp_path, num_train=2, num_val=0)
    with pytest.raises(ValueError, match="size"):
        write_coco_layout(tmp_path, num_train=2, num_val=2, size=(128,))
    with pytest.raises(ValueError, match="size"):
        ensure_nyu_toy(tmp_path, num_train=2, num_val=2, size=128)


def test_ade20k_layout(ade):
    assert ade.name == "ADEChallengeData2016"
    for split, code, folder, count in (("train", 0, "training", 5), ("val", 1, "validation", 12)):
        images = sorted((ade / "images" / folder).glob("*.jpg"))
        assert [p.name for p in images] == [f"ADE_{split}_{i:08d}.jpg" for i in range(1, count + 1)]
        for index, path in enumerate(images):
            image = cv2.imread(str(path))
            annotation = Image.open(ade / "annotations" / folder / path.name.replace(".jpg", ".png"))
            assert image.shape == (128, 128, 3) and annotation.mode == "L"
            annotation = np.asarray(annotation)
            assert (annotation[[0, -1]] == 0).all() and (annotation[:, [0, -1]] == 0).all()
            expected = scene_of(code, index, (128, 128))
            np.testing.assert_array_equal(annotation[1:-1, 1:-1], expected.labels[1:-1, 1:-1] + 1)
            assert np.abs(image[..., ::-1].astype(int) - expected.image).mean() < 8  # JPEG q95, 4:2:0 chroma
    masks = [np.asarray(Image.open(p)) for p in (ade / "annotations" / "validation").glob("*.png")]
    assert set(np.unique(np.stack(masks))) == {0, 1, 2, 3, 4}  # every class in the val split


def test_nyu_layout(nyu):
    test_root = nyu / "official_splits" / "test"
    for list_name, base, code, count in (("train_list.txt", nyu, 0, 5), ("test_list.txt", test_root, 1, 12)):
        lines = (nyu / list_name).read_text().splitlines()
        assert len(lines) == count
        holes = 0
        for index, line in enumerate(lines):
            rgb, depth = line.split(" ")
            assert rgb.startswith("/") and rgb.split("/")[-1].startswith("rgb_")
            assert cv2.imread(str(base) + rgb).shape == (120, 160, 3)
            millimetres = cv2.imread(str(base) + depth, cv2.IMREAD_UNCHANGED)
            assert millimetres.dtype == np.uint16 and millimetres.shape == (120, 160)
            valid = millimetres > 0
            expected = np.round(scene_of(code, index, (120, 160)).depth * 1000)
            np.testing.assert_array_equal(millimetres[valid], expected[valid])
            holes += (~valid).mean()
        assert 0 < holes / count < 0.1
    assert {p.name for p in test_root.iterdir()} <= {"bathroom", "bedroom", "kitchen", "living_room", "office"}


def test_coco_layout(coco):
    for split, count, first_id in (("train", 5, 1), ("val", 12, 6)):
        gt = COCO(str(coco / "annotations" / f"instances_{split}2017.json"))
        assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(SHAPE_CLASSES)
        assert sorted(gt.getImgIds()) == list(range(first_id, first_id + count))
        assert not gt.getAnnIds(imgIds=[first_id])  # the first image of a split is empty
        for image_id in gt.getImgIds():
            info = gt.loadImgs(image_id)[0]
            image = cv2.imread(str(coco / f"{split}2017" / info["file_name"]))
            assert image.shape == (info["height"], info["width"], 3)
            expected = scene_of(int(split == "val"), image_id - first_id, (128, 128))
            anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
            assert len(anns) == (0 if image_id == first_id else len(expected.instances))
            for ann, instance in zip(anns, expected.instances):
                mask = gt.annToMask(ann)
                np.testing.assert_array_equal(mask, instance.mask)
                assert ann["bbox"] == list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))))
                assert ann["area"] == mask.sum() and ann["iscrowd"] == 0 and ann["category_id"] == instance.class_id
    val = COCO(str(coco / "annotations" / "instances_val2017.json"))
    assert {a["category_id"] for a in val.dataset["annotations"]} == {1, 2, 3}


def test_writers_are_deterministic(tmp_path, ade, nyu, coco):
    for writer, first in ((write_ade20k_layout, ade), (write_nyu_layout, nyu), (write_coco_layout, coco)):
        again = writer(tmp_path / writer.__name__, **SMALL)
        assert all_bytes(again) == all_bytes(first)
    other = write_ade20k_layout(tmp_path / "other", **{**SMALL, "seed": 4})
    assert all_bytes(other) != all_bytes(ade)


@pytest.mark.parametrize("ensure", [ensure_ade20k_toy, ensure_nyu_toy, ensure_coco_toy])
def test_ensure_regenerates_only_when_needed(tmp_path, monkeypatch, ensure):
    out = ensure(tmp_path, num_train=2, num_val=2)
    marker = json.loads((out / ".complete").read_text())
    assert marker["num_train"] == 2
    sentinel = out / "sentinel"
    sentinel.write_text("kept while the marker matches")
    writes = []
    for name in ("write_ade20k_layout", "write_nyu_layout", "write_coco_layout"):
        original = getattr(synthetic, name)
        monkeypatch.setattr(synthetic, name, lambda *a, _f=original, **k: writes.append(1) or _f(*a, **k))
    assert ensure(tmp_path, num_train=2, num_val=2) == out and writes == []
    (out / ".complete").unlink()  # as after an interrupted generation
    assert ensure(tmp_path, num_train=2, num_val=2) == out and writes == [1]
    ensure(tmp_path, num_train=3, num_val=2)
    assert writes == [1, 1] and json.loads((out / ".complete").read_text())["num_train"] == 3
    assert sentinel.exists()  # only the dataset's own folders are replaced


def test_refuses_to_overwrite_unmarked_data(tmp_path):
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000000000009.jpg").write_bytes(b"a real image")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        ensure_coco_toy(tmp_path, num_train=2, num_val=2)
    assert (tmp_path / "train2017" / "000000000009.jpg").exists()
