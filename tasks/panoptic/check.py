"""What ``tools/check_data.py`` needs to know about panoptic data: the COCO panoptic release, the ground-truth
checks (``CHECKS``, declared in the task's ``TaskSpec``), and the one-line summary of a few samples.

- layout (also at training start-up): images of the json without an annotation entry (``CocoPanoptic`` leaves
  them out, so they would be neither trained on nor evaluated);
- compare: the two splits' categories (labels are positions in that list, so they must agree) and the model
  section's thing / stuff counts;
- sample: the PNG's ids against the json's ``segments_info``, both ways (``png_id_problems``).

``png_id_problems`` is the check panopticapi makes of predictions only, applied to the ground truth (which
panopticapi trusts): a non-VOID id of a PNG missing from its ``segments_info`` would be silently ignored by the
evaluation, and a ``segments_info`` entry missing from the PNG would count as a miss no model can avoid.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tasks.common.check_data import DataChecks

from .evaluator import VOID

COCO_PANOPTIC_NAME = "COCO panoptic 2017"
COCO_PANOPTIC_COUNTS = (118_287, 5_000)  # images with panoptic annotations: train2017, val2017
COCO_PANOPTIC_THINGS, COCO_PANOPTIC_STUFF = 80, 53
COCO_PANOPTIC_CONTENTS = (
    "annotations/panoptic_{train,val}2017.json and PNG folders; 133 categories (80 things, 53 stuff)")
_SHOW = 5  # ids listed before "... and N more"


def _listed(values: Sequence[int]) -> str:
    values = sorted(values)
    more = f" ... and {len(values) - _SHOW} more" if len(values) > _SHOW else ""
    return ", ".join(map(str, values[:_SHOW])) + more


def png_id_problems(panoptic: np.ndarray, segments_info: Sequence[Mapping], name: str) -> list[str]:
    """Problems of one image's ground truth: PNG ids missing from ``segments_info`` and the reverse, duplicate
    segment ids, and areas that differ from the PNG's pixel counts. ``name`` (the PNG's file name and image id)
    starts each message."""
    problems = []
    ids, counts = np.unique(np.asarray(panoptic), return_counts=True)
    in_png = dict(zip(ids.tolist(), counts.tolist()))
    in_png.pop(VOID, None)
    listed = [s["id"] for s in segments_info]
    duplicates = sorted({i for i in listed if listed.count(i) > 1})
    if duplicates:
        problems.append(f"{name}: segment ids {_listed(duplicates)} appear more than once in segments_info")
    missing = set(in_png) - set(listed)
    if missing:
        pixels = sum(in_png[i] for i in missing)
        problems.append(f"{name}: PNG ids {_listed(missing)} ({pixels} pixels) are not in the json's segments_info")
    absent = set(listed) - set(in_png)
    if absent:
        problems.append(f"{name}: segments_info ids {_listed(absent)} are not in the PNG")
    wrong = [f"{s['id']} ({s['area']} vs {in_png[s['id']]})" for s in segments_info
             if s["id"] in in_png and "area" in s and s["area"] != in_png[s["id"]]]
    if wrong:
        problems.append(f"{name}: json areas differ from the PNG's pixel counts for ids {', '.join(wrong[:_SHOW])}"
                        + (f" ... and {len(wrong) - _SHOW} more" if len(wrong) > _SHOW else ""))
    return problems


def sample_problems(sample: Mapping) -> list[str]:
    """``png_id_problems`` of an untransformed ``CocoPanoptic`` sample."""
    name = f"{sample['file_name']} (image {sample['image_id']})"
    return png_id_problems(sample["panoptic"], sample["segments_info"], name)


def unannotated_images(dataset) -> list[str]:
    """The images a ``CocoPanoptic``'s json lists without an annotation entry (left out of the dataset)."""
    missing = sorted(set(dataset.images) - set(dataset.annotations))
    if not missing:
        return []
    names = [f"{dataset.images[i]['file_name']} (image {i})" for i in missing]
    shown = ", ".join(names[:_SHOW]) + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")
    return [f"{len(missing):,} of the {len(dataset.images):,} images in {dataset.ann_file.name} have no entry in its "
            f"annotations, so they are left out: {shown}"]


def category_problems(cfg, train, val) -> list[str]:
    """The splits must declare the same categories (a label is a position in that list) and the model section
    must count as many things and stuff."""
    problems = []
    if train.categories != val.categories:
        a, b = dict(zip(train.categories.category_ids, zip(train.categories.names, train.categories.isthing))), \
            dict(zip(val.categories.category_ids, zip(val.categories.names, val.categories.isthing)))
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        problems.append(f"{train.ann_file.name} and {val.ann_file.name} declare different categories ({len(a)} and "
                        f"{len(b)}; ids that differ: {_listed(differ)}), so their labels would not agree")
    for key, found in (("num_things_classes", val.num_things), ("num_stuff_classes", val.num_stuff)):
        given = getattr(cfg.model, key, found)
        if given != found:
            problems.append(f"model.{key}={given} but {val.ann_file.name} has {found} such categories")
    return problems


def summarize_samples(samples: Sequence[Mapping], dataset) -> list[str]:
    """What the untransformed samples' targets hold, e.g. ``["11.2 segments per image (6.0 things, 5.1 stuff,
    0.1 crowd)", "VOID 2.3% of pixels", "41 of 133 categories seen (80 things, 53 stuff)"]``."""
    if not samples:
        return []
    isthing = dict(zip(dataset.categories.category_ids, dataset.categories.isthing))
    segments = [s["segments_info"] for s in samples]
    things = sum(1 for info in segments for seg in info if isthing.get(seg["category_id"]) and not seg.get("iscrowd"))
    crowd = sum(1 for info in segments for seg in info if seg.get("iscrowd"))
    stuff = sum(len(info) for info in segments) - things - crowd
    void = sum(int((np.asarray(s["panoptic"]) == VOID).sum()) for s in samples)
    pixels = sum(np.asarray(s["panoptic"]).size for s in samples)
    seen = {seg["category_id"] for info in segments for seg in info}
    n = len(samples)
    return [f"{(things + stuff + crowd) / n:.1f} segments per image ({things / n:.1f} things, {stuff / n:.1f} stuff, "
            f"{crowd / n:.1f} crowd)",
            f"VOID {void / pixels:.1%} of pixels",
            f"{len(seen)} of {dataset.num_classes} categories seen ({dataset.num_things} things, "
            f"{dataset.num_stuff} stuff)"]


CHECKS = DataChecks(layout=unannotated_images, compare=category_problems, sample=sample_problems)
