"""CocoEvaluator: the 12 known stats of the COCO val2014 100-image oracle (see tests/data/coco_val2014_100/README.md),
empty and duplicate predictions, bad input, and two gloo processes."""
import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.detection.evaluator import CocoEvaluator

DATA = Path(__file__).parents[2] / "data" / "coco_val2014_100"
GT_FILE = DATA / "instances_val2014_100.json"
RESULTS_FILE = DATA / "instances_val2014_fakebbox100_results.json"
# From the README: pycocotools 2.0.11 (and faster-coco-eval's test, to 10 decimals).
EXPECTED = dict(zip(
    ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    (0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
     0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
     0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982),
))


@pytest.fixture(scope="module")
def coco_gt():
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(GT_FILE))


def oracle_predictions(dtype=torch.float64) -> dict:
    """The results file in update() form: xywh -> xyxy, grouped by image in file order; every ground-truth
    image is present (the one without detections with empty tensors)."""
    per_image = defaultdict(list)
    for det in json.loads(RESULTS_FILE.read_text()):
        per_image[det["image_id"]].append(det)
    image_ids = [image["id"] for image in json.loads(GT_FILE.read_text())["images"]]
    predictions = {}
    for image_id in image_ids:
        dets = per_image.get(image_id, [])
        xywh = torch.tensor([d["bbox"] for d in dets], dtype=dtype).reshape(-1, 4)
        predictions[image_id] = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
            "scores": torch.tensor([d["score"] for d in dets], dtype=dtype),
            "labels": torch.tensor([d["category_id"] for d in dets], dtype=torch.int64),
        }
    return predictions


def test_oracle_stats_reproduced(coco_gt, capsys):
    predictions = oracle_predictions()
    assert sum(1 for p in predictions.values() if len(p["scores"]) == 0) == 1
    evaluator = CocoEvaluator(coco_gt)
    items = list(predictions.items())
    for start in range(0, len(items), 7):  # batches, as an evaluation loop would send them
        evaluator.update(dict(items[start : start + 7]))
    stats = evaluator.compute()
    assert list(stats) == list(EXPECTED)
    assert all(type(v) is float for v in stats.values())
    for name, value in EXPECTED.items():
        assert stats[name] == pytest.approx(value, abs=1e-12), name
    assert capsys.readouterr().out == ""  # pycocotools' printout is captured...
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505" in evaluator.summary
    assert "Running per image evaluation" in evaluator.log


def test_same_as_loadres_on_the_file(coco_gt):
    """Our results object equals pycocotools' own loadRes path bit for bit (float64 boxes round-trip)."""
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCOeval(coco_gt, coco_gt.loadRes(str(RESULTS_FILE)), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    evaluator = CocoEvaluator(str(GT_FILE))
    evaluator.update(oracle_predictions())
    assert list(evaluator.compute().values()) == pytest.approx(reference.stats.tolist(), abs=1e-15)


def test_path_and_verbose(capsys):
    evaluator = CocoEvaluator(GT_FILE, verbose=True)
    evaluator.update(oracle_predictions(torch.float32))
    stats = evaluator.compute()
    assert "maxDets=100" in capsys.readouterr().out
    # float32 boxes move IoUs by ~1e-7: the stats agree to pycocotools' printed precision.
    assert stats["AP"] == pytest.approx(EXPECTED["AP"], abs=1e-3)


def test_only_updated_images_count_and_empty_predictions(coco_gt):
    predictions = oracle_predictions()
    # The one image without detections: leaving it out drops its ground truth (DETR's rule)...
    empty_id = next(i for i, p in predictions.items() if len(p["scores"]) == 0)
    evaluator = CocoEvaluator(coco_gt)
    evaluator.update({i: p for i, p in predictions.items() if i != empty_id})
    assert evaluator.compute()["AR100"] > EXPECTED["AR100"]
    # ...and an image passed with no detections counts its ground truth as missed.
    evaluator.reset()
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    evaluator.update({i: empty for i in predictions})
    stats = evaluator.compute()
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_numpy_input_and_foreign_labels(coco_gt):
    image_id = coco_gt.getImgIds()[0]
    ann = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id], iscrowd=False))[0]
    x, y, w, h = ann["bbox"]
    evaluator = CocoEvaluator(coco_gt)
    # a perfect box, plus a higher-scoring one with an id that is no category (COCOeval ignores it)
    evaluator.update({np.int64(image_id): {
        "boxes": np.array([[x, y, x + w, y + h], [0, 0, 10, 10]]), "scores": np.array([0.5, 0.9]),
        "labels": np.array([ann["category_id"], 0])}})
    assert evaluator.compute()["AP50"] > 0


def test_duplicate_image_in_one_process_is_an_error(coco_gt):
    predictions = oracle_predictions()
    image_id = next(iter(predictions))
    evaluator = CocoEvaluator(coco_gt)
    evaluator.update({image_id: predictions[image_id]})
    with pytest.raises(ValueError, match=f"image id {image_id} was already updated"):
        evaluator.update({image_id: predictions[image_id]})


@pytest.mark.parametrize("prediction, error, words", [
    ({"boxes": torch.zeros(2, 4), "scores": torch.zeros(3), "labels": torch.zeros(2)}, ValueError, "boxes [N, 4]"),
    ({"boxes": torch.zeros(1, 4), "scores": torch.zeros(1)}, ValueError, "'labels'"),
    ({"boxes": torch.full((1, 4), float("nan")), "scores": torch.zeros(1), "labels": torch.ones(1)}, ValueError, "NaN"),
    ({"boxes": [[0, 0, 1, 1]], "scores": torch.zeros(1), "labels": torch.ones(1)}, TypeError, "'boxes'"),
    ({"boxes": torch.zeros(1, 4), "scores": torch.zeros(1), "labels": torch.tensor([1.5])}, ValueError, "integer"),
])
def test_update_rejects_bad_input(coco_gt, prediction, error, words):
    image_id = coco_gt.getImgIds()[0]
    with pytest.raises(error) as info:
        CocoEvaluator(coco_gt).update({image_id: prediction})
    assert words in str(info.value)


def test_bad_ids_and_nothing_to_compute(coco_gt, tmp_path):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    with pytest.raises(ValueError, match="image id 123 is not in the ground truth"):
        CocoEvaluator(coco_gt).update({123: empty})
    with pytest.raises(TypeError, match="image ids must be ints"):
        CocoEvaluator(coco_gt).update({"abc": empty})
    with pytest.raises(ValueError, match="no image was passed"):
        CocoEvaluator(coco_gt).compute()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoEvaluator(tmp_path / "missing.json")


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        items = list(oracle_predictions().items())
        shard = items[rank::world_size]
        if rank == 1:
            shard.append(items[0])  # a padded last batch repeats rank 0's first image: kept once
        evaluator = CocoEvaluator(GT_FILE)
        for start in range(0, len(shard), 4):
            evaluator.update(dict(shard[start : start + 4]))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(evaluator.compute()))
    finally:
        dist.destroy_process_group()


def test_distributed_compute_equals_single_process(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = CocoEvaluator(GT_FILE)
    single.update(oracle_predictions())
    expected = single.compute()
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


def test_per_class_ap_equals_pycocotools_one_category_at_a_time(coco_gt):
    evaluator = CocoEvaluator(coco_gt)
    evaluator.update(oracle_predictions())
    stats = evaluator.compute()
    results = coco_gt.loadRes(str(RESULTS_FILE))
    checked = 0
    for category in sorted(coco_gt.getCatIds())[:12]:
        coco_eval = COCOeval(coco_gt, results, iouType="bbox")
        coco_eval.params.catIds = [category]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        expected = coco_eval.stats[0]
        if expected == -1:  # no ground truth of this category
            assert np.isnan(evaluator.per_class[category])
        else:
            assert evaluator.per_class[category] == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked >= 5
    valid = [v for v in evaluator.per_class.values() if not np.isnan(v)]
    assert np.mean(valid) == pytest.approx(stats["AP"], abs=1e-12)  # every category weighs the same in AP
