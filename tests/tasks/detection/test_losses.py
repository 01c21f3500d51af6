"""SetCriterion: focal loss against torchvision, a hand-computed case, the original normalisation, auxiliary and
encoder outputs, weighted totals, and num_boxes averaged over two gloo processes."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision

from tasks.detection.losses import SetCriterion, sigmoid_focal_loss, weighted_total
from tasks.detection.matcher import HungarianMatcher
from tests.tasks.detection.test_matcher import make_case

WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def criterion(num_classes=4, **kwargs):
    return SetCriterion(num_classes, HungarianMatcher(), WEIGHTS, **kwargs)


def test_focal_loss_matches_torchvision():
    logits = torch.randn(2, 7, 5) * 3
    targets = (torch.rand(2, 7, 5) < 0.3).float()
    for alpha in (0.25, 0.5, -1):
        expected = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=2, reduction="none")
        assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha), expected, atol=1e-6)


def test_hand_computed_case():
    """One query with logits 0 (p = 1/2) matched to its target's class 0 of K = 2, and a box twice as tall."""
    outputs = {"pred_logits": torch.zeros(1, 1, 2), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]])}]
    losses = criterion(2)(outputs, targets)
    # positive: α (1/2)^2 ln 2 = 0.0625 ln 2; negative: (1-α) (1/2)^2 ln 2 = 0.1875 ln 2
    assert losses["loss_ce"].item() == pytest.approx(0.25 * math.log(2))
    assert losses["loss_bbox"].item() == pytest.approx(0.2)  # |0.2 - 0.4|
    assert losses["loss_giou"].item() == pytest.approx(0.5)  # IoU 1/2, the hull is the target
    assert losses["cardinality_error"].item() == 1.0  # no score above 1/2, one target
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error"}


def test_normalisation_equals_the_original_formula():
    """Original: focal.mean(1).sum() / num_boxes * num_queries, and the box terms on matched pairs / num_boxes."""
    g = torch.Generator().manual_seed(1)
    outputs, targets = make_case(g, batch=2, queries=9, classes=5, counts=[3, 2])
    crit = SetCriterion(5, HungarianMatcher(), WEIGHTS)
    losses = crit(outputs, targets)
    indices = crit.matcher(outputs, targets)
    onehot = torch.zeros(2, 9, 5)
    src, tgt = [], []
    for b, (rows, cols) in enumerate(indices):
        onehot[b, rows, targets[b]["labels"][cols]] = 1
        src.append(outputs["pred_boxes"][b, rows])
        tgt.append(targets[b]["boxes"][cols])
    focal = torchvision.ops.sigmoid_focal_loss(outputs["pred_logits"], onehot, alpha=0.25, gamma=2)
    assert losses["loss_ce"].item() == pytest.approx((focal.mean(1).sum() / 5 * 9).item(), rel=1e-5)
    src, tgt = torch.cat(src), torch.cat(tgt)
    assert losses["loss_bbox"].item() == pytest.approx(((src - tgt).abs().sum() / 5).item(), rel=1e-6)
    giou = torchvision.ops.generalized_box_iou(
        torchvision.ops.box_convert(src, "cxcywh", "xyxy"), torchvision.ops.box_convert(tgt, "cxcywh", "xyxy")).diagonal()
    assert losses["loss_giou"].item() == pytest.approx(((1 - giou).sum() / 5).item(), rel=1e-6)


def test_aux_and_encoder_outputs_are_matched_separately():
    g = torch.Generator().manual_seed(2)
    outputs, targets = make_case(g, batch=2, queries=8, classes=4, counts=[2, 3])
    outputs["pred_logits"].requires_grad_(True)
    perm = torch.randperm(8, generator=g)
    # aux 0 = the final output with its queries shuffled (same losses only if matched on its own); aux 1 differs
    aux = [{k: v[:, perm] for k, v in outputs.items()}, make_case(g, 2, 8, 4, [0, 0])[0]]
    enc, _ = make_case(g, batch=2, queries=8, classes=4, counts=[0, 0])
    losses = criterion()({**outputs, "aux_outputs": aux, "enc_outputs": enc}, targets)
    expected_keys = {f"{t}{s}" for t in WEIGHTS for s in ("", "_0", "_1", "_enc")} | {"cardinality_error"}
    assert set(losses) == expected_keys
    for term in WEIGHTS:
        assert losses[f"{term}_0"].item() == pytest.approx(losses[term].item(), rel=1e-6)
        assert losses[f"{term}_1"].item() != pytest.approx(losses[term].item(), rel=1e-3)
    # the encoder term is class-agnostic: it equals the loss against the same boxes all labelled 0
    binary = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
    plain = criterion()(enc, binary)
    for term in WEIGHTS:
        assert losses[f"{term}_enc"].item() == pytest.approx(plain[term].item(), rel=1e-6)
    total = weighted_total(losses, WEIGHTS)
    base = {f"{t}{s}": t for t in WEIGHTS for s in ("", "_0", "_1", "_enc")}
    assert total.item() == pytest.approx(sum(WEIGHTS[base[k]] * losses[k].item() for k in base), rel=1e-6)
    total.backward()
    assert outputs["pred_logits"].grad is not None and not losses["cardinality_error"].requires_grad


def test_no_targets_at_all():
    outputs, targets = make_case(torch.Generator().manual_seed(3), batch=2, queries=5, classes=3, counts=[0, 0])
    outputs["pred_boxes"].requires_grad_(True)
    losses = criterion(3)(outputs, targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    expected = torchvision.ops.sigmoid_focal_loss(outputs["pred_logits"], torch.zeros(2, 5, 3), reduction="sum")
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)  # num_boxes clamped to 1
    weighted_total(losses, WEIGHTS).backward()


def test_weights_and_arguments():
    losses = {"loss_ce": torch.tensor(1.0), "loss_ce_0": torch.tensor(2.0), "loss_bbox_enc": torch.tensor(3.0),
              "cardinality_error": torch.tensor(100.0)}
    assert weighted_total(losses, {"loss_ce": 2, "loss_bbox": 5}).item() == 2 + 4 + 15
    assert weighted_total(losses, {"loss_ce": 2, "loss_ce_0": 0, "loss_bbox": 1}).item() == 2 + 0 + 3
    with pytest.raises(KeyError, match="loss_bbox_enc"):
        weighted_total(losses, {"loss_ce": 1})
    with pytest.raises(ValueError, match="unknown weight_dict key 'loss_cls'"):
        SetCriterion(3, HungarianMatcher(), {"loss_cls": 1, **WEIGHTS})
    with pytest.raises(ValueError, match=r"no weight for \['loss_giou'\]"):
        SetCriterion(3, HungarianMatcher(), {"loss_ce": 1, "loss_bbox": 1})
    with pytest.raises(ValueError, match="losses must be"):
        SetCriterion(3, HungarianMatcher(), WEIGHTS, losses=("labels", "masks"))
    outputs, targets = make_case(torch.Generator().manual_seed(0), 1, 4, 3, [1])
    with pytest.raises(ValueError, match=r"pred_logits must be \[B, Q, 5\]"):
        criterion(5)(outputs, targets)


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        outputs, targets = make_case(torch.Generator().manual_seed(rank), 1, 6, 3, [[4], [1]][rank])
        crit = criterion(3)
        result = {"num_boxes": crit.num_boxes(targets, torch.device("cpu")),
                  "loss_bbox": crit(outputs, targets)["loss_bbox"].item()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_num_boxes_is_averaged_over_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["num_boxes"] for r in results] == [2.5, 2.5]  # (4 + 1) / 2
    for rank, result in enumerate(results):
        outputs, targets = make_case(torch.Generator().manual_seed(rank), 1, 6, 3, [[4], [1]][rank])
        single = criterion(3)(outputs, targets)["loss_bbox"].item() * len(targets[0]["labels"]) / 2.5
        assert result["loss_bbox"] == pytest.approx(single, rel=1e-6)
