"""The panoptic pipelines: the same random draws and images as the detection pipelines, masks that follow the
pixels through flips, resizes and crops, boxes recomputed from the masks, dropped segments."""
import numpy as np
import pytest
import torch

from tasks.detection import transforms as D
from tasks.panoptic import transforms as T

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def painted_sample(seed=0, height=90, width=120):
    """Four segments (ids 11, 12, 13, 14), segment k painted in COLOURS[k]; the rest VOID (black)."""
    panoptic = np.zeros((height, width), np.int32)
    panoptic[5:40, 10:50] = 11
    panoptic[30:80, 60:110] = 12
    panoptic[50:85, 5:30] = 13
    panoptic[0:20, 100:120] = 14
    image = np.zeros((height, width, 3), np.uint8)
    for k in range(4):
        image[panoptic == 11 + k] = COLOURS[k]
    segments = [{"id": 11 + k, "category_id": k, "iscrowd": 0, "area": int((panoptic == 11 + k).sum()),
                 "bbox": [0, 0, 5, 5]} for k in range(4)]
    return {"image": image, "panoptic": panoptic, "segments_info": segments, "labels": np.arange(4, dtype=np.int64),
            "file_name": "x.png", "image_id": 1, "orig_size": (height, width), "rng": np.random.default_rng(seed)}


def toy_pipeline():
    return T.train_pipeline(scales=(64, 80, 96), max_size=160, crop_resize=(70, 90), crop_size=(40, 70))


def test_same_draws_and_images_as_the_detection_pipeline():
    ours = toy_pipeline()
    theirs = D.train_pipeline(scales=(64, 80, 96), max_size=160, crop_resize=(70, 90), crop_size=(40, 70))
    theirs.transforms[1].second.transforms[0] = D.RandomResize((70, 90), T.CROP_RESIZE_MAX)  # the authors' cap
    for seed in range(12):
        a = ours(painted_sample(seed))
        sample = painted_sample(seed)
        b = theirs({"image": sample["image"], "boxes": np.zeros((0, 4), np.float32),
                    "labels": np.zeros(0, np.int64), "rng": sample["rng"]})
        assert torch.equal(a["image"], b["image"]) and a["size"] == b["size"]


@pytest.mark.parametrize("seed", range(16))
def test_masks_follow_the_pixels(seed):
    sample = toy_pipeline().transforms[:-2]  # without Normalize and ToTensor: the image stays uint8
    out = T.Compose(sample)(painted_sample(seed))
    out = T.ToTensor()(out)  # masks from the target map, the image kept in 0..255
    image = out["image"].permute(1, 2, 0).numpy()
    assert out["masks"].shape[1:] == image.shape[:2] and len(out["masks"]) == len(out["labels"]) >= 1
    for mask, label in zip(out["masks"].numpy(), out["labels"].tolist()):
        painted = np.abs(image - COLOURS[label]).max(axis=2) < 60
        disagree = (mask != painted).sum()
        boundary = 2 * (mask.sum(axis=0) > 0).sum() + 2 * (mask.sum(axis=1) > 0).sum()  # bilinear edge pixels
        assert mask.any() and disagree <= boundary, (label, disagree, boundary)
    np.testing.assert_array_equal(out["boxes"].numpy(), T.masks_to_boxes(out["masks"]).numpy())


def test_crop_drops_segments_it_cuts_out_and_recomputes_boxes():
    sample = T.SegmentTargets()(painted_sample())
    top, left, h, w = 10, 0, 50, 55
    sample["image"] = sample["image"][top:top + h, left:left + w]
    sample["mask"] = sample["mask"][top:top + h, left:left + w]
    sample = T.ToTensor()(T.Normalize()(sample))
    assert sample["labels"].tolist() == [0, 2]  # segments 1 and 3 lie outside the window
    x0, y0, x1, y1 = 10, 0, 50, 40 - top  # segment 0: rows 5-39 cut to 10-39
    x0b, y0b, x1b, y1b = 5, 50 - top, 30, 60 - top  # segment 2: rows 50-84 cut to 50-59
    expected = [[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h],
                [(x0b + x1b) / 2 / w, (y0b + y1b) / 2 / h, (x1b - x0b) / w, (y1b - y0b) / h]]
    np.testing.assert_allclose(sample["boxes"].numpy(), expected, rtol=1e-6)
    assert sample["masks"].shape == (2, h, w) and sample["masks"][1].sum() == 25 * 10


def test_segment_targets_drop_crowd_and_degenerate_segments():
    sample = painted_sample()
    sample["segments_info"][0]["iscrowd"] = 1
    sample["segments_info"][1]["bbox"] = [0, 0, 0.5, 3]
    sample["segments_info"][2]["area"] = 0
    out = T.SegmentTargets()(sample)
    assert out["labels"].tolist() == [3]
    assert (out["mask"] == 0).sum() == 400 and (out["mask"] == -1).sum() == 90 * 120 - 400
    assert "panoptic" not in out and "segments_info" not in out


def test_masks_to_boxes_hand_case():
    masks = torch.zeros((2, 4, 8), dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    masks[1, 3, 7] = True
    expected = [[4 / 8, 2 / 4, 4 / 8, 2 / 4], [7.5 / 8, 3.5 / 4, 1 / 8, 1 / 4]]
    assert T.masks_to_boxes(masks).tolist() == expected
    assert T.masks_to_boxes(torch.zeros((0, 4, 8), dtype=torch.bool)).shape == (0, 4)


def test_random_steps_need_the_sample_rng():
    sample = painted_sample()
    del sample["rng"]
    with pytest.raises(ValueError, match="sample\\['rng'\\]"):
        toy_pipeline()(sample)
    with pytest.raises(ValueError, match="min_size 9 > max_size 5"):
        T.RandomSizeCrop(9, 5)
