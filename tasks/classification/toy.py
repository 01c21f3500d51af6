"""The classification toy dataset: synthetic shape classes in the ImageNet folder layout.

Each image is one shape on a cluttered, nearly grey background; the class is the shape, and each shape wears
its own texture in its own band of hues (60° wide), so a small network trained from scratch in minutes can
pick up any of three cues: colour (visible everywhere), texture (the stride-4 features) and silhouette (the
later stages). Position (inside the central 80%, so the evaluation centre-crop keeps it), size (35-65% of the
side) and rotation are random and shared by every class. Every image has its own
generator seeded by ``(seed, split, class, index)``: a file's content does not depend on how many others
are written.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from tasks.common.synthetic import SPLITS, is_complete, toy_params, write_jpeg, writing

TOY_CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")
TOY_VERSION = 2  # bump when these pictures change, so that cached datasets are regenerated
_TEXTURES = ("stripes", "checkerboard", "dots", "plain", "waves", "grid")  # TOY_CLASSES[i] wears _TEXTURES[i]


def make_image(rng: np.random.Generator, class_id: int, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [h, w, 3]`` RGB for ``size`` = (h, w): shape ``TOY_CLASSES[class_id]`` in its texture on clutter."""
    if not 0 <= class_id < len(TOY_CLASSES):
        raise ValueError(f"class_id must be in 0..{len(TOY_CLASSES) - 1}, got {class_id}")
    if min(size) < 32:
        raise ValueError(f"size must be (h, w) with sides >= 32, got {size}")
    image = _background(rng, size)
    mask = _shape_mask(rng, class_id, size)
    hue = 60.0 * class_id + rng.uniform(-20, 20)  # the class's own hue band
    colour_a = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    colour_b = _hsv(hue + rng.uniform(-10, 10), rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.45))
    weight = _texture(rng, class_id, size)[..., None]
    fill = weight * colour_a + (1 - weight) * colour_b
    image = np.where(mask[..., None], fill, image) * 255 + rng.normal(0, 3.0, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth grey-ish blotches plus a few thin random lines (clutter that is not any class's texture)."""
    tint = rng.uniform(0.3, 0.7, 3).astype(np.float32)
    coarse = (0.75 * rng.uniform(0.2, 0.8, (4, 4, 1)) + 0.25 * tint).astype(np.float32)
    image = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        p, q = rng.integers(0, size[::-1], 2), rng.integers(0, size[::-1], 2)
        cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q), tuple(float(v) for v in rng.uniform(0, 1, 3)), 1)
    return np.clip(image, 0, 1)


def _shape_mask(rng: np.random.Generator, class_id: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    r = rng.uniform(0.35, 0.65) * min(h, w) / 2
    cx, cy = rng.uniform(0.1 * w + r, 0.9 * w - r), rng.uniform(0.1 * h + r, 0.9 * h - r)
    angle = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((h, w), np.uint8)
    centre = (round(cx), round(cy))
    name = TOY_CLASSES[class_id]
    if name == "circle":
        cv2.circle(mask, centre, round(r), 1, -1)
    elif name == "ring":
        cv2.circle(mask, centre, round(r), 1, -1)
        cv2.circle(mask, centre, round(r * 0.5), 0, -1)
    elif name == "cross":
        arm = np.array([[-1, -0.3], [1, -0.3], [1, 0.3], [-1, 0.3]]) * r
        for turn in (0, np.pi / 2):
            cv2.fillConvexPoly(mask, _place(arm, angle + turn, cx, cy), 1)
    else:
        corners = {"square": 4, "triangle": 3, "star": 10}[name]
        t = np.arange(corners) * 2 * np.pi / corners
        radius = np.where(np.arange(corners) % 2, 0.45, 1.0) * r if name == "star" else np.full(corners, r)
        polygon = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
        cv2.fillPoly(mask, [_place(polygon, angle, cx, cy)], 1)
    return mask.astype(bool)


def _place(points: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.round(points @ rotation.T + [cx, cy]).astype(np.int32)


def _texture(rng: np.random.Generator, class_id: int, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` weights in [0, 1] between the two colours: the class's pattern at a random angle."""
    y, x = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    a, b = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    period = rng.uniform(5.0, 8.0)
    kind = _TEXTURES[class_id]
    if kind == "stripes":
        return np.clip(0.5 + 2 * np.sin(2 * np.pi * a / period), 0, 1)
    if kind == "checkerboard":
        return np.clip(0.5 + 3 * np.sin(2 * np.pi * a / period) * np.sin(2 * np.pi * b / period), 0, 1)
    if kind == "dots":
        da, db = a / period - np.round(a / period), b / period - np.round(b / period)
        return np.clip(0.3 * period - np.hypot(da, db) * period + 0.5, 0, 1)
    if kind == "waves":
        return np.clip(0.5 + 2 * np.sin(2 * np.pi * (a + 2.0 * np.sin(2 * np.pi * b / (3 * period))) / period), 0, 1)
    if kind == "grid":
        lines = np.minimum(np.abs(a / period - np.round(a / period)), np.abs(b / period - np.round(b / period)))
        return (lines * period > 1.2).astype(np.float32)
    return np.ones(size, np.float32)  # plain


def write_toy_dataset(root, *, num_train: int, num_val: int, size=(64, 64), seed: int = 0) -> Path:
    """``root/{train,val}/<class name>/<class name>_<index>.JPEG`` (the ImageNet layout that ``datasets.ImageNet``
    reads), ``num_train`` / ``num_val`` images per class of ``size`` (h, w). Returns ``root``."""
    params = {**toy_params("imagenet", num_train, num_val, size, seed), "classes": list(TOY_CLASSES), "toy_version": TOY_VERSION}
    out = Path(root)
    total = (num_train + num_val) * len(TOY_CLASSES)
    with writing(out, [out / "train", out / "val"], params, total) as bar:
        for split, count in (("train", num_train), ("val", num_val)):
            for class_id, name in enumerate(TOY_CLASSES):
                folder = out / split / name
                folder.mkdir(parents=True)
                for index in range(count):
                    rng = np.random.default_rng([seed, SPLITS[split], class_id, index])
                    write_jpeg(folder / f"{name}_{index:05d}.JPEG", make_image(rng, class_id, tuple(size)))
                    bar.update()
    return out


def ensure_toy_dataset(root, *, num_train: int, num_val: int, size=(64, 64), seed: int = 0) -> Path:
    """``root``, generated unless a complete copy with these parameters is already there."""
    params = {**toy_params("imagenet", num_train, num_val, size, seed), "classes": list(TOY_CLASSES), "toy_version": TOY_VERSION}
    if is_complete(Path(root), params):
        return Path(root)
    return write_toy_dataset(root, num_train=num_train, num_val=num_val, size=size, seed=seed)


def _hsv(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_degrees % 360) / 360, saturation, value), np.float32)
