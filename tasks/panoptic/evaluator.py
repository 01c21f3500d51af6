"""Panoptic quality (PQ), with the rules of cocodataset/panopticapi's ``pq_compute``, from files or in memory.

``pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None)`` reads COCO panoptic files (PNG
segment ids ``R + 256·G + 256²·B``, 0 = VOID) and returns what panopticapi returns::

    {"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id: {"pq", "sq", "rq"}}}

``PanopticQuality(categories)`` is the engine's evaluator: ``update`` takes one image's maps and segment lists in
memory (no PNG is written), its per-category sums (``stats``: TP, FP, FN, ΣIoU) are one float64 ``[4, K]`` array
that ``results()`` and ``compute()`` sum over processes (``all_reduce_sum``), and ``results()`` gives the structure above, ``compute()`` the flat
``metrics`` (``PQ``, ``SQ``, ``RQ``, ``PQ_th``, ... as fractions). Both paths run one per-image rule
(``image_stats``), panopticapi's, step for step:

- prediction areas are pixel counts of the PNG; ground-truth areas are the json's ``area`` (the pixel count when a
  segment has none, where panopticapi would fail); every non-VOID id of a prediction PNG must be in its
  ``segments_info`` and the reverse, and its category must be known (a ``ValueError`` naming the image and id;
  panopticapi raises ``KeyError``). Ground truth is taken as given, as panopticapi does (``check.py`` checks it).
- a ground-truth and a predicted segment of the same category, the ground truth not crowd, match when
  ``IoU = |g ∩ p| / (|p| + |g| − |g ∩ p| − |p ∩ VOID|) > 0.5``; the IoU is added in ``(gt id, pred id)`` order.
- unmatched non-crowd ground truth is a false negative; an unmatched prediction is a false positive unless more
  than half of it lies on VOID plus the crowd segment of its category (the last crowd segment of that category in
  ``segments_info`` order, as panopticapi's dictionary keeps it).
- per class ``PQ = ΣIoU / (TP + FP/2 + FN/2)``, ``SQ = ΣIoU / TP`` (0 when TP = 0), ``RQ = TP / (TP + FP/2 +
  FN/2)``; All / Things / Stuff are unweighted means over the classes with TP + FP + FN > 0. One deliberate
  difference: where no class of a group occurs, panopticapi divides by zero; here that group is NaN.

Float sums are in panopticapi's order within an image; across images (and panopticapi's worker processes) the
order of additions may differ, so ΣIoU can differ in the last bit (at most 2.2e-16 on the 52 golden cases).
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image

from tasks.common.distributed import all_gather_objects, all_reduce_sum, barrier, is_distributed
from tasks.common.images import read_bytes

OFFSET = 256 * 256 * 256
VOID = 0
METRIC_NAMES = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
_GROUPS = (("All", None), ("Things", True), ("Stuff", False))
_TP, _FP, _FN, _IOU = range(4)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` RGB -> ``int64 [H, W]`` ids ``R + 256·G + 256²·B``."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` ids in ``0 .. 256³-1`` -> ``uint8 [H, W, 3]`` RGB (the inverse of ``rgb2id``)."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: Union[str, Path]) -> np.ndarray:
    """The segment ids of a COCO panoptic PNG, ``int64 [H, W]``; a file that is not RGB is a ``ValueError``."""
    data = read_bytes(path, "panoptic PNG")
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.array(image, dtype=np.uint32)
    except OSError as err:
        raise ValueError(f"cannot read panoptic PNG {path}: {err}") from err
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"panoptic PNG {path} has shape {rgb.shape}; expected [H, W, 3] RGB ids (R + 256·G + 256²·B)")
    return rgb2id(rgb[..., :3])


def _category_table(categories) -> dict[int, bool]:
    """``{category id: isthing}`` in the given order (a later duplicate id overrides, as in a dict)."""
    if isinstance(categories, Mapping):
        categories = list(categories.values())
    if not isinstance(categories, (list, tuple)) or not categories:
        raise ValueError(f"categories must be a non-empty list of {{'id', 'isthing'}} dicts, got {categories!r:.200}")
    table: dict[int, bool] = {}
    for category in categories:
        if not isinstance(category, Mapping) or "id" not in category or "isthing" not in category:
            raise ValueError(f"each category must be a dict with 'id' and 'isthing', got {category!r:.200}")
        table[int(category["id"])] = category["isthing"] == 1
    return table


def _as_id_map(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray) or value.ndim != 2 or not np.issubdtype(value.dtype, np.integer):
        got = f"{type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}"
        raise TypeError(f"{name} must be an integer [H, W] segment-id map (numpy or torch), got {got}")
    value = value.astype(np.int64)
    if value.size and (value.min() < 0 or value.max() >= OFFSET):
        raise ValueError(f"{name} holds ids outside 0..{OFFSET - 1} (min {value.min()}, max {value.max()})")
    return value


def image_stats(stats: np.ndarray, column: Mapping[int, int], gt_map: np.ndarray, gt_segments: Sequence[Mapping],
                pred_map: np.ndarray, pred_segments: Sequence[Mapping], image: str) -> None:
    """Add one image's TP, FP, FN and ΣIoU to ``stats`` (float64 ``[4, K]``, columns by ``column[category id]``).

    ``gt_map``, ``pred_map``: int64 ``[H, W]`` segment ids; ``gt_segments``, ``pred_segments``: the
    ``segments_info`` lists (``id``, ``category_id``; ground truth also ``iscrowd``, ``area``). ``image`` names
    the image in errors.
    """
    gt_segms = {s["id"]: s for s in gt_segments}
    pred_segms = {s["id"]: dict(s) for s in pred_segments}
    unseen = set(pred_segms)
    for label, count in zip(*np.unique(pred_map, return_counts=True)):
        label = int(label)
        if label not in pred_segms:
            if label == VOID:
                continue
            raise ValueError(f"{image}: segment id {label} is in the prediction PNG but not in its segments_info")
        pred_segms[label]["area"] = int(count)
        unseen.discard(label)
        if pred_segms[label]["category_id"] not in column:
            raise ValueError(f"{image}: predicted segment id {label} has unknown category_id "
                             f"{pred_segms[label]['category_id']!r}")
    if unseen:
        raise ValueError(f"{image}: segment ids {sorted(unseen)} are in the prediction's segments_info but not in its PNG")

    pairs, counts = np.unique(gt_map.astype(np.uint64) * OFFSET + pred_map.astype(np.uint64), return_counts=True)
    overlap = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs, counts)}

    def gt_area(segment) -> int:
        return segment["area"] if "area" in segment else int((gt_map == segment["id"]).sum())

    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), intersection in overlap.items():  # sorted by (gt id, pred id), as panopticapi's
        gt, pred = gt_segms.get(gt_id), pred_segms.get(pred_id)
        if gt is None or pred is None or gt.get("iscrowd", 0) == 1 or gt["category_id"] != pred["category_id"]:
            continue
        union = pred["area"] + gt_area(gt) - intersection - overlap.get((VOID, pred_id), 0)
        iou = intersection / union
        if iou > 0.5:
            stats[_TP, column[gt["category_id"]]] += 1
            stats[_IOU, column[gt["category_id"]]] += iou
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd = {}
    for gt_id, gt in gt_segms.items():
        if gt_id in gt_matched:
            continue
        if gt.get("iscrowd", 0) == 1:
            crowd[gt["category_id"]] = gt_id
        elif gt["category_id"] in column:  # panopticapi counts unknown categories in no reported class
            stats[_FN, column[gt["category_id"]]] += 1
    for pred_id, pred in pred_segms.items():
        if pred_id in pred_matched:
            continue
        ignored = overlap.get((VOID, pred_id), 0)
        if pred["category_id"] in crowd:
            ignored += overlap.get((crowd[pred["category_id"]], pred_id), 0)
        if ignored / pred["area"] > 0.5:
            continue
        stats[_FP, column[pred["category_id"]]] += 1


def pq_results(stats: np.ndarray, categories) -> dict:
    """panopticapi's result structure from ``[4, K]`` sums over ``categories`` (the ``PanopticQuality`` order)."""
    table = _category_table(categories)
    results: dict = {}
    for name, isthing in _GROUPS:
        total = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        n, per_class = 0, {}
        for k, (category_id, cat_isthing) in enumerate(table.items()):
            if isthing is not None and isthing != cat_isthing:
                continue
            tp, fp, fn, iou = int(stats[_TP, k]), int(stats[_FP, k]), int(stats[_FN, k]), float(stats[_IOU, k])
            if tp + fp + fn == 0:
                per_class[category_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            values = {"pq": iou / (tp + 0.5 * fp + 0.5 * fn), "sq": iou / tp if tp != 0 else 0.0,
                      "rq": tp / (tp + 0.5 * fp + 0.5 * fn)}
            per_class[category_id] = values
            for key in total:
                total[key] += values[key]
        results[name] = {key: value / n if n else math.nan for key, value in total.items()}
        results[name]["n"] = n
        if name == "All":
            results["per_class"] = per_class
    return results


def _load_json(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pq_compute: {what} {path} does not exist")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"pq_compute: {what} {path} is not valid JSON: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise ValueError(f"pq_compute: {what} {path} must be a JSON object with an 'annotations' list")
    return document


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None) -> dict:
    """panopticapi's ``pq_compute`` (see the module docstring): every ground-truth image of ``gt_json_file`` is
    evaluated against the prediction with the same ``image_id`` in ``pred_json_file``; the PNGs are
    ``gt_folder/<file_name>`` and ``pred_folder/<file_name>``, the folders defaulting to the json paths without
    ``.json``. An image without a prediction is a ``ValueError`` naming it; the categories are the ground truth's."""
    gt_json = _load_json(gt_json_file, "ground-truth json")
    pred_json = _load_json(pred_json_file, "prediction json")
    gt_folder = Path(str(gt_json_file).replace(".json", "") if gt_folder is None else gt_folder)
    pred_folder = Path(str(pred_json_file).replace(".json", "") if pred_folder is None else pred_folder)
    for what, folder in (("ground-truth", gt_folder), ("prediction", pred_folder)):
        if not folder.is_dir():
            raise FileNotFoundError(f"pq_compute: {what} PNG folder {folder} does not exist")
    categories = gt_json.get("categories")
    column = {category_id: k for k, category_id in enumerate(_category_table(categories))}
    predictions = {ann.get("image_id"): ann for ann in pred_json["annotations"]}
    pairs = []
    for gt_ann in gt_json["annotations"]:
        if gt_ann["image_id"] not in predictions:
            raise ValueError(f"pq_compute: no prediction for the image with id {gt_ann['image_id']} "
                             f"({gt_ann.get('file_name')}) in {pred_json_file}")
        pairs.append((gt_ann, predictions[gt_ann["image_id"]]))
    stats = np.zeros((4, len(column)), np.float64)
    for gt_ann, pred_ann in pairs:
        image = f"image {gt_ann['image_id']} ({pred_ann['file_name']})"
        gt_map = read_panoptic_png(gt_folder / gt_ann["file_name"])
        pred_map = read_panoptic_png(pred_folder / pred_ann["file_name"])
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"pq_compute: {image}: the prediction is {pred_map.shape[0]}x{pred_map.shape[1]} but "
                             f"the ground truth {gt_map.shape[0]}x{gt_map.shape[1]}")
        image_stats(stats, column, gt_map, gt_ann["segments_info"], pred_map, pred_ann["segments_info"], image)
    return pq_results(stats, categories)


def metrics(stats: np.ndarray, categories) -> dict:
    """Flat metrics from ``[4, K]`` sums (``PanopticQuality.stats``, all processes): ``PQ, SQ, RQ`` (All),
    ``*_th`` (Things), ``*_st`` (Stuff) as floats in [0, 1] (NaN for a group with no class present), and
    ``PQ_per_class``, ``SQ_per_class``, ``RQ_per_class``: lists in the order of ``categories``, NaN for a class with
    no segment in ground truth or prediction (panopticapi reports 0 for those and leaves them out of the means)."""
    results = pq_results(stats, categories)
    out = {}
    for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for key in ("pq", "sq", "rq"):
            out[key.upper() + suffix] = float(results[group][key])
    absent = (stats[_TP] + stats[_FP] + stats[_FN]) == 0
    for key in ("pq", "sq", "rq"):
        values = [float(v[key]) for v in results["per_class"].values()]
        out[f"{key.upper()}_per_class"] = [math.nan if a else v for a, v in zip(absent, values)]
    return out


class PanopticQuality:
    """PQ over a dataset, accumulated in memory (see the module docstring).

    ``categories``: the category dicts (``id``, ``isthing``; e.g. the dataset json's ``categories``), in the order
    of the per-class lists. ``stats``: float64 ``[4, K]`` (TP, FP, FN, ΣIoU per category) of this process.
    """

    def __init__(self, categories: Sequence[Mapping]):
        self.categories = [dict(c) for c in (categories.values() if isinstance(categories, Mapping) else categories)]
        self._column = {category_id: k for k, category_id in enumerate(_category_table(self.categories))}
        self.reset()

    def reset(self) -> None:
        self.stats = np.zeros((4, len(self._column)), np.float64)

    def update(self, gt_panoptic, gt_segments: Sequence[Mapping], pred_panoptic, pred_segments: Sequence[Mapping],
               image_id=None) -> None:
        """One image: ``gt_panoptic``, ``pred_panoptic`` integer ``[H, W]`` segment-id maps of the same size (the
        prediction at the ground truth's original size), ``gt_segments`` the json's ``segments_info``,
        ``pred_segments`` dicts with ``id`` and ``category_id`` (``model.predict``'s ``segments``)."""
        image = f"image {image_id}" if image_id is not None else "image"
        gt_map = _as_id_map(gt_panoptic, "PanopticQuality.update: gt_panoptic")
        pred_map = _as_id_map(pred_panoptic, "PanopticQuality.update: pred_panoptic")
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"PanopticQuality.update: {image}: pred_panoptic {pred_map.shape} and gt_panoptic "
                             f"{gt_map.shape} differ in size; resize the prediction to the original image size")
        for name, segments in (("gt_segments", gt_segments), ("pred_segments", pred_segments)):
            if not isinstance(segments, (list, tuple)) or not all(
                    isinstance(s, Mapping) and {"id", "category_id"} <= s.keys() for s in segments):
                raise TypeError(f"PanopticQuality.update: {image}: {name} must be a list of dicts with 'id' and "
                                f"'category_id', got {segments!r:.200}")
        stats = self.stats.copy()  # added to in place, in panopticapi's order; kept only if the image is valid
        image_stats(stats, self._column, gt_map, gt_segments, pred_map, pred_segments, image)
        self.stats = stats

    def _reduced(self) -> np.ndarray:
        return all_reduce_sum(torch.from_numpy(self.stats.copy())).numpy()

    def results(self) -> dict:
        """panopticapi's structure over every update (all processes; every rank must call it)."""
        return pq_results(self._reduced(), self.categories)

    def compute(self) -> dict:
        """``metrics(stats)`` over every update (all processes; every rank must call it)."""
        return metrics(self._reduced(), self.categories)


def metrics_table(metrics: Mapping, class_names: Sequence[str], isthing: Sequence[bool]) -> str:
    """``metrics`` (``PanopticQuality.compute()``) as a table: one row per class (PQ, SQ, RQ in percent, ``-`` for
    a class that never occurred), then All / Things / Stuff as panopticapi prints them."""
    width = max([len("class"), *map(len, class_names)])
    rows = [f"{'class':<{width}}  kind   {'PQ':>6} {'SQ':>6} {'RQ':>6}", "-" * (width + 29)]
    per_class = zip(class_names, isthing, metrics["PQ_per_class"], metrics["SQ_per_class"], metrics["RQ_per_class"])
    for name, thing, pq, sq, rq in per_class:
        rows.append(f"{name:<{width}}  {'thing' if thing else 'stuff'}  {_pct(pq)} {_pct(sq)} {_pct(rq)}")
    rows.append("-" * (width + 29))
    for label, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        rows.append(f"{label:<{width}}         "
                    f"{_pct(metrics['PQ' + suffix])} {_pct(metrics['SQ' + suffix])} {_pct(metrics['RQ' + suffix])}")
    return "\n".join(rows)


def _pct(value: float) -> str:
    return f"{'-':>6}" if math.isnan(value) else f"{100 * value:6.2f}"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path`` (never a partial file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def segments_info(panoptic: np.ndarray, segments: Sequence[Mapping]) -> list[dict]:
    """COCO ``segments_info`` of a predicted map: ``id``, ``category_id``, ``iscrowd`` 0, ``area`` (pixels) and
    ``bbox`` ``[x, y, width, height]`` of each segment present in ``panoptic`` (segments with no pixel are left
    out, as a PNG cannot hold them); an id of the map missing from ``segments`` is a ``ValueError``."""
    categories = {int(s["id"]): int(s["category_id"]) for s in segments}
    ids, areas = np.unique(panoptic, return_counts=True)
    missing = sorted(set(ids.tolist()) - set(categories) - {VOID})
    if missing:
        raise ValueError(f"segment ids {missing} are in the panoptic map but not in its segments")
    info = []
    for segment_id, area in zip(ids.tolist(), areas.tolist()):
        if segment_id == VOID and VOID not in categories:
            continue
        mask = panoptic == segment_id
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        info.append({"id": segment_id, "category_id": categories[segment_id], "iscrowd": 0, "area": area, "bbox": bbox})
    return info


class PanopticPredictionWriter:
    """Predictions in the COCO panoptic submission format: ``out_dir/<name>/<file_name>`` PNGs (ids as RGB,
    ``R + 256·G + 256²·B``) and ``out_dir/<name>.json`` (``annotations`` with ``segments_info``, and
    ``categories``), every file written atomically; ``pq_compute(gt_json, writer.json_path)`` evaluates them.

    ``add`` writes one image's PNG at once; ``finish()`` gathers the annotations of every process and writes the
    json on rank 0 (every rank must call it)."""

    def __init__(self, out_dir: Union[str, Path], categories: Sequence[Mapping], name: str = "panoptic_predictions"):
        self.out_dir = Path(out_dir)
        self.png_dir = self.out_dir / name
        self.json_path = self.out_dir / f"{name}.json"
        self.categories = [dict(c) for c in categories]
        self._known = set(_category_table(self.categories))
        self.png_dir.mkdir(parents=True, exist_ok=True)
        self.annotations: list[dict] = []

    def add(self, image_id: int, file_name: str, panoptic, segments: Sequence[Mapping]) -> dict:
        """``panoptic``: integer ``[H, W]`` segment ids at the image's original size (0 = VOID); ``segments``:
        dicts with ``id`` and ``category_id`` (``model.predict``'s). ``file_name``: the PNG's name (the ground
        truth's ``file_name``). Returns the annotation."""
        ids = _as_id_map(panoptic, f"PanopticPredictionWriter.add: image {image_id}: panoptic")
        unknown = sorted({int(s["category_id"]) for s in segments} - self._known)
        if unknown:
            raise ValueError(f"PanopticPredictionWriter.add: image {image_id}: category ids {unknown} are not in the "
                             "categories")
        try:
            info = segments_info(ids, segments)
        except ValueError as err:
            raise ValueError(f"PanopticPredictionWriter.add: image {image_id}: {err}") from None
        ok, png = cv2.imencode(".png", cv2.cvtColor(id2rgb(ids), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not encode the PNG of image {image_id}")
        _write_atomic(self.png_dir / file_name, png.tobytes())
        annotation = {"image_id": int(image_id), "file_name": file_name, "segments_info": info}
        self.annotations.append(annotation)
        return annotation

    def finish(self) -> Path:
        """Write the json (rank 0) with every process's annotations, sorted by image id; returns its path."""
        annotations = [a for rank in all_gather_objects(self.annotations) for a in rank]
        annotations = list({a["image_id"]: a for a in sorted(annotations, key=lambda a: a["image_id"])}.values())
        if not is_distributed() or torch.distributed.get_rank() == 0:
            document = {"annotations": annotations, "categories": self.categories}
            _write_atomic(self.json_path, json.dumps(document).encode())
        barrier()
        return self.json_path


def category_agreement(first: list, second: list) -> float:
    """The share of pixels given the same category (VOID included) by two lists of panoptic ``predict`` results
    on the same images (e.g. an fp32 and an INT8 model's, ``tools/export.py --int8``)."""
    same = total = 0
    for a, b in zip(first, second):
        maps = []
        for p in (a, b):
            lookup = {s["id"]: s["category_id"] for s in p["segments"]}
            ids, index = np.unique(np.asarray(p["panoptic"]), return_inverse=True)
            maps.append(np.array([lookup.get(int(i), 0) for i in ids], np.int64)[index])
        same += int((maps[0] == maps[1]).sum())
        total += maps[0].size
    return same / max(1, total)
