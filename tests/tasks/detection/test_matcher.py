"""box_ops and HungarianMatcher: conversions, GIoU against torchvision, the cost against a direct formula, and the
assignment against a brute-force search over all assignments."""
import itertools
import math

import pytest
import torch
import torchvision

from tasks.detection.box_ops import box_area, box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, generalized_box_iou
from tasks.detection.matcher import HungarianMatcher


def random_cxcywh(*shape, generator=None):
    centre = torch.rand(*shape, 2, generator=generator) * 0.8 + 0.1
    size = torch.rand(*shape, 2, generator=generator) * 0.3 + 0.02
    return torch.cat([centre, size], dim=-1)


def test_conversions_round_trip_and_hand_case():
    box = torch.tensor([0.5, 0.4, 0.2, 0.6])
    assert torch.allclose(box_cxcywh_to_xyxy(box), torch.tensor([0.4, 0.1, 0.6, 0.7]))
    boxes = random_cxcywh(3, 5)
    assert box_cxcywh_to_xyxy(boxes).shape == (3, 5, 4)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)
    assert box_area(torch.tensor([[1.0, 2.0, 4.0, 6.0]])).tolist() == [12.0]


def test_iou_and_giou_against_torchvision_and_hand_case():
    a = box_cxcywh_to_xyxy(random_cxcywh(6))
    b = box_cxcywh_to_xyxy(random_cxcywh(4))
    assert torch.allclose(box_iou(a, b)[0], torchvision.ops.box_iou(a, b), atol=1e-6)
    assert torch.allclose(generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b), atol=1e-6)
    # [0,0,1,1] vs [2,0,3,1]: IoU 0, union 2, hull 3 -> GIoU = -(3 - 2) / 3
    giou = generalized_box_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 0, 3, 1]]))
    assert giou.item() == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="x1 < x0"):
        generalized_box_iou(torch.tensor([[1.0, 0, 0, 1]]), b)


def direct_cost(logits, boxes, labels, target_boxes, weights=(2.0, 5.0, 2.0), alpha=0.25):
    """Entry by entry, with torchvision's GIoU: the cost the matcher must use."""
    q, t = logits.shape[0], len(labels)
    cost = torch.zeros(q, t, dtype=torch.float64)
    giou = torchvision.ops.generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
    for i, j in itertools.product(range(q), range(t)):
        p = torch.sigmoid(logits[i, labels[j]]).double()
        focal = alpha * (1 - p) ** 2 * -math.log(p + 1e-8) - (1 - alpha) * p**2 * -math.log(1 - p + 1e-8)
        l1 = (boxes[i] - target_boxes[j]).abs().sum().double()
        cost[i, j] = weights[0] * focal + weights[1] * l1 - weights[2] * giou[i, j].double()
    return cost


def brute_force(cost):
    """Minimum total cost over every assignment of min(Q, T) one-to-one pairs."""
    q, t = cost.shape
    if t <= q:
        return min(sum(cost[perm[j], j] for j in range(t)) for perm in itertools.permutations(range(q), t))
    return min(sum(cost[i, perm[i]] for i in range(q)) for perm in itertools.permutations(range(t), q))


def make_case(generator, batch, queries, classes, counts):
    outputs = {"pred_logits": torch.randn(batch, queries, classes, generator=generator) * 2,
               "pred_boxes": random_cxcywh(batch, queries, generator=generator)}
    targets = [{"labels": torch.randint(0, classes, (n,), generator=generator),
                "boxes": random_cxcywh(n, generator=generator)} for n in counts]
    return outputs, targets


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_optimal_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    outputs, targets = make_case(g, batch=3, queries=6, classes=4, counts=[3, 0, 6])
    if seed % 2:
        targets[1] = {"labels": torch.randint(0, 4, (7,), generator=g), "boxes": random_cxcywh(7, generator=g)}  # T > Q
    matcher = HungarianMatcher()
    indices = matcher(outputs, targets)
    assert len(indices) == 3
    for b, ((rows, cols), target) in enumerate(zip(indices, targets)):
        n = min(6, len(target["labels"]))
        assert rows.dtype == cols.dtype == torch.int64 and len(rows) == len(cols) == n
        assert rows.tolist() == sorted(set(rows.tolist())) and len(set(cols.tolist())) == n
        if n == 0:
            continue
        cost = direct_cost(outputs["pred_logits"][b], outputs["pred_boxes"][b], target["labels"], target["boxes"])
        ours = matcher.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b], target["labels"], target["boxes"])
        assert torch.allclose(ours.double(), cost, atol=1e-5)
        assert float(cost[rows, cols].sum()) == pytest.approx(float(brute_force(cost)), abs=1e-9)


def test_weights_change_the_matching():
    """Two queries, two targets: the class cost alone and the box cost alone disagree."""
    outputs = {"pred_logits": torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]]),
               "pred_boxes": torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]])}
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])}]
    by_class = HungarianMatcher(cost_class=1, cost_bbox=0, cost_giou=0)(outputs, targets)[0]
    by_box = HungarianMatcher(cost_class=0, cost_bbox=1, cost_giou=1)(outputs, targets)[0]
    assert by_class[1].tolist() == [1, 0]  # query 0 says class 0 = target 1
    assert by_box[1].tolist() == [0, 1]


def test_non_finite_predictions_are_named():
    outputs, targets = make_case(torch.Generator().manual_seed(0), 2, 5, 3, [2, 2])
    outputs["pred_boxes"][1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"pred_boxes contains NaN/inf at image 1, query 2"):
        HungarianMatcher()(outputs, targets)
    outputs["pred_boxes"][1, 2, 0] = 0.5
    outputs["pred_logits"][0, 4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"pred_logits contains NaN/inf at image 0, query 4"):
        HungarianMatcher()(outputs, targets)


def test_bad_targets_and_arguments():
    outputs, targets = make_case(torch.Generator().manual_seed(0), 1, 4, 3, [2])
    targets[0]["labels"] = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"outside 0..2"):
        HungarianMatcher()(outputs, targets)
    with pytest.raises(ValueError, match="1 targets for a batch of 2"):
        HungarianMatcher()({k: v.expand(2, -1, -1) for k, v in outputs.items()}, targets)
    with pytest.raises(ValueError, match="not all 0"):
        HungarianMatcher(0, 0, 0)
