"""The detection toy dataset: synthetic scenes (``tasks.common.synthetic``) in the COCO layout that
``datasets.CocoDetection`` (and ``CocoEvaluator``) read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from tasks.common.synthetic import GENERATOR_VERSION, SHAPE_CLASSES, is_complete, scenes, toy_params, write_jpeg, writing


def write_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """``root/{train2017,val2017}/%012d.jpg`` and ``root/annotations/instances_{train,val}2017.json``; returns root.

    Category ids are 1..3 (``SHAPE_CLASSES``). Annotations have float ``bbox`` [x, y, w, h], ``area`` =
    visible pixel count, ``iscrowd`` 0 and an exact compressed-RLE ``segmentation`` (real COCO uses
    polygons for iscrowd 0; read masks with ``COCO.annToMask``, which accepts both). Image ids are
    unique across the splits (val follows train); every 20th image, starting with the first of each
    split, has no objects.
    """
    params = toy_params("coco", num_train, num_val, size, seed)
    out = Path(root)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]
    with writing(out, [out / "train2017", out / "val2017", out / "annotations"], params, num_train + num_val) as bar:
        (out / "annotations").mkdir(parents=True)
        for split, count, first_id in (("train", num_train, 1), ("val", num_val, num_train + 1)):
            (out / f"{split}2017").mkdir()
            images, annotations = [], []
            for index, scene in scenes(seed, split, count, size, bar, empty_every=20):
                image_id = first_id + index
                file_name = f"{image_id:012d}.jpg"
                write_jpeg(out / f"{split}2017" / file_name, scene.image)
                images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1],
                               "license": 1})
                annotations += [_annotation(instance, len(annotations) + k + 1, image_id)
                                for k, instance in enumerate(scene.instances)]
            document = {
                "info": {"description": "densepred synthetic shapes", "version": str(GENERATOR_VERSION), "year": 2017},
                "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
                "images": images, "annotations": annotations, "categories": categories,
            }
            (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))
    return out


def _annotation(instance, annotation_id: int, image_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(instance.mask.astype(np.uint8)))
    x0, y0, x1, y1 = instance.bbox
    return {
        "id": annotation_id, "image_id": image_id, "category_id": instance.class_id,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(instance.mask.sum()), "iscrowd": 0,
        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
    }


def ensure_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """The COCO root, generated unless a complete copy with these parameters exists."""
    out = Path(root)
    if is_complete(out, toy_params("coco", num_train, num_val, size, seed)):
        return out
    return write_toy_dataset(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
