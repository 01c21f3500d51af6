"""DepthMetrics: hand-computed cases, crop boxes, invalid pixels, per-image averaging, a real depth map
(scikit-image's stereo pair) against an independent numpy implementation, and two gloo processes."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.depth.evaluator import METRIC_KEYS, DepthMetrics, crop_box


def metrics_of(pred, target, **kwargs) -> dict:
    metric = DepthMetrics(**{"crop": None, **kwargs})
    metric.update(np.asarray(pred, np.float64)[None], np.asarray(target, np.float64)[None])
    return metric.compute()


def test_hand_computed_linear_metrics():
    # g = 1 everywhere, so the ratio max(g/p, p/g) is p itself: 1, 1.5, 1.9, 4.
    # d1: only 1 < 1.25 -> 1/4; d2: 1, 1.5 < 1.5625 -> 2/4; d3: 1, 1.5, 1.9 < 1.953125 -> 3/4.
    # |p - g| = 0, 0.5, 0.9, 3 -> abs_rel = 4.4 / 4 = 1.1; (p - g)² = 0, 0.25, 0.81, 9 -> sum 10.06,
    # sq_rel = 10.06 / 4 = 2.515, rmse = sqrt(2.515).
    out = metrics_of([[1.0, 1.5, 1.9, 4.0]], [[1.0, 1.0, 1.0, 1.0]])
    assert out["d1"] == 0.25 and out["d2"] == 0.5 and out["d3"] == 0.75
    assert out["abs_rel"] == pytest.approx(1.1)
    assert out["sq_rel"] == pytest.approx(2.515)
    assert out["rmse"] == pytest.approx(math.sqrt(2.515))
    # e = ln p: 0, ln 1.5, ln 1.9, ln 4 (natural log); log10 uses |log10 p|.
    e = [0.0, math.log(1.5), math.log(1.9), math.log(4.0)]
    assert out["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in e) / 4))
    assert out["log10"] == pytest.approx(sum(v / math.log(10) for v in e) / 4)
    assert out["silog"] == pytest.approx(math.sqrt(sum(v * v for v in e) / 4 - 0.5 * (sum(e) / 4) ** 2))


def test_hand_computed_relative_error_divides_by_gt():
    # g = 2, 4; p = 3, 2: |p - g| / g = 0.5, 0.5 -> abs_rel 0.5; (p - g)² / g = 1/2, 4/4 -> sq_rel 0.75;
    # (p - g)² = 1, 4 -> rmse sqrt(2.5). Ratios 1.5 and 2: d1 0, d2 1/2, d3 1/2.
    out = metrics_of([[3.0, 2.0]], [[2.0, 4.0]])
    assert out["abs_rel"] == pytest.approx(0.5)
    assert out["sq_rel"] == pytest.approx(0.75)
    assert out["rmse"] == pytest.approx(math.sqrt(2.5))
    assert (out["d1"], out["d2"], out["d3"]) == (0.0, 0.5, 0.5)


def test_hand_computed_log_metrics_and_silog_convention():
    # g = 1, 1; p = 10, 0.1: e = +ln 10, -ln 10, so mean(e) = 0 and mean(e²) = ln²10:
    # rmse_log = ln 10, log10 = mean(1, 1) = 1, silog = sqrt(ln²10 - 0.5·0) = ln 10.
    out = metrics_of([[10.0, 0.1]], [[1.0, 1.0]], max_depth=20.0)
    assert out["rmse_log"] == pytest.approx(math.log(10))
    assert out["log10"] == pytest.approx(1.0)
    assert out["silog"] == pytest.approx(math.log(10))
    # p = 10, 10: e = ln 10 twice; silog = sqrt(ln²10 - 0.5·ln²10) = ln 10 / sqrt 2 (BTS's
    # 100·sqrt(mean(e²) - mean(e)²) would give 0 here: the conventions really differ). No ×100.
    out = metrics_of([[10.0, 10.0]], [[1.0, 1.0]], max_depth=20.0)
    assert out["silog"] == pytest.approx(math.log(10) / math.sqrt(2))
    assert out["rmse_log"] == pytest.approx(math.log(10))


def test_perfect_prediction():
    out = metrics_of(np.full((4, 5), 3.0), np.full((4, 5), 3.0))
    assert out == {"d1": 1.0, "d2": 1.0, "d3": 1.0, "abs_rel": 0.0, "sq_rel": 0.0, "rmse": 0.0, "rmse_log": 0.0,
                   "log10": 0.0, "silog": 0.0}


def _abs_rel_with_wrong_pixel(row: int, col: int) -> float:
    target = np.ones((1, 480, 640), np.float32)
    pred = target.copy()
    pred[0, row, col] = 5.0  # abs_rel contribution 4 / 1 if the pixel is inside the crop
    metric = DepthMetrics()  # crop="eigen"
    metric.update(pred, target)
    return metric.compute()["abs_rel"]


def test_eigen_crop_is_rows_45_to_470_and_cols_41_to_600():
    assert crop_box("eigen", 480, 640) == (45, 471, 41, 601)
    inside = 4.0 / (426 * 560)  # 471 - 45 = 426 rows, 601 - 41 = 560 columns
    for row, col in ((45, 41), (470, 600), (45, 600), (470, 41), (200, 300)):
        assert _abs_rel_with_wrong_pixel(row, col) == pytest.approx(inside), (row, col)
    for row, col in ((44, 41), (471, 41), (45, 40), (45, 601), (0, 0), (479, 639)):
        assert _abs_rel_with_wrong_pixel(row, col) == 0.0, (row, col)


def test_eigen_crop_needs_nyu_size():
    metric = DepthMetrics(crop="eigen")
    with pytest.raises(ValueError, match="480x640"):
        metric.update(np.ones((1, 240, 320)), np.ones((1, 240, 320)))


def test_garg_crop_fractions_of_the_target_size():
    # KITTI 375x1242: rows int(0.40810811·375) = int(153.04) = 153 .. int(371.96) = 371,
    # cols int(0.03594771·1242) = int(44.65) = 44 .. int(1197.35) = 1197.
    assert crop_box("garg", 375, 1242) == (153, 371, 44, 1197)
    assert crop_box(None, 375, 1242) == (0, 375, 0, 1242)
    target = np.ones((1, 375, 1242))
    pred = np.full_like(target, 2.0)
    pred[0, 153:371, 44:1197] = 1.0  # only the outside is wrong
    metric = DepthMetrics(crop="garg", max_depth=80.0)
    metric.update(pred, target)
    assert metric.compute()["abs_rel"] == 0.0
    pred[0, 370, 1196] = 3.0  # the last pixel inside
    metric.reset()
    metric.update(pred, target)
    assert metric.compute()["abs_rel"] == pytest.approx(2.0 / (218 * 1153))


def test_invalid_ground_truth_is_strictly_outside_the_range():
    # Only the last pixel (g = 2) is valid: 0, min_depth, max_depth, NaN, inf and negative are not.
    target = [[0.0, 1e-3, 10.0, math.nan, math.inf, -1.0, 2.0]]
    pred = [[7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 3.0]]
    out = metrics_of(pred, target)
    assert out["abs_rel"] == pytest.approx(0.5)  # |3 - 2| / 2
    assert out["rmse"] == pytest.approx(1.0)


def test_predictions_are_sanitised_then_clamped():
    # g = 5 everywhere. inf -> max_depth 10 (abs_rel 1); nan -> min_depth 1e-3; -inf -> max_depth as in
    # GLPDepth's pred[isinf] = max; 100 -> clamped to 10; -3 -> clamped to 1e-3.
    for value, expected in ((math.inf, 10.0), (math.nan, 1e-3), (-math.inf, 10.0), (100.0, 10.0), (-3.0, 1e-3)):
        out = metrics_of([[value]], [[5.0]])
        assert out["abs_rel"] == pytest.approx(abs(expected - 5.0) / 5.0), value
        assert all(math.isfinite(v) for v in out.values()), value


def test_metrics_are_averaged_per_image_not_pooled():
    # Image A: 1 valid pixel, abs_rel 1 (p = 2, g = 1); image B: 3 valid pixels, all exact.
    # Per image: (1 + 0) / 2 = 0.5. Pooled over the 4 pixels it would be 1 / 4 = 0.25.
    target = np.array([[[1.0, 0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 0.0]]])
    pred = np.array([[[2.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]])
    metric = DepthMetrics(crop=None)
    metric.update(pred, target)
    assert metric.compute()["abs_rel"] == pytest.approx(0.5)
    assert metric.num_images == 2


def test_images_without_valid_pixels_are_skipped_and_counted():
    metric = DepthMetrics(crop=None)
    metric.update(np.ones((2, 1, 3, 3)), np.stack([np.zeros((1, 3, 3)), np.full((1, 3, 3), 2.0)]))
    with pytest.warns(UserWarning, match="1 of 2 images had no valid"):
        out = metric.compute()
    assert out["abs_rel"] == pytest.approx(0.5)  # only the second image: |1 - 2| / 2
    assert (metric.num_images, metric.num_skipped, metric.counts) == (1, 1, {"images": 1, "skipped": 1})
    metric.reset()
    assert metric.num_skipped == 0 and metric.counts is None
    metric.update(np.ones((1, 3, 3)), np.zeros((1, 3, 3)))
    with pytest.warns(UserWarning):
        assert all(math.isnan(v) for v in metric.compute().values())


def test_empty_metric_is_nan():
    out = DepthMetrics().compute()
    assert list(out) == list(METRIC_KEYS) and all(math.isnan(v) for v in out.values())


def test_layouts_types_and_accumulation_agree():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.5, 9.0, (4, 6, 7)).astype(np.float32)
    target[rng.random(target.shape) < 0.2] = 0
    pred = (target * rng.uniform(0.7, 1.4, target.shape) + 0.1).astype(np.float32)
    one = DepthMetrics(crop=None)
    one.update(pred, target)
    expected = one.compute()
    split = DepthMetrics(crop=None)
    split.update(torch.from_numpy(pred[:1, None]), torch.from_numpy(target[:1]))  # [B,1,H,W] with [B,H,W]
    split.update(pred[1:].astype(np.float64)[:, None], target[1:][:, None])
    assert split.compute() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pred, target, error, words", [
    (np.ones((1, 4, 4), np.int64), np.ones((1, 4, 4)), TypeError, "floating-point"),
    (np.ones((1, 4, 4)), np.ones((1, 4, 4), np.uint16), TypeError, "uint16"),
    (torch.ones(1, 4, 4, dtype=torch.int32), np.ones((1, 4, 4)), TypeError, "torch dtype"),
    ([[1.0]], np.ones((1, 4, 4)), TypeError, "list"),
    (np.ones((1, 4, 4)), np.ones((1, 8, 8)), ValueError, "resize the prediction"),
    (np.ones((4, 4)), np.ones((4, 4)), ValueError, r"\[B, 1, H, W\]"),
    (np.ones((1, 2, 4, 4)), np.ones((1, 2, 4, 4)), ValueError, r"\[B, H, W\]"),
    (np.ones((2, 4, 4)), np.ones((1, 4, 4)), ValueError, "batch"),
])
def test_update_rejects_bad_input(pred, target, error, words):
    with pytest.raises(error, match=words):
        DepthMetrics(crop=None).update(pred, target)


@pytest.mark.parametrize("kwargs, word", [
    ({"min_depth": 0.0}, "0 < min_depth"), ({"min_depth": 5.0, "max_depth": 2.0}, "min_depth < max_depth"),
    ({"max_depth": math.inf}, "finite"), ({"crop": "kb"}, "crop"), ({"max_depth": "10"}, "finite"),
])
def test_constructor_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        DepthMetrics(**kwargs)


# ---------------------------------------------------------------------------------------------------
# A real depth map: scikit-image's Middlebury motorcycle pair with its ground-truth disparity.


def reference_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict:
    """The metrics of one image written directly from the formulas (numpy, float64)."""
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "d1": np.mean(thresh < 1.25), "d2": np.mean(thresh < 1.25**2), "d3": np.mean(thresh < 1.25**3),
        "abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)), "rmse_log": np.sqrt(np.mean(err**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "silog": np.sqrt(np.mean(err**2) - 0.5 * np.mean(err) ** 2),
    }


@pytest.fixture(scope="module")
def motorcycle_depth() -> np.ndarray:
    """``float32 [500, 741]`` metres in 2..5 m, 0 where the disparity is unknown (inf) or non-positive.

    Depth is inverse disparity up to an affine map: 1/Z = 1/5 + (d - d_min) / (d_max - d_min) · (1/2 - 1/5),
    so the largest disparity is 2 m and the smallest 5 m."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) is needed for the real depth map")
    disparity = data.stereo_motorcycle()[2].astype(np.float64)
    known = np.isfinite(disparity) & (disparity > 0)
    low, high = disparity[known].min(), disparity[known].max()
    inverse = 1 / 5 + (disparity - low) / (high - low) * (1 / 2 - 1 / 5)
    depth = np.where(known, 1 / np.where(known, inverse, 1.0), 0.0).astype(np.float32)
    assert 0.05 < (~known).mean() < 0.2 and depth[known].min() == pytest.approx(2.0)
    return depth


def _perturbed(depth: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.normal(0.05, 0.15, depth.shape))  # multiplicative, biased: silog != rmse_log
    pred = depth * noise
    pred[depth == 0] = rng.uniform(1, 6, int((depth == 0).sum()))
    pred[300:305, 300:305] = np.nan  # sanitised to min_depth
    return pred.astype(np.float32)


@pytest.mark.parametrize("crop", [None, "garg"])
def test_real_depth_map_against_numpy_reference(motorcycle_depth, crop):
    gt = motorcycle_depth
    preds = [_perturbed(gt, seed) for seed in range(3)]
    preds[1][100:110, 200:400] = np.inf  # inside the garg box too
    metric = DepthMetrics(min_depth=1e-3, max_depth=4.5, crop=crop)  # a cap that excludes the far wall
    for pred in preds:
        metric.update(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
    result = metric.compute()

    top, bottom, left, right = crop_box(crop, *gt.shape)
    box = np.zeros(gt.shape, bool)
    box[top:bottom, left:right] = True
    valid = (gt > 1e-3) & (gt < 4.5) & box
    per_image = []
    for pred in preds:
        pred = pred.astype(np.float64)  # in float32, clip would round min_depth to float32(1e-3)
        pred = np.where(np.isinf(pred), 4.5, pred)
        pred = np.clip(np.where(np.isnan(pred), 1e-3, pred), 1e-3, 4.5)
        per_image.append(reference_metrics(pred, gt, valid))
    expected = {key: np.mean([m[key] for m in per_image]) for key in METRIC_KEYS}
    assert result == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0.3 < result["d1"] < 0.95 and result["silog"] != pytest.approx(result["rmse_log"])


# ---------------------------------------------------------------------------------------------------
# Two processes


def _distributed_data():
    rng = np.random.default_rng(3)
    targets = [rng.uniform(0.5, 9.5, (2, 1, 480, 640)).astype(np.float32) for _ in range(3)]
    targets[1][1] = 0  # an image without valid pixels, skipped on rank 1
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 0
    preds = [(t + rng.normal(0, 0.5, t.shape)).astype(np.float32) for t in targets]
    return preds, targets


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metric = DepthMetrics()
        for p, t in list(zip(*_distributed_data()))[rank::world_size]:  # rank 0: batches 0 and 2, rank 1: batch 1
            metric.update(torch.from_numpy(p), torch.from_numpy(t))
        local = (metric.num_images, metric.num_skipped)
        result = metric.compute()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": result, "counts": metric.counts,
                                                                 "local": local}))
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:DepthMetrics")
def test_distributed_compute_equals_single_process(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = DepthMetrics()
    for p, t in zip(*_distributed_data()):
        single.update(p, t)
    expected = single.compute()
    outputs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for out in outputs:
        assert out["metrics"] == pytest.approx(expected, rel=1e-12)
        assert out["counts"] == {"images": 5, "skipped": 1}
    assert [out["local"] for out in outputs] == [[4, 0], [1, 1]]
