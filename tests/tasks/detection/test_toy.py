"""The detection toy: synthetic scenes in the COCO layout, exact RLE masks and pycocotools boxes."""
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tasks.common.synthetic import SHAPE_CLASSES, make_scene
from tasks.detection.toy import write_toy_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")  # numpy 2 vs annToMask

SMALL = dict(num_train=5, num_val=12, seed=3)


def scene_of(split: int, index: int, size, seed=SMALL["seed"]):
    """The scene the writer draws for (split, index): 0 = train, 1 = val (the documented seeding)."""
    return make_scene(np.random.default_rng([seed, split, index]), *size)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("coco"), **SMALL)


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
