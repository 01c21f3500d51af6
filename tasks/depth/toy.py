"""The depth toy dataset: synthetic scenes (``tasks.common.synthetic``) in the NYU Depth v2 layout of GLPDepth
that ``datasets.NYUDepthV2`` reads, with Kinect-like holes in the depth."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tasks.common.synthetic import SPLITS, is_complete, scenes, toy_params, write_jpeg, write_png, writing

from .datasets import NYU_DEPTH_SCALE

TRAIN_SCENES = ("bathroom_0001", "bedroom_0004", "kitchen_0028b", "living_room_0010", "office_0003")
TEST_SCENES = ("bathroom", "bedroom", "kitchen", "living_room", "office")


def write_toy_dataset(root, *, num_train: int, num_val: int, size=(120, 160), seed: int = 0) -> Path:
    """The GLPDepth layout under ``root/nyu_depth_v2`` (returned), ``val`` being the official test split.

    Train pairs are ``<scene_dir>/rgb_%05d.jpg`` + ``sync_depth_%05d.png`` (numbered within each scene
    directory, like BTS's sync set); test pairs are ``official_splits/test/<scene_type>/...`` (numbered
    by a global frame index, like the labelled set). Depth PNGs are uint16 millimetres with 0 = invalid:
    Kinect-like holes (a shadow band left of each near object, a few blobs). As in GLPDepth, lines of
    ``train_list.txt`` are relative to ``nyu_depth_v2/`` and lines of ``test_list.txt`` to
    ``nyu_depth_v2/official_splits/test/``; both lists sit in ``nyu_depth_v2/`` (GLPDepth ships them with
    its code instead).
    """
    params = toy_params("nyu", num_train, num_val, size, seed)
    out = Path(root) / "nyu_depth_v2"
    owned = [out / name for name in (*TRAIN_SCENES, "official_splits", "train_list.txt", "test_list.txt")]
    splits = (("train", num_train, out, TRAIN_SCENES, "train_list.txt"),
              ("val", num_val, out / "official_splits" / "test", TEST_SCENES, "test_list.txt"))
    with writing(out, owned, params, num_train + num_val) as bar:
        for split, count, base, folders, list_name in splits:
            lines = []
            for index, scene in scenes(seed, split, count, size, bar):
                folder = folders[index % len(folders)]
                number = index // len(folders) if split == "train" else index
                rgb, depth = f"rgb_{number:05d}.jpg", f"sync_depth_{number:05d}.png"
                millimetres = np.round(scene.depth * NYU_DEPTH_SCALE).astype(np.uint16)
                millimetres[kinect_holes(np.random.default_rng([seed, SPLITS[split], index, 1]), scene.depth)] = 0
                (base / folder).mkdir(parents=True, exist_ok=True)
                write_jpeg(base / folder / rgb, scene.image)
                write_png(base / folder / depth, millimetres)
                lines.append(f"/{folder}/{rgb} /{folder}/{depth}\n")
            (out / list_name).write_text("".join(lines))
    return out


def kinect_holes(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """[H, W] bool: a 1-2 px shadow left of every depth edge (the IR projector is offset) and 0-3 blobs."""
    step = depth[:, 1:] - depth[:, :-1]  # > 0: the surface to the right is farther, < 0: nearer
    edge = np.zeros(depth.shape, bool)
    edge[:, :-1] = step < -0.3
    holes = edge.astype(np.uint8)
    for shift in range(1, int(rng.integers(1, 3))):
        holes[:, :-shift] |= edge[:, shift:]
    for _ in range(int(rng.integers(0, 4))):
        centre = (int(rng.integers(0, depth.shape[1])), int(rng.integers(0, depth.shape[0])))
        axes = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        cv2.ellipse(holes, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return holes.astype(bool)


def ensure_toy_dataset(root, *, num_train: int, num_val: int, size=(120, 160), seed: int = 0) -> Path:
    """The nyu_depth_v2 path, generated unless a complete copy with these parameters exists."""
    out = Path(root) / "nyu_depth_v2"
    if is_complete(out, toy_params("nyu", num_train, num_val, size, seed)):
        return out
    return write_toy_dataset(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
