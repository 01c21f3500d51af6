"""PQ against cocodataset/panopticapi's pq_compute: golden values it computed on 52 cases (tests/data/
panoptic_pq_golden/README.md), hand-computed cases, the in-memory evaluator, the submission writer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.panoptic.evaluator import (
    METRIC_NAMES, PanopticPredictionWriter, PanopticQuality, id2rgb, metrics_table, pq_compute, read_panoptic_png,
    rgb2id,
)
from tests.tasks.panoptic.make_pq_cases import HAND_CATEGORIES, error_cases, fingerprint, write_cases

GOLDEN = json.loads((Path(__file__).resolve().parents[2] / "data" / "panoptic_pq_golden" / "golden.json").read_text())
TOLERANCE = 1e-12  # sums of IoUs are added in another order than panopticapi's worker processes add them


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("pq_cases"))


def assert_results_equal(ours: dict, reference: dict) -> None:
    assert set(ours) == {"All", "Things", "Stuff", "per_class"}
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"]
        for key in ("pq", "sq", "rq"):
            assert abs(ours[group][key] - reference[group][key]) <= TOLERANCE, (group, key)
    assert sorted(map(str, ours["per_class"])) == sorted(reference["per_class"])
    for category_id, values in ours["per_class"].items():
        assert isinstance(category_id, int)
        for key in ("pq", "sq", "rq"):
            assert abs(values[key] - reference["per_class"][str(category_id)][key]) <= TOLERANCE, (category_id, key)


def test_golden_file_covers_every_case(cases):
    assert set(cases) == set(GOLDEN["cases"])
    changed = [name for name, paths in cases.items() if fingerprint(paths) != GOLDEN["fingerprints"][name]]
    assert not changed, f"the cases are no longer those panopticapi evaluated (regenerate golden.json): {changed}"
    assert len(cases) >= 50
    assert sum(name.startswith("sample/") for name in cases) >= 35


def test_pq_compute_equals_panopticapi_on_every_case(cases):
    for name, paths in cases.items():
        assert_results_equal(pq_compute(*paths), GOLDEN["cases"][name])


def test_in_memory_evaluator_equals_pq_compute(cases):
    for name, (gt_json, pred_json, gt_folder, pred_folder) in cases.items():
        gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
        metric = PanopticQuality(gt["categories"])
        predictions = {a["image_id"]: a for a in pred["annotations"]}
        for ann in gt["annotations"]:
            p = predictions[ann["image_id"]]
            metric.update(torch.from_numpy(read_panoptic_png(gt_folder / ann["file_name"])), ann["segments_info"],
                          read_panoptic_png(pred_folder / p["file_name"]).astype(np.int32), p["segments_info"])
        assert_results_equal(metric.results(), GOLDEN["cases"][name])
        flat = metric.compute()
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            assert flat["PQ" + suffix] == pytest.approx(GOLDEN["cases"][name][group]["pq"], abs=TOLERANCE)


def test_errors_where_panopticapi_raises(tmp_path):
    expected = {
        "png_id_not_in_json": ["image 1", "segment id 1", "not in its segments_info"],
        "json_id_not_in_png": ["image 1", "[77]", "not in its PNG"],
        "unknown_category": ["image 1", "segment id 2", "unknown category_id 8"],
        "missing_image": ["no prediction", "id 2", "other.png"],
    }
    assert set(GOLDEN["errors"]) == set(expected)  # panopticapi failed on each of them too
    for name, paths in error_cases(tmp_path).items():
        with pytest.raises(ValueError) as info:
            pq_compute(*paths)
        for words in expected[name]:
            assert words in str(info.value)


def _rect_map(shape, *rects, base=0):
    ids = np.full(shape, base, np.int64)
    for value, (y0, y1, x0, x1) in rects:
        ids[y0:y1, x0:x1] = value
    return ids


def test_hand_computed_case():
    # 10x10: ground-truth thing 1 (cat 1) on rows 0-3 (40 px), VOID row 4 (10 px), stuff 2 (cat 7) rows 5-9 (50 px).
    gt = _rect_map((10, 10), (1, (0, 4, 0, 10)), (0, (4, 5, 0, 10)), base=2)
    gt_segments = [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 40},
                   {"id": 2, "category_id": 7, "iscrowd": 0, "area": 50}]
    # prediction: thing 5 (cat 1) on rows 0-4 (50 px, 10 on VOID): IoU = 40 / (50 + 40 - 40 - 10) = 1;
    # stuff 6 (cat 7) on rows 6-9 (40 px): IoU = 40 / 50 = 0.8; row 5 -> thing 9 (cat 3): 10 px, a false positive.
    pred = _rect_map((10, 10), (5, (0, 5, 0, 10)), (9, (5, 6, 0, 10)), base=6)
    pred_segments = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 7}, {"id": 9, "category_id": 3}]
    metric = PanopticQuality(HAND_CATEGORIES)
    metric.update(gt, gt_segments, pred, pred_segments)
    results = metric.results()
    assert results["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    assert results["per_class"][3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # TP 0, FP 1
    assert results["per_class"][7] == pytest.approx({"pq": 0.8, "sq": 0.8, "rq": 1.0})
    assert results["per_class"][9] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # absent: left out of the means
    assert results["Things"] == pytest.approx({"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2})
    assert results["Stuff"] == pytest.approx({"pq": 0.8, "sq": 0.8, "rq": 1.0, "n": 1})
    assert results["All"] == pytest.approx({"pq": 1.8 / 3, "sq": 1.8 / 3, "rq": 2 / 3, "n": 3})
    flat = metric.compute()
    assert set(METRIC_NAMES) <= set(flat)
    assert flat["PQ_per_class"][:3] == pytest.approx([1.0, 0.0, 0.8]) and math.isnan(flat["PQ_per_class"][3])
    table = metrics_table(flat, ["a", "b", "s", "t"], [True, True, False, False])
    assert "100.00" in table and "80.00" in table and "Things" in table


def test_crowd_rule_by_hand():
    # ground truth: thing 1 (cat 1) on columns 0-4, crowd 2 (cat 1) on columns 5-9 of a 10x10 image.
    gt = _rect_map((10, 10), (1, (0, 10, 0, 5)), base=2)
    gt_segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 1}]
    categories = [{"id": 1, "isthing": 1}, {"id": 3, "isthing": 1}]
    # a prediction on columns `first`-9: its crowd share is 5 / (10 - first); IoU with the thing <= 0.5
    for category, first, fp in ((1, 1, 0), (1, 0, 1), (3, 1, 1)):  # 5/9 > 0.5 ignored; 5/10 is not; other class
        pred = _rect_map((10, 10), (7, (0, 10, first, 10)))
        metric = PanopticQuality(categories)
        metric.update(gt, gt_segments, pred, [{"id": 7, "category_id": category}])
        tp, fps, fn, _ = metric.stats
        assert (tp.sum(), fps.sum(), fn.sum()) == (0, fp, 1), (category, first)


def test_group_without_classes_is_nan_where_panopticapi_divides_by_zero():
    metric = PanopticQuality([{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}])
    gt = np.ones((4, 4), np.int64)
    metric.update(gt, [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 16}], gt, [{"id": 1, "category_id": 1}])
    flat = metric.compute()
    assert flat["PQ"] == 1.0 and flat["PQ_th"] == 1.0 and math.isnan(flat["PQ_st"])


def test_update_rejects_bad_input():
    metric = PanopticQuality(HAND_CATEGORIES)
    gt = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match="differ in size"):
        metric.update(gt, [], np.zeros((4, 5), np.int64), [])
    with pytest.raises(TypeError, match="integer"):
        metric.update(gt.astype(np.float32), [], gt, [])
    with pytest.raises(ValueError, match="image 12.*segment id 3"):
        metric.update(gt, [], gt + 3, [], image_id=12)
    with pytest.raises(ValueError, match="unknown category_id 5"):
        metric.update(gt, [], gt + 3, [{"id": 3, "category_id": 5}])
    assert metric.stats.sum() == 0  # a refused image leaves the sums as they were
    with pytest.raises(ValueError, match="categories"):
        PanopticQuality([])


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 123456]])
    assert (rgb2id(id2rgb(ids)) == ids).all()


def test_writer_output_is_what_pq_compute_reads(tmp_path, cases):
    gt_json, pred_json, gt_folder, pred_folder = cases["sample/split_1"]
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    writer = PanopticPredictionWriter(tmp_path / "out", gt["categories"])
    for ann in pred["annotations"]:
        ids = read_panoptic_png(pred_folder / ann["file_name"])
        segments = [{"id": s["id"], "category_id": s["category_id"], "isthing": True, "score": 0.9}
                    for s in ann["segments_info"]] + [{"id": 999_999, "category_id": 1}]  # no pixel: left out
        writer.add(ann["image_id"], ann["file_name"], torch.from_numpy(ids), segments)
    path = writer.finish()
    written = json.loads(path.read_text())
    assert [a["image_id"] for a in written["annotations"]] == sorted(a["image_id"] for a in pred["annotations"])
    for ann, reference in zip(written["annotations"], sorted(pred["annotations"], key=lambda a: a["image_id"])):
        assert ann["segments_info"] == reference["segments_info"]  # id, category, iscrowd 0, area, bbox
    assert_results_equal(pq_compute(gt_json, path, gt_folder), GOLDEN["cases"]["sample/split_1"])
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    with pytest.raises(ValueError, match="not in its segments"):
        writer.add(1, "x.png", np.ones((3, 3), np.int64), [])
    with pytest.raises(ValueError, match=r"category ids \[999\]"):
        writer.add(1, "x.png", np.ones((3, 3), np.int64), [{"id": 1, "category_id": 999}])


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str, case) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        gt_json, pred_json, gt_folder, pred_folder = case
        gt, pred = json.loads(Path(gt_json).read_text()), json.loads(Path(pred_json).read_text())
        metric = PanopticQuality(gt["categories"])
        writer = PanopticPredictionWriter(Path(out_dir) / "written", gt["categories"])
        for ann, p in list(zip(gt["annotations"], pred["annotations"]))[rank::world_size]:
            ids = read_panoptic_png(Path(pred_folder) / p["file_name"])
            metric.update(read_panoptic_png(Path(gt_folder) / ann["file_name"]), ann["segments_info"], ids,
                          p["segments_info"])
            writer.add(p["image_id"], p["file_name"], ids, p["segments_info"])
        writer.finish()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metric.results(), default=str))
    finally:
        dist.destroy_process_group()


def test_distributed_sums_equal_single_process(tmp_path, cases):
    case = tuple(map(str, cases["sample/fp_on_void_2"]))
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path), case), nprocs=2, join=True)
    reference = GOLDEN["cases"]["sample/fp_on_void_2"]
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        results["per_class"] = {int(k): v for k, v in results["per_class"].items()}
        assert_results_equal(results, reference)
    written = tmp_path / "written" / "panoptic_predictions.json"
    assert_results_equal(pq_compute(case[0], written, case[2]), reference)
