"""COCO panoptic data (COCO itself or any dataset in its format, with its own categories), and batching.

Layout (COCO's): ``annotations/panoptic_{train,val}2017.json``, one PNG per image in
``annotations/panoptic_{train,val}2017/`` (segment ids ``R + 256·G + 256²·B``, 0 = VOID) and the images in
``{train,val}2017/``. The json has ``images`` (``id``, ``file_name``, optionally ``height``/``width``),
``annotations`` (``image_id``, ``file_name`` of the PNG, ``segments_info``: ``id``, ``category_id``, ``iscrowd``,
``area``, ``bbox``) and ``categories`` (``id``, ``name``, ``isthing``). Category ids need not be contiguous.

Labels: ``PanopticCategories`` maps the categories to contiguous labels, things first (``0 .. T-1`` in category-id
order), then stuff (``T .. T+S-1``), as Panoptic SegFormer's classifier expects.

A sample (``CocoPanoptic.read``) is ``{"image": uint8 [H, W, 3] RGB, "panoptic": int32 [H, W] segment ids,
"segments_info": the json's list, "labels": int64 [N] contiguous label of each entry, "file_name": the PNG's name,
"image_id": int, "orig_size": (H, W)}``, then ``transforms(sample)`` (``transforms.train_pipeline`` turns it into
the training targets, ``transforms.test_pipeline`` keeps the ground truth at its original size for the evaluator).
``dataset[(index, seed)]`` seeds the transforms' randomness, as every dataset here does.

Errors: a missing json or folder is a ``FileNotFoundError`` at construction; a json that is not COCO panoptic (an
entry without its keys, a segment of an unknown category, duplicate category ids) a ``ValueError`` naming the file
and the entry; an unreadable image or PNG, or a PNG whose size differs from its image, a ``ValueError`` naming the
file when the sample is read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.images import read_image
from tasks.common.transforms import SeededDataset

from .evaluator import read_panoptic_png

Transform = Callable[[dict], dict]

_KEYS = {
    "images": ("image", {"id", "file_name"}),
    "annotations": ("annotation", {"image_id", "file_name", "segments_info"}),
    "categories": ("category", {"id", "name", "isthing"}),
}


@dataclass(frozen=True)
class PanopticCategories:
    """The label mapping: contiguous label ``i`` is category ``category_ids[i]`` named ``names[i]``; things
    (``isthing[i]``) come first, each group in category-id order."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    isthing: tuple[bool, ...]

    @classmethod
    def from_json(cls, categories: Sequence[Mapping], where: str = "categories") -> "PanopticCategories":
        """From the json's ``categories`` (dicts with ``id``, ``name``, ``isthing`` 0/1)."""
        if not isinstance(categories, (list, tuple)) or not categories:
            raise ValueError(f"{where}: expected a non-empty list of categories, got {categories!r:.200}")
        seen = {}
        for c in categories:
            if not (isinstance(c, Mapping) and {"id", "name", "isthing"} <= c.keys()):
                raise ValueError(f"{where}: each category needs 'id', 'name' and 'isthing', got {c!r:.200}")
            if type(c["id"]) is not int or c["isthing"] not in (0, 1, True, False):
                raise ValueError(f"{where}: category {c!r:.200} needs an int id and isthing 0 or 1")
            if c["id"] in seen:
                raise ValueError(f"{where}: category id {c['id']} appears twice")
            seen[c["id"]] = c
        ordered = sorted(seen.values(), key=lambda c: (not c["isthing"], c["id"]))
        return cls(tuple(c["id"] for c in ordered), tuple(str(c["name"]) for c in ordered),
                   tuple(bool(c["isthing"]) for c in ordered))

    @property
    def num_things(self) -> int:
        return sum(self.isthing)

    @property
    def num_stuff(self) -> int:
        return len(self.isthing) - self.num_things

    def __len__(self) -> int:
        return len(self.category_ids)

    def label_of(self, category_id: int) -> int:
        """The contiguous label of ``category_id`` (a ``KeyError`` naming it if unknown)."""
        return self._labels[category_id]

    @cached_property
    def _labels(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.category_ids)}

    def as_json(self) -> list[dict]:
        """``[{"id", "name", "isthing"}]`` in label order (what ``PanopticQuality`` and the writer take)."""
        return [{"id": c, "name": n, "isthing": int(t)} for c, n, t in zip(self.category_ids, self.names, self.isthing)]


def load_panoptic_json(ann_file: Union[str, Path]) -> dict:
    """The document of a COCO panoptic json, checked (see the module docstring)."""
    ann_file = Path(ann_file)
    where = f"COCO panoptic annotation file {ann_file}"
    try:
        document = json.loads(ann_file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in _KEYS):
        raise ValueError(f"{where} must hold a JSON object with 'images', 'annotations' and 'categories' lists")
    for name, (entry_name, keys) in _KEYS.items():
        for index, entry in enumerate(document[name]):
            if not (isinstance(entry, dict) and keys <= entry.keys()):
                missing = sorted(keys - set(entry)) if isinstance(entry, dict) else sorted(keys)
                raise ValueError(f"{where}: {entry_name} number {index} has no {', '.join(map(repr, missing))}")
    known = {c["id"] for c in document["categories"]}
    for ann in document["annotations"]:
        for segment in ann["segments_info"]:
            if not (isinstance(segment, dict) and {"id", "category_id"} <= segment.keys()):
                raise ValueError(f"{where}: image {ann['image_id']} has a segment without 'id'/'category_id': "
                                 f"{segment!r:.200}")
            if segment["category_id"] not in known:
                raise ValueError(f"{where}: image {ann['image_id']} segment {segment['id']} has category_id "
                                 f"{segment['category_id']!r}, which is not in its categories")
    return document


class CocoPanoptic(SeededDataset, Dataset):
    """The images of ``ann_file``'s annotations (sorted by image id) with their panoptic PNGs.

    ``png_dir`` defaults to the json's path without ``.json`` (COCO's layout). Attributes: ``categories``
    (``PanopticCategories``), ``class_names``, ``num_classes``, ``num_things``, ``num_stuff``, ``image_ids``,
    ``ann_file``, ``png_dir``, ``images_dir``.
    """

    def __init__(self, images_dir: Union[str, Path], ann_file: Union[str, Path],
                 png_dir: Optional[Union[str, Path]] = None, transforms: Optional[Transform] = None):
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        png_dir = Path(str(ann_file)[: -len(".json")] if ann_file.suffix == ".json" else ann_file) \
            if png_dir is None else Path(png_dir)
        for what, path, ok in (("annotation file", ann_file, ann_file.is_file()),
                               ("image folder", images_dir, images_dir.is_dir()),
                               ("panoptic PNG folder", png_dir, png_dir.is_dir())):
            if not ok:
                raise FileNotFoundError(f"CocoPanoptic: {what} {path} does not exist")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"CocoPanoptic: transforms must be a callable on a sample dict or None, "
                            f"got {type(transforms).__name__}")
        document = load_panoptic_json(ann_file)
        self.categories = PanopticCategories.from_json(document["categories"], f"CocoPanoptic: {ann_file}")
        self.images = {image["id"]: image for image in document["images"]}
        self.annotations = {ann["image_id"]: ann for ann in document["annotations"]}
        missing = sorted(set(self.annotations) - set(self.images))
        if missing:
            raise ValueError(f"CocoPanoptic: {ann_file} has annotations of image ids {missing[:5]} not in its images")
        self.image_ids = sorted(self.annotations)
        self.images_dir, self.ann_file, self.png_dir = images_dir, ann_file, png_dir
        self.transforms = transforms

    @property
    def class_names(self) -> list[str]:
        return list(self.categories.names)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def num_things(self) -> int:
        return self.categories.num_things

    @property
    def num_stuff(self) -> int:
        return self.categories.num_stuff

    def __len__(self) -> int:
        return len(self.image_ids)

    def read(self, index: int) -> dict:
        """The untransformed sample ``index``."""
        image_id = self.image_ids[index]
        ann, info = self.annotations[image_id], self.images[image_id]
        image = read_image(self.images_dir / info["file_name"])
        png = self.png_dir / ann["file_name"]
        panoptic = read_panoptic_png(png).astype(np.int32)
        if panoptic.shape != image.shape[:2]:
            raise ValueError(f"panoptic PNG {png} is {panoptic.shape[0]}x{panoptic.shape[1]} but its image "
                             f"{self.images_dir / info['file_name']} is {image.shape[0]}x{image.shape[1]}")
        labels = np.array([self.categories.label_of(s["category_id"]) for s in ann["segments_info"]], np.int64)
        return {"image": image, "panoptic": panoptic, "segments_info": ann["segments_info"], "labels": labels,
                "file_name": ann["file_name"], "image_id": int(image_id), "orig_size": image.shape[:2]}


_META_KEYS = ("image_id", "orig_size", "size", "file_name", "panoptic", "segments_info")


def collate(samples: Sequence[dict]) -> dict:
    """A batch: ``image`` ``[B, 3, Hmax, Wmax]`` padded bottom/right with zeros, ``pixel_mask`` long
    ``[B, Hmax, Wmax]`` (1 on real pixels), ``targets`` (training samples: ``labels``, ``masks`` padded with False,
    ``boxes`` normalised to the unpadded image) and ``meta`` (``image_id``, ``orig_size``, ``size``, and the
    evaluation ground truth ``panoptic``, ``segments_info``, ``file_name`` where present)."""
    if not samples:
        raise ValueError("collate: got no samples")
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    images = samples[0]["image"].new_zeros((len(samples), 3, height, width))
    pixel_mask = torch.zeros((len(samples), height, width), dtype=torch.long)
    targets = []
    for i, s in enumerate(samples):
        h, w = s["image"].shape[-2:]
        images[i, :, :h, :w] = s["image"]
        pixel_mask[i, :h, :w] = 1
        if "masks" in s:
            masks = s["masks"].new_zeros((len(s["masks"]), height, width))
            masks[:, :h, :w] = s["masks"]
            targets.append({"labels": s["labels"], "masks": masks, "boxes": s["boxes"]})
    batch = {"image": images, "pixel_mask": pixel_mask,
             "meta": [{k: s[k] for k in _META_KEYS if k in s} for s in samples]}
    if targets:
        if len(targets) != len(samples):
            raise ValueError("collate: some samples have training targets ('masks') and some do not")
        batch["targets"] = targets
    return batch
