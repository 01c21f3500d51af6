"""Panoptic SegFormer's losses on hand-made outputs: dice formula, fixed stuff assignment (absent classes get no
mask loss, only the presence loss), mask-aware thing targets, the thing/stuff weighting and the key names."""
import pytest
import torch
import torch.nn.functional as F

from tasks.detection.losses import sigmoid_focal_loss
from tasks.panoptic.losses import DEFAULT_WEIGHTS, PanopticCriterion, dice_loss, mask_dice

T, S, Q, H, W = 2, 3, 6, 32, 32  # things, stuff, queries, padded input size (masks at H/8)


def targets():
    masks = torch.zeros(4, H, W, dtype=torch.bool)
    masks[0, 0:8, 0:8] = True  # thing 0
    masks[1, 16:32, 16:24] = True  # thing 1
    masks[2, :, :] = True  # stuff class T+0 (everything else)
    masks[2] &= ~(masks[0] | masks[1])
    masks[3, 24:32, 0:8] = True  # stuff class T+2
    masks[2] &= ~masks[3]
    boxes = torch.tensor([[4 / W, 4 / H, 8 / W, 8 / H], [20 / W, 24 / H, 8 / W, 16 / H], [0.5, 0.5, 1, 1], [4 / W, 28 / H, 8 / W, 8 / H]])
    return [{"labels": torch.tensor([0, 1, T + 0, T + 2]), "masks": masks, "boxes": boxes}]


def outputs(requires_grad=False, thing_index=None):
    g = torch.Generator().manual_seed(0)
    n = Q if thing_index is None else thing_index.shape[1]
    out = {
        "pred_logits": torch.randn(1, Q, T, generator=g),
        "pred_boxes": torch.rand(1, Q, 4, generator=g) * 0.3 + 0.2,
        "aux_outputs": [{"pred_logits": torch.randn(1, Q, T, generator=g),
                         "pred_boxes": torch.rand(1, Q, 4, generator=g) * 0.3 + 0.2}],
        "thing_index": torch.arange(Q)[None] if thing_index is None else thing_index,
        "thing_masks": torch.rand(1, n, H // 8, W // 8, generator=g),
        "thing_aux_masks": [torch.rand(1, n, H // 8, W // 8, generator=g)],
        "stuff_masks": torch.rand(1, S, H // 8, W // 8, generator=g),
        "stuff_aux_masks": [torch.rand(1, S, H // 8, W // 8, generator=g)],
        "stuff_logits": torch.randn(1, S, generator=g),
        "stuff_aux_logits": [torch.randn(1, S, generator=g)],
    }
    if requires_grad:
        for key in ("thing_masks", "stuff_masks", "stuff_logits"):
            out[key].requires_grad_(True)
    return out


def run(criterion, out, tgts):
    selector = criterion.selector(tgts)
    index = selector(out)
    thing_index = torch.full((1, max(len(i) for i in index)), -1)
    thing_index[0, : len(index[0])] = index[0]
    out = {**out, "thing_index": thing_index,
           "thing_masks": out["thing_masks"][:, : thing_index.shape[1]],
           "thing_aux_masks": [m[:, : thing_index.shape[1]] for m in out["thing_aux_masks"]]}
    return criterion(out, tgts, selector), out, selector


def test_dice_loss_formula():
    p, t = torch.rand(2, 3, 3), (torch.rand(2, 3, 3) > 0.5).float()
    expected = 1 - 2 * (p * t).sum((1, 2)) / ((p * p).sum((1, 2)) + (t * t).sum((1, 2)) + 2e-6)
    torch.testing.assert_close(dice_loss(p, t), expected)
    assert float(dice_loss(t[:1], t[:1])) == pytest.approx(0.0, abs=1e-5)


def test_mask_dice_upsamples_prediction_and_resizes_target():
    pred, target = torch.rand(2, 4, 4), torch.rand(2, 16, 16) > 0.5
    up = F.interpolate(pred[None], scale_factor=2.0, mode="bilinear")[0]
    tgt = F.interpolate(target[None].float(), size=(8, 8), mode="bilinear")[0]
    expected = (dice_loss(up, tgt) * torch.tensor([1.0, 0.0])).sum() / 3
    torch.testing.assert_close(mask_dice(pred, target, torch.tensor([1.0, 0.0]), 3.0), expected)


def test_keys_and_weighted_total():
    losses, _, _ = run(PanopticCriterion(T, S), outputs(), targets())
    expected = {"loss", "things_ratio", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0",
                "loss_mask_things", "loss_mask_things_0", "loss_mask_stuff", "loss_mask_stuff_0", "loss_cls_stuff",
                "loss_cls_stuff_0"}
    assert set(losses) == expected
    ratio = 2 / (2 + 2)  # two things, two stuff segments
    assert float(losses["things_ratio"]) == pytest.approx(ratio)
    total = 0.0
    for key, value in losses.items():
        if key.startswith("loss_"):
            base = key.rsplit("_", 1)[0] if key[-1].isdigit() else key
            share = 1 - ratio if base in ("loss_mask_stuff", "loss_cls_stuff") else ratio
            total += DEFAULT_WEIGHTS[base] * share * float(value)
    assert float(losses["loss"]) == pytest.approx(total, rel=1e-5)


def test_stuff_fixed_assignment_and_presence():
    out = outputs(requires_grad=True)
    losses, _, _ = run(PanopticCriterion(T, S), out, targets())
    present = torch.tensor([[1.0, 0.0, 1.0]])
    expected = sigmoid_focal_loss(out["stuff_logits"], present).sum() / 2
    torch.testing.assert_close(losses["loss_cls_stuff"], expected)
    # dice against class k's mask for present classes only, / number of stuff segments
    tgt = targets()[0]
    stuff_target = torch.zeros(S, H, W)
    stuff_target[0], stuff_target[2] = tgt["masks"][2].float(), tgt["masks"][3].float()
    expected = mask_dice(out["stuff_masks"][0], stuff_target, present[0], 2.0)
    torch.testing.assert_close(losses["loss_mask_stuff"], expected)
    losses["loss_mask_stuff"].backward()
    grad = out["stuff_masks"].grad[0]
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0  # class 1 is absent: no mask loss


def test_thing_masks_trained_on_the_mask_aware_assignment():
    """Filtered queries predicting (area-downsampled) target masks: the mask matcher follows the masks and the
    thing dice loss is exactly the dice of those pairs / number of things, far below a wrong assignment's."""
    tgt = targets()
    criterion = PanopticCriterion(T, S)
    out = outputs()
    selector = criterion.selector(tgt)
    selected = selector(out)[0]
    # give every selected query the mask of the target the mask matcher will pick: make all masks perfect for
    # target 0 or 1 by the box cost, then read the assignment from the matcher on those masks
    small = F.interpolate(tgt[0]["masks"][:2][None].float(), size=(H // 8, W // 8), mode="area")[0]
    masks = torch.stack([small[i % 2] for i in range(len(selected))])[None]
    out = {**out, "thing_index": selected[None], "thing_masks": masks, "thing_aux_masks": [masks]}
    rows, cols = criterion.mask_matcher(out["pred_logits"][0, selected], out["pred_boxes"][0, selected], masks[0],
                                        tgt[0]["labels"][:2], tgt[0]["boxes"][:2], tgt[0]["masks"][:2])
    assert [(int(r) % 2) for r in rows] == cols.tolist()  # dice makes the matching follow the masks
    losses = criterion(out, tgt, selector)
    expected = mask_dice(masks[0][rows], tgt[0]["masks"][:2][cols], torch.ones(len(rows)), 2.0)
    torch.testing.assert_close(losses["loss_mask_things"], expected)
    wrong = mask_dice(masks[0][rows], tgt[0]["masks"][:2][1 - cols], torch.ones(len(rows)), 2.0)
    assert float(expected) < 0.1 < 0.9 < float(wrong)


def test_weights_checked():
    with pytest.raises(ValueError, match="unknown"):
        PanopticCriterion(T, S, weights={**DEFAULT_WEIGHTS, "loss_typo": 1.0})
    with pytest.raises(ValueError, match="selector"):
        criterion = PanopticCriterion(T, S)
        criterion(outputs(), targets(), criterion.selector(targets()))
