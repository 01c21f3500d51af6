"""The panoptic toy dataset: synthetic scenes in the COCO panoptic layout that ``datasets.CocoPanoptic`` reads.

A scene starts from ``tasks.common.synthetic.make_scene`` (textured circles, squares and triangles standing on a
tiled floor, far to near, so they occlude and touch each other) and adds two more kinds of stuff:

- things (category ids 1, 3, 7, as COCO's are not contiguous): ``circle`` (red/orange stripes), ``square``
  (green checkerboard), ``triangle`` (blue dots); one segment per visible object.
- stuff (ids 154, 187, 190): ``sand`` (a speckled yellow blob on the floor, in about 60% of the images), ``sky``
  (a pale blue gradient with soft clouds above a wavy horizon, 12-40% of the height) and ``floor`` (the rest).
- VOID (id 0): a 2-pixel band along the horizon, and objects too small to be annotated (under 30 pixels).
- crowd: in every 8th image with at least two objects (index 4, 12, ...), one object is a crowd segment
  (``iscrowd`` 1), ignored by training and evaluation alike.

Segment ids are random distinct ids in 1..256³-1, so the PNGs exercise all three channels. Every image is drawn
from ``default_rng([seed, split, index])`` (``tasks.common.synthetic.scenes``). Layout::

    root/{train2017,val2017}/%012d.jpg
    root/annotations/panoptic_{train,val}2017.json
    root/annotations/panoptic_{train,val}2017/%012d.png
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tasks.common.synthetic import Scene, is_complete, scenes, toy_params, write_jpeg, writing

from .evaluator import id2rgb

THING_CATEGORIES = ({"id": 1, "name": "circle", "color": [220, 60, 20]},
                    {"id": 3, "name": "square", "color": [40, 180, 60]},
                    {"id": 7, "name": "triangle", "color": [30, 60, 220]})
STUFF_CATEGORIES = ({"id": 154, "name": "sand", "color": [220, 200, 90]},
                    {"id": 187, "name": "sky", "color": [150, 190, 240]},
                    {"id": 190, "name": "floor", "color": [140, 140, 140]})
CATEGORIES = tuple({**c, "supercategory": "shape", "isthing": 1} for c in THING_CATEGORIES) + tuple(
    {**c, "supercategory": "background", "isthing": 0} for c in STUFF_CATEGORIES)
_THING_OF_CLASS = {1: 1, 2: 3, 3: 7}  # make_scene's class id -> category id
SAND, SKY, FLOOR = 154, 187, 190
CROWD_EVERY = 8
_LAYOUT = "coco_panoptic_v1"  # bump the suffix when the pictures change, so that cached copies are rewritten


def panoptic_scene(scene: Scene, rng: np.random.Generator, crowd: bool = False) -> tuple[np.ndarray, np.ndarray, list]:
    """``(image uint8 [H, W, 3], segment ids int64 [H, W], segments_info)`` from a ``make_scene`` scene."""
    height, width = scene.labels.shape
    image = scene.image.astype(np.float32)
    free = scene.labels == 0  # floor pixels (not covered by an object)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.12, 0.4) + height * rng.uniform(0.01, 0.06) * np.sin(
        2 * np.pi * x[0] / rng.uniform(0.5, 1.5) / width + rng.uniform(0, 2 * np.pi))
    sky = free & (y < horizon[None, :] - 1)
    void = free & (np.abs(y - horizon[None, :]) <= 1)
    image[sky] = _sky(rng, y, height)[sky]
    sand = np.zeros_like(free)
    if rng.random() < 0.6:
        cy, cx = rng.uniform(0.6, 0.9) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.22) * height, rng.uniform(0.18, 0.4) * width
        angle = np.arctan2(y - cy, x - cx)
        wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi))
        sand = free & ~sky & ~void & (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < wobble**2)
        image[sand] = _sand(rng, height, width)[sand]
    image = np.clip(image + rng.normal(0.0, 2.0, image.shape), 0, 255).round().astype(np.uint8)

    ids = np.zeros((height, width), np.int64)
    regions = [(FLOOR, free & ~sky & ~void & ~sand, 0), (SKY, sky, 0), (SAND, sand, 0)]
    crowd_index = int(rng.integers(len(scene.instances))) if crowd and len(scene.instances) >= 2 else -1
    regions += [(_THING_OF_CLASS[inst.class_id], inst.mask, int(k == crowd_index))
                for k, inst in enumerate(scene.instances)]
    segment_ids = _distinct_ids(rng, len(regions))
    segments = []
    for segment_id, (category_id, mask, iscrowd) in zip(segment_ids, regions):
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if rows.size == 0:
            continue
        ids[mask] = segment_id
        segments.append({"id": int(segment_id), "category_id": category_id, "iscrowd": iscrowd,
                         "area": int(mask.sum()),
                         "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]})
    return image, ids, segments


def _distinct_ids(rng: np.random.Generator, count: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < count:
        value = int(rng.integers(1, 256**3))
        if value not in ids:
            ids.append(value)
    return ids


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _sky(rng: np.random.Generator, y: np.ndarray, height: int) -> np.ndarray:
    """Pale blue, lighter towards the horizon, with soft white clouds; [H, W, 3] in 0..255."""
    top = np.array([90, 140, 225], np.float32) * rng.uniform(0.9, 1.05)
    bottom = np.array([185, 215, 245], np.float32)
    t = np.clip(y / (0.4 * height), 0, 1)[..., None]
    colour = (1 - t) * top + t * bottom
    clouds = np.clip(_smooth_noise(rng, *y.shape, 5) - 0.6, 0, 1)[..., None]
    return np.clip(colour + clouds * (255 - colour) * 0.8, 0, 255)


def _sand(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Yellow with dark and light speckles; [H, W, 3] in 0..255."""
    base = np.array([215, 190, 95], np.float32) * rng.uniform(0.85, 1.05)
    speckle = rng.random((height, width)).astype(np.float32)
    shade = np.where(speckle < 0.12, 0.6, np.where(speckle > 0.9, 1.15, 1.0))
    return np.clip(base * shade[..., None], 0, 255)


def write_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """Write the toy dataset under ``root`` (the layout of the module docstring); returns root. Image ids are
    unique across the splits (val follows train)."""
    params = toy_params(_LAYOUT, num_train, num_val, size, seed)
    out = Path(root)
    owned = [out / "train2017", out / "val2017", out / "annotations"]
    with writing(out, owned, params, num_train + num_val) as bar:
        for split, count, first_id in (("train", num_train, 1), ("val", num_val, num_train + 1)):
            images_dir, png_dir = out / f"{split}2017", out / "annotations" / f"panoptic_{split}2017"
            images_dir.mkdir(parents=True)
            png_dir.mkdir(parents=True)
            images, annotations = [], []
            for index, scene in scenes(seed, split, count, size, bar):
                rng = np.random.default_rng([seed, 2 + (split == "val"), index])
                image, ids, segments = panoptic_scene(scene, rng, crowd=index % CROWD_EVERY == CROWD_EVERY // 2)
                image_id = first_id + index
                write_jpeg(images_dir / f"{image_id:012d}.jpg", image)
                ok, png = cv2.imencode(".png", id2rgb(ids)[..., ::-1])
                if not ok:
                    raise OSError(f"could not encode the panoptic PNG of image {image_id}")
                (png_dir / f"{image_id:012d}.png").write_bytes(png.tobytes())
                images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": size[0],
                               "width": size[1]})
                annotations.append({"image_id": image_id, "file_name": f"{image_id:012d}.png",
                                    "segments_info": segments})
            document = {"info": {"description": "densepred synthetic panoptic scenes", "version": _LAYOUT},
                        "images": images, "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}
            (out / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(document))
    return out


def ensure_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """The toy root, generated unless a complete copy with these parameters exists."""
    out = Path(root)
    if is_complete(out, toy_params(_LAYOUT, num_train, num_val, size, seed)):
        return out
    return write_toy_dataset(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
