"""The two matching stages: the query filter (one query per object by default, as the authors' released code;
repeated Hungarian with ≤ max_pos distinct queries per object as an option) and the mask-aware Hungarian matcher,
each checked for optimality against brute force."""
import itertools

import numpy as np
import pytest
import torch

from tasks.detection.matcher import HungarianMatcher
from tasks.panoptic.matcher import MaskHungarianMatcher, QueryFilter, dice_cost, repeated_assignment


def brute_force(cost: np.ndarray) -> float:
    """Minimum total cost of assigning every column to a distinct row (rows >= columns)."""
    rows, cols = cost.shape
    return min(sum(cost[r, c] for c, r in enumerate(perm)) for perm in itertools.permutations(range(rows), cols))


def random_case(seed: int, queries: int, targets: int, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(queries, classes, generator=g)
    boxes = torch.cat([torch.rand(queries, 2, generator=g) * 0.6 + 0.2, torch.rand(queries, 2, generator=g) * 0.3 + 0.05], 1)
    labels = torch.randint(0, classes, (targets,), generator=g)
    target_boxes = torch.cat([torch.rand(targets, 2, generator=g) * 0.6 + 0.2, torch.rand(targets, 2, generator=g) * 0.3 + 0.05], 1)
    return logits, boxes, labels, target_boxes


@pytest.mark.parametrize("seed", range(5))
def test_repeated_assignment_each_round_optimal_among_free_rows(seed):
    cost = np.random.default_rng(seed).random((7, 2))
    rounds = repeated_assignment(cost, 3)
    used = set()
    for rows, cols in rounds:
        assert sorted(cols.tolist()) == [0, 1]  # every target once per round
        assert not used & set(rows.tolist())  # rows never reused
        free = [r for r in range(7) if r not in used]
        assert cost[rows, cols].sum() == pytest.approx(brute_force(cost[free]))
        used |= set(rows.tolist())
    assert len(rounds) == 3 and len(used) == 6


@pytest.mark.parametrize("seed", range(3))
def test_query_filter_default_keeps_one_query_per_object(seed):
    """The released filter leaves its loop after the first round: the one-to-one assignment only."""
    logits, boxes, labels, target_boxes = random_case(seed, queries=9, targets=3)
    matcher = HungarianMatcher(2.0, 5.0, 2.0)
    result = QueryFilter(matcher)(logits, boxes, labels, target_boxes)
    rows, cols = matcher({"pred_logits": logits[None], "pred_boxes": boxes[None]},
                         [{"labels": labels, "boxes": target_boxes}])[0]
    assert torch.equal(result.selected, rows) and torch.equal(result.rows, rows) and torch.equal(result.cols, cols)
    assert len(result.selected) == 3


@pytest.mark.parametrize("seed", range(4))
def test_query_filter_keeps_at_most_three_distinct_queries_per_object(seed):
    logits, boxes, labels, target_boxes = random_case(seed, queries=9, targets=2)
    matcher = HungarianMatcher(2.0, 5.0, 2.0)
    result = QueryFilter(matcher, max_pos=3)(logits, boxes, labels, target_boxes)
    assert len(result.selected) == 6 and len(set(result.selected.tolist())) == 6
    assert result.selected.tolist() == sorted(result.selected.tolist())
    # the first round is exactly the one-to-one Hungarian assignment of the detection matcher
    rows, cols = matcher({"pred_logits": logits[None], "pred_boxes": boxes[None]},
                         [{"labels": labels, "boxes": target_boxes}])[0]
    assert torch.equal(result.rows, rows) and torch.equal(result.cols, cols)
    assert set(result.rows.tolist()) <= set(result.selected.tolist())
    # ... and is optimal
    cost = matcher.cost_matrix(logits, boxes, labels, target_boxes).double().numpy()
    assert cost[result.rows, result.cols].sum() == pytest.approx(brute_force(cost))


def test_query_filter_rounds_limited_by_queries_per_object():
    logits, boxes, labels, target_boxes = random_case(0, queries=5, targets=2)
    result = QueryFilter(HungarianMatcher(), max_pos=3)(logits, boxes, labels, target_boxes)
    assert len(result.selected) == 4  # min(3, 5 // 2) = 2 rounds
    one = QueryFilter(HungarianMatcher(), max_pos=1)(logits, boxes, labels, target_boxes)
    assert torch.equal(one.selected, one.rows)


def test_query_filter_no_targets_and_bad_max_pos():
    logits, boxes, _, _ = random_case(0, queries=5, targets=0)
    result = QueryFilter(HungarianMatcher())(logits, boxes, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert len(result.selected) == 0 and len(result.rows) == 0
    with pytest.raises(ValueError, match="max_pos"):
        QueryFilter(HungarianMatcher(), max_pos=0)


def test_dice_cost_formula():
    g = torch.Generator().manual_seed(0)
    p, t = torch.rand(3, 10, generator=g), (torch.rand(2, 10, generator=g) > 0.5).float()
    cost = dice_cost(p, t)
    for i in range(3):
        for j in range(2):
            expected = 1 - 2 * (p[i] * t[j]).sum() / ((p[i] ** 2).sum() + 1e-3 + (t[j] ** 2).sum() + 1e-3)
            assert cost[i, j] == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_mask_matcher_optimal_and_uses_masks(seed):
    logits, boxes, labels, target_boxes = random_case(seed, queries=6, targets=3)
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(6, 4, 4, generator=g)
    target_masks = torch.rand(3, 8, 8, generator=g) > 0.5
    matcher = MaskHungarianMatcher(4.0, 5.0, 2.0, 2.0)
    rows, cols = matcher(logits, boxes, masks, labels, target_boxes, target_masks)
    cost = matcher.cost_matrix(logits, boxes, masks, labels, target_boxes, target_masks).double().numpy()
    assert cost[rows, cols].sum() == pytest.approx(brute_force(cost))
    # the cost is the detection cost (class weight 4) plus 2 x dice against the bilinearly resized target
    resized = torch.nn.functional.interpolate(target_masks[None].float(), size=(4, 4), mode="bilinear")[0]
    expected = (HungarianMatcher(4.0, 5.0, 2.0).cost_matrix(logits, boxes, labels, target_boxes)
                + 2.0 * dice_cost(masks.flatten(1), resized.flatten(1)))
    torch.testing.assert_close(torch.from_numpy(cost).float(), expected)


def test_mask_matcher_dice_decides_between_identical_boxes():
    """Two queries with the same class score and box: the one whose mask fits the target wins."""
    logits = torch.zeros(2, 1)
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]] * 2)
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, :2] = True
    masks = torch.stack([(~target[0]).float(), target[0].float()])
    rows, cols = MaskHungarianMatcher()(logits, boxes, masks, torch.tensor([0]), boxes[:1], target)
    assert rows.tolist() == [1] and cols.tolist() == [0]
