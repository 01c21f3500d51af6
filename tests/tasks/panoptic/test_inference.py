"""Mask-wise merging on hand-made masks and scores: ranking by score x quality², quality thresholds, the thing
(0.4) and stuff (0.2) overlap thresholds, VOID where nothing is kept, top-k over queries x classes."""
import math

import pytest
import torch
import torch.nn.functional as F

from tasks.panoptic.inference import MergeOptions, candidates, merge, real_region


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def box_mask(size, y0, y1, x0, x1, value=1.0):
    m = torch.zeros(size)
    m[y0:y1, x0:x1] = value
    return m


def test_quality_squared_scoring_and_order():
    size = (8, 8)
    masks = torch.stack([box_mask(size, 0, 4, 0, 4, 0.8), box_mask(size, 4, 8, 4, 8, 1.0)])
    scores = torch.tensor([0.9, 0.8])
    panoptic, segments = merge(scores, torch.tensor([0, 1]), masks, 2, size, [11, 12])
    q0, q1 = 0.8 * 16 / 17, 16 / 17
    assert [s["score"] for s in segments] == pytest.approx(sorted([0.9 * q0**2, 0.8 * q1**2], reverse=True))
    # the second candidate has the higher score x quality² (0.708 > 0.578): placed first, id 1
    assert segments[0]["category_id"] == 12 and segments[0]["id"] == 1
    assert (panoptic[4:, 4:] == 1).all() and (panoptic[:4, :4] == 2).all()
    assert (panoptic[:4, 4:] == 0).all()  # VOID where no mask is


def test_quality_thresholds_for_things_and_stuff():
    size = (8, 8)
    masks = torch.stack([box_mask(size, 0, 4, 0, 8), box_mask(size, 4, 8, 0, 8)])
    scores = torch.tensor([0.26, 0.24])  # quality 32/33: 0.245 (thing, below 0.25) and 0.226 (stuff)
    _, segments = merge(scores, torch.tensor([0, 1]), masks, 1, size, [1, 2])
    assert segments == []
    options = MergeOptions(quality_threshold_things=0.2, quality_threshold_stuff=0.3)
    _, segments = merge(scores, torch.tensor([0, 1]), masks, 1, size, [1, 2], options)
    assert [(s["category_id"], s["isthing"]) for s in segments] == [(1, True)]


def test_thing_overlap_threshold_point_four():
    size = (10, 10)
    first = box_mask(size, 0, 10, 0, 5)  # 50 pixels, placed first
    half = box_mask(size, 0, 10, 3, 7)  # 40 pixels, 20 taken: 0.5 > 0.4 -> skipped
    little = box_mask(size, 0, 10, 4, 10)  # 60 pixels, 10 taken: 0.17 -> kept on its free pixels
    masks = torch.stack([first, half, little])
    panoptic, segments = merge(torch.tensor([0.99, 0.98, 0.97]), torch.tensor([0, 0, 1]), masks, 2, size, [5, 6])
    assert [s["category_id"] for s in segments] == [5, 6]
    assert (panoptic[:, :5] == 1).all() and (panoptic[:, 5:] == 2).all()


def test_stuff_overlap_threshold_point_two_and_exact_boundary():
    size = (10, 10)
    thing = box_mask(size, 0, 10, 0, 2)  # 20 pixels
    stuff_a = box_mask(size, 0, 10, 0, 10)  # 100 px, 20 taken: 0.2 is not > 0.2 -> kept
    stuff_b = box_mask(size, 0, 10, 0, 3)  # 30 px, all taken -> skipped
    masks = torch.stack([thing, stuff_a, stuff_b])
    # scores x quality²: thing 0.99 * (20/21)² = 0.898 first, then 0.9 * (100/101)² = 0.882, 0.85 * (30/31)²
    panoptic, segments = merge(torch.tensor([0.99, 0.9, 0.85]), torch.tensor([0, 1, 2]), masks, 1, size, [1, 2, 3])
    assert [s["category_id"] for s in segments] == [1, 2]
    assert [s["isthing"] for s in segments] == [True, False]
    assert (panoptic == 0).sum() == 0
    # a stuff mask 35% covered (20 of 57 pixels) is refused
    stuff_c = box_mask(size, 0, 10, 0, 2) + box_mask(size, 0, 10, 6, 10) - box_mask(size, 0, 1, 6, 10)  # 20 + 36
    stuff_c[0, 6] = 1  # 57 px, 20 taken: 0.35
    _, segments = merge(torch.tensor([0.99, 0.9]), torch.tensor([0, 1]), torch.stack([thing, stuff_c]), 1, size, [1, 2])
    assert [s["category_id"] for s in segments] == [1]


def test_empty_and_all_void():
    size = (4, 4)
    panoptic, segments = merge(torch.tensor([0.9]), torch.tensor([0]), torch.zeros(1, 4, 4), 1, size, [1])
    assert segments == [] and panoptic.dtype == torch.int32 and (panoptic == 0).all()


def test_masks_resized_to_output_size_bilinear():
    mask = box_mask((4, 4), 0, 2, 0, 4)
    panoptic, segments = merge(torch.tensor([0.9]), torch.tensor([0]), mask[None], 1, (8, 6), [3])
    resized = F.interpolate(mask[None, None], size=(8, 6), mode="bilinear", align_corners=False)[0, 0]
    assert panoptic.shape == (8, 6)
    assert torch.equal(panoptic == 1, resized > 0.5)


def test_candidates_top_k_over_queries_and_classes():
    thing_logits = torch.tensor([[logit(0.9), logit(0.8)], [logit(0.1), logit(0.7)], [logit(0.2), logit(0.05)]])
    thing_masks = torch.arange(3.0)[:, None, None].expand(3, 2, 2)
    stuff_logits = torch.tensor([logit(0.6)])
    stuff_masks = torch.full((1, 2, 2), 7.0)
    scores, labels, masks = candidates(thing_logits, thing_masks, stuff_logits, stuff_masks, max_per_image=3)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert labels.tolist() == [0, 1, 1, 2]  # query 0 twice (two classes), then the stuff class T + 0
    assert masks[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 7.0]


def test_real_region_matches_nearest_padding_mask():
    valid = torch.zeros(1, 1, 37, 53)
    valid[..., :30, :41] = 1
    small = F.interpolate(valid, size=(5, 7))[0, 0]
    cropped = real_region(torch.zeros(2, 5, 7), (30, 41), (37, 53))
    assert cropped.shape[-2:] == (int(small[:, 0].sum()), int(small[0].sum()))
    assert real_region(torch.zeros(2, 5, 7), (37, 53), (37, 53)).shape == (2, 5, 7)
