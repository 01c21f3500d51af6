"""MeanIoU against hand-computed numbers, an independent numpy port of mmseg's formulas, real ADE20K masks,
and two gloo processes."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.segmentation.datasets import ADE20K
from tasks.segmentation.evaluator import MeanIoU

ADE_ROOT = Path(__file__).resolve().parents[2] / "data" / "ade20k_sample"


def reference_metrics(preds, targets, num_classes, ignore_index=255):
    """mmseg's ``intersect_and_union`` / ``total_intersect_and_union`` redone with numpy histograms.

    mmseg 0.x bins with ``np.histogram(bins=np.arange(K + 1))``, whose last bin is closed, so a prediction
    equal to K lands in class K-1; mmseg 1.x (``torch.histc``) and we drop it. Out-of-range predictions
    are therefore removed before binning here, which is the 1.x behaviour.
    """
    bins = np.arange(num_classes + 1)
    tot = {k: np.zeros(num_classes) for k in ("intersect", "pred", "label")}
    for pred, target in zip(preds, targets):
        pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
        in_range = (pred >= 0) & (pred < num_classes)
        tot["intersect"] += np.histogram(pred[pred == target], bins=bins)[0]
        tot["pred"] += np.histogram(pred[in_range], bins=bins)[0]
        tot["label"] += np.histogram(target, bins=bins)[0]
    union = tot["pred"] + tot["label"] - tot["intersect"]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = tot["intersect"] / union, tot["intersect"] / tot["label"]
    return {"mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc), "aAcc": tot["intersect"].sum() / tot["label"].sum(),
            "IoU": iou, "Acc": acc}


def assert_metrics_equal(ours: dict, expected: dict, tol: float = 1e-12) -> None:
    for key in ("mIoU", "mAcc", "aAcc"):
        assert isinstance(ours[key], float), key
        assert ours[key] == pytest.approx(expected[key], abs=tol, nan_ok=True), key
    for key in ("IoU", "Acc"):
        assert isinstance(ours[key], list) and all(isinstance(v, float) for v in ours[key]), key
        np.testing.assert_allclose(ours[key], expected[key], rtol=0, atol=tol, err_msg=key)  # NaN == NaN here


def test_hand_computed_case():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    metric = MeanIoU(num_classes=3)
    metric.update(pred, target)
    # The ignored pixel (gt 255, pred 2) drops out. (gt, pred) pairs left: (0,0) (0,1) (1,1) (1,1) (2,0).
    # Confusion (rows gt): [[1,1,0], [0,2,0], [1,0,0]].
    # intersect = [1, 2, 0]; area_label = [2, 2, 1]; area_pred = [2, 3, 0]
    # union = [2+2-1, 3+2-2, 0+1-0] = [3, 3, 1]
    # IoU = [1/3, 2/3, 0/1]; Acc = [1/2, 2/2, 0/1]; aAcc = (1+2+0)/(2+2+1) = 3/5
    # mIoU = (1/3 + 2/3 + 0)/3 = 1/3; mAcc = (1/2 + 1 + 0)/3 = 1/2
    assert metric.confusion_matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metric.confusion_matrix.dtype == torch.int64
    assert_metrics_equal(metric.compute(), {
        "IoU": [1 / 3, 2 / 3, 0.0], "Acc": [0.5, 1.0, 0.0], "aAcc": 0.6, "mIoU": 1 / 3, "mAcc": 0.5,
    })


def test_absent_classes_are_nan_and_excluded():
    metric = MeanIoU(num_classes=4)
    # Class 0 only in the target, class 1 only in the prediction, classes 2 and 3 nowhere.
    metric.update(np.array([[0, 1, 0, 0]]), np.array([[0, 0, 0, 0]]))
    # intersect = [3,0,0,0]; label = [4,0,0,0]; pred = [3,1,0,0]; union = [4,1,0,0]
    # IoU = [3/4, 0/1, 0/0, 0/0]; Acc = [3/4, 0/0, 0/0, 0/0]
    nan = math.nan
    assert_metrics_equal(metric.compute(), {
        "IoU": [0.75, 0.0, nan, nan], "Acc": [0.75, nan, nan, nan], "aAcc": 0.75, "mIoU": 0.375, "mAcc": 0.75,
    })


def test_ignored_pixels_drop_out_whatever_the_prediction():
    target = torch.tensor([[0, 1], [255, 255]])
    metric = MeanIoU(num_classes=2)
    metric.update(torch.tensor([[0, 1], [1, 0]]), target)
    first = metric.compute()
    metric.reset()
    metric.update(torch.tensor([[0, 1], [0, 1]]), target)
    assert metric.compute() == first
    assert first["mIoU"] == first["aAcc"] == 1.0


def test_custom_ignore_index():
    metric = MeanIoU(num_classes=2, ignore_index=-1)
    metric.update(torch.tensor([[1, 0, 0]]), torch.tensor([[1, -1, 0]]))
    assert metric.compute()["aAcc"] == 1.0


def test_out_of_range_predictions_count_for_no_class():
    metric = MeanIoU(num_classes=2)
    metric.update(torch.tensor([[0, 7, -1, 1, 255]]), torch.tensor([[0, 0, 1, 1, 255]]))
    # The last pixel is ignored. (0,0) hit; (gt 0, pred 7) and (gt 1, pred -1) are misses counted in
    # area_label only; (1,1) hit. intersect = [1,1]; label = [2,2]; pred = [1,1]; union = [2,2].
    assert_metrics_equal(metric.compute(), {"IoU": [0.5, 0.5], "Acc": [0.5, 0.5], "aAcc": 0.5, "mIoU": 0.5, "mAcc": 0.5})
    assert metric.invalid_predictions.tolist() == [1, 1]
    assert metric.confusion_matrix.tolist() == [[1, 0], [0, 1]]


def test_accumulating_updates_equals_one_big_update():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 6, (2, 9, 11)) for _ in range(4)]
    targets = [np.where(rng.random((2, 9, 11)) < 0.1, 255, rng.integers(0, 6, (2, 9, 11))) for _ in range(4)]
    several, one = MeanIoU(6), MeanIoU(6)
    for p, t in zip(preds, targets):
        several.update(torch.from_numpy(p), torch.from_numpy(t))
    one.update(np.concatenate(preds), np.concatenate(targets))
    assert several.compute() == one.compute()
    assert torch.equal(several.confusion_matrix, one.confusion_matrix)


def test_matches_numpy_reference_on_random_data():
    rng = np.random.default_rng(1)
    num_classes = 12
    preds, targets = [], []
    for _ in range(5):
        target = rng.integers(0, num_classes, (37, 23))
        target[rng.random(target.shape) < 0.15] = 255
        pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(-2, num_classes + 3, target.shape))
        pred[rng.random(target.shape) < 0.02] = 255
        preds.append(pred.astype(np.int64))
        targets.append(target.astype(np.uint8))
    metric = MeanIoU(num_classes)
    for p, t in zip(preds, targets):
        metric.update(p, t)
    assert_metrics_equal(metric.compute(), reference_metrics(preds, targets, num_classes))
    # The legacy identity of mmseg's tests: the confusion matrix alone gives the same numbers when every
    # prediction is in range.
    clipped = [np.clip(p, 0, num_classes - 1) for p in preds]
    metric.reset()
    for p, t in zip(clipped, targets):
        metric.update(torch.from_numpy(p), torch.from_numpy(t))
    m = metric.confusion_matrix.double()
    diag = m.diagonal()
    np.testing.assert_allclose(metric.compute()["IoU"], (diag / (m.sum(0) + m.sum(1) - diag)).numpy())


def _perturbed(mask: np.ndarray) -> np.ndarray:
    """A deterministic fake prediction: the ground truth shifted 3 px right, every 5th 16×16 tile relabelled,
    ignored pixels given class 0."""
    pred = np.roll(mask.astype(np.int64), 3, axis=1)
    ys, xs = np.indices(mask.shape)
    tiles = ((ys // 16 + xs // 16) % 5) == 0
    pred[tiles] = (pred[tiles] + 1) % 150
    pred[pred == 255] = 0
    return pred


def test_real_ade20k_masks_against_reference():
    dataset = ADE20K(ADE_ROOT, split="validation")
    targets = [dataset.read(i)["mask"] for i in range(len(dataset))]
    preds = [_perturbed(t) for t in targets]
    metric = MeanIoU(150)
    for p, t in zip(preds, targets):
        metric.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    ours = metric.compute()
    assert_metrics_equal(ours, reference_metrics(preds, targets, 150))
    assert 0.5 < ours["aAcc"] < 1.0
    assert sum(not math.isnan(v) for v in ours["IoU"]) < 150  # three images miss most classes: NaN, excluded


@pytest.mark.parametrize(
    "pred, target, error, words",
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), ValueError, ["pred shape", "(2, 3)", "(3, 2)"]),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), TypeError, ["pred", "float32"]),
        (torch.zeros(2, 3, dtype=torch.long), np.zeros((2, 3), dtype=np.float64), TypeError, ["target", "float64"]),
        (torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long), TypeError, ["pred", "bool"]),
        ([[0, 1]], torch.zeros(1, 2, dtype=torch.long), TypeError, ["pred", "list"]),
        (torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), ValueError, ["[B, H, W]", "(5,)"]),
        (torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 1], [3, 255]]), ValueError, ["label 3", "num_classes=3", "reduce_zero_label"]),
    ],
)
def test_update_rejects_bad_input(pred, target, error, words):
    with pytest.raises(error) as info:
        MeanIoU(3).update(pred, target)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"num_classes": 0}, ValueError, "num_classes"),
    ({"num_classes": 2.0}, ValueError, "num_classes"),
    ({"num_classes": 3, "ignore_index": 1}, ValueError, "ignore_index=1"),
    ({"num_classes": 3, "ignore_index": None}, TypeError, "ignore_index"),
])
def test_constructor_rejects_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        MeanIoU(**kwargs)


def test_empty_metric_is_nan_and_reset_clears():
    metric = MeanIoU(2)
    assert math.isnan(metric.compute()["mIoU"]) and math.isnan(metric.compute()["aAcc"])
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert metric.compute()["mIoU"] == 1.0
    metric.reset()
    assert metric.confusion_matrix.sum() == 0


def _distributed_data():
    rng = np.random.default_rng(7)
    targets = [rng.integers(0, 5, (1, 16, 12)) for _ in range(5)]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    preds = [np.where(rng.random(t.shape) < 0.5, t % 5, rng.integers(0, 7, t.shape)) for t in targets]
    return preds, targets


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        preds, targets = _distributed_data()
        metric = MeanIoU(5)
        for p, t in list(zip(preds, targets))[rank::world_size]:  # rank 0 gets 3 images, rank 1 gets 2
            metric.update(torch.from_numpy(p), torch.from_numpy(t))
        local = metric.confusion_matrix.tolist()
        result = metric.compute()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": result, "local": local}))
    finally:
        dist.destroy_process_group()


def test_distributed_compute_equals_single_process(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = MeanIoU(5)
    for p, t in zip(*_distributed_data()):
        single.update(p, t)
    expected = single.compute()
    outputs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for out in outputs:
        assert_metrics_equal(out["metrics"], expected)
    # compute() reduced a copy: each rank's own counts are untouched, and they add up to the total.
    assert (np.array(outputs[0]["local"]) + np.array(outputs[1]["local"])).tolist() == single.confusion_matrix.tolist()
