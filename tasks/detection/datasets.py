"""COCO-format detection data (COCO itself or any dataset with its own categories), read with pycocotools.

A sample is ``{"image": uint8 [H, W, 3] RGB, "boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N],
"image_id": int, "orig_size": (H, W)}``, then ``transforms(sample)`` if given. Targets are built as
Deformable-DETR's ``ConvertCocoPolysToMask`` does: crowd annotations dropped (``remove_crowd``; they still act
as ignore regions in ``CocoEvaluator``, which reads the json), ``[x, y, w, h]`` -> xyxy clipped to the image,
boxes with no area dropped. Labels are the raw ``category_id``s, so the classifier needs
``num_classes = max id + 1`` logits (91 for COCO, whose ids run 1..90 with gaps); an image with no box is
a sample with ``N = 0``. ``dataset[(index, seed)]`` seeds ``sample["rng"]`` with
``np.random.default_rng(seed)`` for the transforms (``dataset[index]``: unseeded); the ``rng`` is removed
before the sample is returned.

Errors: a missing annotation file or image folder is a ``FileNotFoundError`` at construction, a missing image
file one when the sample is read. An annotation file that is empty, not JSON or not COCO-shaped (``load_coco``:
an entry without its keys, a ``bbox`` that is not 4 finite numbers, ...) is a ``ValueError`` at construction
naming the file, the entry's id and the value; an unreadable or truncated image (``tasks.common.images``), or
one whose size differs from its json entry, a ``ValueError`` naming the file when the sample is read.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from tasks.common.images import read_image
from tasks.common.transforms import SeededDataset

Transform = Callable[[dict], dict]

# The keys CocoDetection reads, per list: (what one entry is called, its required keys).
_COCO_KEYS = {
    "images": ("image", {"id", "file_name"}),
    "annotations": ("annotation", {"id", "image_id", "category_id", "bbox"}),
    "categories": ("category", {"id", "name"}),
}
_NUMBERS = (int, float)  # exact types: json gives these (a bool is not a coordinate)


def load_coco(ann_file: Union[str, Path]) -> COCO:
    """A pycocotools ``COCO`` for ``ann_file``, whose content is checked first (pycocotools itself fails on a
    bad file with a bare ``JSONDecodeError``, ``KeyError`` or numpy error that names nothing)."""
    ann_file = Path(ann_file)
    text = ann_file.read_bytes()
    if not text.strip():
        raise ValueError(f"COCO annotation file {ann_file} is empty ({len(text)} bytes); expected a COCO json")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"COCO annotation file {ann_file} is not valid JSON: {err}") from err
    check_coco(document, ann_file)
    coco = COCO()
    coco.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def check_coco(document, ann_file: Path) -> None:
    """``ValueError`` naming ``ann_file``, the entry and the value where ``document`` is not COCO detection data."""
    where = f"COCO annotation file {ann_file}"
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise ValueError(f"{where} must hold a JSON object with an 'images' list (and 'annotations', 'categories')")
    for name, (entry_name, keys) in _COCO_KEYS.items():
        entries = document.get(name, [])
        if not isinstance(entries, list):
            raise ValueError(f"{where}: '{name}' must be a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            if not (isinstance(entry, dict) and keys <= entry.keys()):
                missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
                label = f"id {entry['id']!r}" if isinstance(entry, dict) and "id" in entry else f"number {index}"
                raise ValueError(f"{where}: {entry_name} {label} has no {', '.join(map(repr, sorted(missing)))}")
    for annotation in document.get("annotations", []):
        box = annotation["bbox"]
        if not (type(box) is list and len(box) == 4 and all(type(v) in _NUMBERS and math.isfinite(v) for v in box)):
            raise ValueError(
                f"{where}: annotation id {annotation['id']} has bbox {box!r}; expected [x, y, width, height], "
                "4 finite numbers"
            )


def coco_targets(annotations: Sequence[dict], height: int, width: int, remove_crowd: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """COCO annotations of one image -> ``(boxes float32 [N, 4] xyxy clipped to the image, labels int64 [N])``,
    crowd (if ``remove_crowd``) and zero-area boxes left out."""
    kept = [a for a in annotations if not (remove_crowd and a.get("iscrowd", 0))]
    boxes = np.array([a["bbox"] for a in kept], dtype=np.float32).reshape(-1, 4)
    labels = np.array([a["category_id"] for a in kept], dtype=np.int64)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return boxes[keep], labels[keep]


class CocoDetection(SeededDataset, Dataset):
    """``images_dir/<file_name>`` for every image of ``ann_file`` (sorted by id), targets from its annotations.

    Attributes: ``coco`` (the pycocotools ``COCO``, e.g. for ``CocoEvaluator``), ``image_ids``,
    ``categories`` (``{id: name}``) and ``num_classes`` (``max id + 1``).
    """

    def __init__(self, images_dir: Union[str, Path], ann_file: Union[str, Path], transforms: Optional[Transform] = None,
                 remove_crowd: bool = True):
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"CocoDetection: annotation file {ann_file} does not exist")
        if not images_dir.is_dir():
            raise FileNotFoundError(f"CocoDetection: image folder {images_dir} does not exist")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"CocoDetection: transforms must be a callable on a sample dict or None, got {type(transforms).__name__}")
        self.coco = load_coco(ann_file)
        self.categories = {int(c["id"]): c["name"] for c in self.coco.dataset.get("categories", [])}
        if not self.categories or min(self.categories) < 0:
            raise ValueError(f"CocoDetection: {ann_file} needs categories with ids >= 0, got {sorted(self.categories)}")
        unknown = {a["category_id"] for a in self.coco.dataset.get("annotations", [])} - set(self.categories)
        if unknown:
            raise ValueError(f"CocoDetection: {ann_file} has annotations with category ids {sorted(unknown)} not in its categories")
        self.num_classes = max(self.categories) + 1
        self.images_dir, self.ann_file = images_dir, ann_file
        self.image_ids = sorted(self.coco.imgs)
        self.transforms = transforms
        self.remove_crowd = remove_crowd

    def __len__(self) -> int:
        return len(self.image_ids)

    def layout_problems(self, show: int = 3) -> list[str]:
        """What ``read`` would only find out sample by sample, looked up at once (``tools/check_data.py``): the
        images the json names that are missing from disk."""
        names = [info["file_name"] for info in self.coco.imgs.values()]
        on_disk = set(os.listdir(self.images_dir))
        missing = [n for n in names if n not in on_disk and not (self.images_dir / n).is_file()]
        if not missing:
            return []
        shown = ", ".join(missing[:show]) + (f", ... and {len(missing) - show} more" if len(missing) > show else "")
        where = f"{self.ann_file.name} are missing from {self.images_dir}"
        return [f"{len(missing):,} of the {len(names):,} images in {where}: {shown}"]

    def read(self, index: int) -> dict:
        """The untransformed sample ``index``."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = read_image(path)
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise ValueError(
                f"image {path} is {height}x{width} but {self.ann_file.name} says {info['height']}x{info['width']} "
                f"(image id {image_id})"
            )
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        boxes, labels = coco_targets(annotations, height, width, self.remove_crowd)
        return {"image": image, "boxes": boxes, "labels": labels, "image_id": int(image_id), "orig_size": (height, width)}


def summarize_samples(samples: list[dict], ds) -> list[str]:
    """``tools/check_data.py``'s line about a split's boxes: per image, images without, categories seen."""
    boxes = [len(s["boxes"]) for s in samples]
    labels = {int(v) for s in samples for v in s["labels"]}
    return [f"{np.mean(boxes):.1f} boxes per image ({boxes.count(0)} without), {len(labels)} categories seen"]
