"""Synthetic scenes of textured shapes on a textured ground plane, and what writing them to disk needs.

The toy configs train from scratch on a laptop CPU in minutes, so the data must be learnable from
little while still exercising the real loaders. This module renders the scenes (``make_scene``) and holds
the machinery every toy writer shares (seeding, progress, completion markers, file encoding); each task's
``toy.py`` writes them in its real on-disk format next to the reader of that format:
``tasks.segmentation.toy`` (ADE20K), ``tasks.depth.toy`` (NYU Depth v2, GLPDepth layout) and
``tasks.detection.toy`` (COCO), each with ``write_toy_dataset`` and ``ensure_toy_dataset``.

A scene (``make_scene``) is a pinhole camera looking at a ground plane, with the horizon above the
image (rolled by up to 8 degrees) and 1-4 upright shapes standing on the plane, each facing the camera.

Why a small network can learn it:

- **Classes** differ in every local statistic at once: background is a desaturated floor with thin
  grout lines; circles carry stripes in red/orange, squares a checkerboard in green, triangles dots
  in blue (two colours per object, random within the class's hue band, saturation >= 0.5). Shapes
  are 15-45% of the short side, so even the stride-32 features see whole shapes and the stride-4
  ones see their texture.
- **Background depth** is ``Z = k / d`` with ``d`` the (rolled) distance to the horizon line, chosen
  per image so ``Z`` runs from ``z_near`` in [1, 2] m at the bottom to ``z_far`` in [4.5, 8] m at the
  top. The floor tiles are drawn in ground coordinates, so their converging lines show the horizon and
  roll, and since every floor uses the same ``TILE_SIZE``, a tile's width in pixels (``f * TILE_SIZE /
  Z``) gives absolute depth locally; exponential fog towards a fixed grey (``FOG_DISTANCE``) adds a
  second local cue (contrast and saturation fall with distance).
- **Object depth** is constant over an object and equals the ground depth where its bottom touches
  the floor (contact points lie in the lower 60% of the image). Its physical size S is 0.45-0.75 m,
  so its image size also says ``Z`` (size = f S / Z, clipped to 15-45% of the short side), and it
  gets the same fog. Objects are painted far to near, so occlusion agrees with depth.

Conventions: labels 0 = background, 1..3 = ``SHAPE_CLASSES``; ``bbox`` is xyxy in pixel-edge
coordinates ``(x_min, y_min, x_max + 1, y_max + 1)`` of the visible mask, which is what
``pycocotools.mask.toBbox`` gives. An object with fewer than ``MIN_VISIBLE_PIXELS`` visible pixels is
dropped from ``instances`` (like an unannotated speck) but keeps its pixels in ``labels`` and ``depth``.
Every image is drawn from its own generator seeded by ``(seed, split, index)`` (``scenes``), so a file's
content does not depend on how many others are written.
"""
from __future__ import annotations

import colorsys
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

SHAPE_CLASSES = ("circle", "square", "triangle")
MIN_VISIBLE_PIXELS = 30
TILE_SIZE = 0.4  # metres; one size everywhere, so a tile's image size gives absolute depth
FOG_DISTANCE = 12.0  # metres; transmittance exp(-Z / FOG_DISTANCE) is 0.92 at 1 m and 0.51 at 8 m
FOG_COLOUR = np.array([0.78, 0.80, 0.84], np.float32)
GENERATOR_VERSION = 1  # bump when the pictures change, so that cached datasets are regenerated

_CLASS_HUES = {1: (0.0, 40.0), 2: (95.0, 145.0), 3: (200.0, 250.0)}  # degrees, per class id
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]


class Instance(NamedTuple):
    class_id: int  # 1..3
    mask: np.ndarray  # [H, W] bool, visible pixels only
    bbox: tuple[int, int, int, int]  # xyxy, pixel edges


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    labels: np.ndarray  # [H, W] uint8, 0 = background, 1..3 = SHAPE_CLASSES
    depth: np.ndarray  # [H, W] float32 metres, > 0 everywhere
    instances: list[Instance]  # far to near


def make_scene(rng: np.random.Generator, height: int, width: int, *, num_objects: int | None = None) -> Scene:
    """One random scene; ``num_objects`` defaults to a random 1..4 (0 gives an empty floor)."""
    if height < 32 or width < 32:
        raise ValueError(f"height and width must be >= 32, got {height}x{width}")
    if num_objects is not None and num_objects < 0:
        raise ValueError(f"num_objects must be >= 0 or None, got {num_objects}")
    if num_objects is None:
        num_objects = int(rng.integers(1, 5))
    ground = _Ground(rng, height, width)
    image = _floor_albedo(rng, ground)
    depth = ground.depth.copy()
    labels = np.zeros((height, width), np.uint8)
    owner = np.full((height, width), -1, np.int16)
    objects = sorted((_place_object(rng, ground) for _ in range(num_objects)), key=lambda o: -o[2])
    for index, (class_id, shape, z) in enumerate(objects):
        ys, xs = np.nonzero(shape)
        image[ys, xs] = _object_albedo(rng, class_id, ys, xs)
        depth[ys, xs], labels[ys, xs], owner[ys, xs] = z, class_id, index
    fog = np.exp(-depth / FOG_DISTANCE)[..., None]
    image = image * fog + FOG_COLOUR * (1.0 - fog)
    image = image * 255.0 + rng.normal(0.0, 2.5, image.shape).astype(np.float32)
    instances = []
    counts = np.bincount(owner.ravel() + 1, minlength=len(objects) + 1)[1:]
    for index, (class_id, _, _) in enumerate(objects):
        if counts[index] >= MIN_VISIBLE_PIXELS:
            visible = owner == index
            ys, xs = np.nonzero(visible)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            instances.append(Instance(class_id, visible, bbox))
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), labels, depth.astype(np.float32), instances)


class _Ground:
    """The floor seen by a camera with focal length ``f`` (px) rolled by ``roll``: Z = k / (v - c)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.height, self.width = height, width
        self.f = float(min(height, width))
        self.roll = np.deg2rad(rng.uniform(-8.0, 8.0))
        self.z_near, self.z_far = rng.uniform(1.0, 2.0), rng.uniform(4.5, 8.0)
        sin, cos = np.sin(self.roll), np.cos(self.roll)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        x -= width / 2
        self.u, v = x * cos + y * sin, y * cos - x * sin  # along / across the horizon line
        v_min, v_max = v.min(), v.max()
        # Choose the horizon offset c and scale k so that depth spans exactly [z_near, z_far].
        self.c = (self.z_far * v_min - self.z_near * v_max) / (self.z_far - self.z_near)
        self.k = self.z_near * (v_max - self.c)
        self.depth = self.k / (v - self.c)


def _floor_albedo(rng: np.random.Generator, ground: _Ground) -> np.ndarray:
    """[H, W, 3] float in [0, 1]: a desaturated colour with the grout lines of square tiles on the ground."""
    z = ground.depth
    tiles_x, tiles_z = ground.u * z / ground.f / TILE_SIZE + rng.uniform(0, 1), z / TILE_SIZE + rng.uniform(0, 1)
    footprint_x, footprint_z = z / ground.f / TILE_SIZE, z * z / ground.k / TILE_SIZE  # one pixel, in tiles
    grout = np.maximum(_grout(tiles_x, footprint_x), _grout(tiles_z, footprint_z))
    coarse = rng.normal(0.0, 1.0, (4, 4)).astype(np.float32)
    blotches = cv2.resize(coarse, (ground.width, ground.height), interpolation=cv2.INTER_CUBIC)
    base = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.15), rng.uniform(0.55, 0.85))
    shade = (1.0 + 0.05 * blotches) * (1.0 - 0.6 * grout)
    return np.clip(shade[..., None] * base, 0.0, 1.0)


def _grout(t: np.ndarray, footprint: np.ndarray, width: float = 0.035) -> np.ndarray:
    """Gaussian lines at integer ``t``, blurred by the pixel footprint (analytic anti-aliasing)."""
    blurred = np.sqrt(width**2 + (0.5 * footprint) ** 2)
    line = np.exp(-0.5 * ((t - np.round(t)) / blurred) ** 2) * (width / blurred)
    mean = min(1.0, width * np.sqrt(2 * np.pi))  # where tiles are finer than pixels, only the average remains
    return line + mean * (1.0 - width / blurred)


def _place_object(rng: np.random.Generator, ground: _Ground) -> tuple[int, np.ndarray, float]:
    """(class id, [H, W] uint8 mask, depth): an upright shape standing on the floor."""
    class_id = int(rng.integers(1, 4))
    cx, bottom = rng.uniform(0.1, 0.9) * ground.width, rng.uniform(0.4, 1.0) * (ground.height - 1)
    z = float(ground.depth[round(bottom), min(round(cx), ground.width - 1)])
    side = min(ground.height, ground.width)
    size = np.clip(rng.uniform(0.45, 0.75) * ground.f / z, 0.15 * side, 0.45 * side)
    mask = np.zeros((ground.height, ground.width), np.uint8)
    if class_id == 1:
        radius = size / 2
        cv2.circle(mask, (round(cx), round(bottom - radius)), round(radius), 1, thickness=-1)
    else:
        if class_id == 2:
            angle = np.deg2rad(rng.uniform(-15, 15))
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = corners @ rotation.T
        else:
            half, height = size * rng.uniform(0.45, 0.58), size * rng.uniform(0.85, 1.1)
            corners = np.array([[-half, 0.0], [half, 0.0], [rng.uniform(-0.25, 0.25) * half, -height]])
        corners += [cx, bottom - corners[:, 1].max()]
        cv2.fillConvexPoly(mask, np.round(corners).astype(np.int32), 1)
    return class_id, mask, z


def _object_albedo(rng: np.random.Generator, class_id: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """[N, 3] float at the object's pixels ``(ys, xs)``: the class's texture in two colours of its hue band."""
    low, high = _CLASS_HUES[class_id]
    hue = rng.uniform(low, high)
    value = rng.uniform(0.7, 1.0)
    bright = _hsv(hue, rng.uniform(0.65, 1.0), value)
    dark = _hsv(np.clip(hue + rng.uniform(-12, 12), low, high), rng.uniform(0.5, 1.0), value * rng.uniform(0.3, 0.55))
    y, x = (ys - ys.mean()).astype(np.float32), (xs - xs.mean()).astype(np.float32)
    size = max(np.ptp(xs), np.ptp(ys)) + 1
    angle = rng.uniform(0, np.pi)
    a, b = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    period = float(np.clip(size / rng.uniform(4.0, 6.0), 4.0, 12.0))
    if class_id == 1:  # stripes
        weight = np.clip(0.5 + 2.0 * np.sin(2 * np.pi * a / period), 0, 1)
    elif class_id == 2:  # checkerboard
        half = period / 2
        weight = np.clip(0.5 + 3.0 * np.sin(np.pi * a / half) * np.sin(np.pi * b / half), 0, 1)
    else:  # dots on a hexagonal-ish lattice
        row = np.floor(b / period)
        da = (a + 0.5 * period * (row % 2)) / period
        distance = np.hypot(da - np.round(da), b / period - row - 0.5) * period
        weight = np.clip(0.3 * period - distance + 0.5, 0, 1)
    return weight[:, None] * bright + (1.0 - weight[:, None]) * dark


def _hsv(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_degrees % 360) / 360, saturation, value), np.float32)


# ---------------------------------------------------------------------------------------------------
# Writing a toy dataset: what the writers in tasks/<task>/toy.py share. Markers: `.synthetic` is written
# first and stays (this folder is ours to clear), `.complete` last; both hold the parameters as JSON. A
# missing or different `.complete` means: generate again.

SPLITS = {"train": 0, "val": 1}  # a split's code in the seed of each of its images


def scenes(seed: int, split: str, count: int, size: tuple[int, int], bar: tqdm, *,
           empty_every: int = 0) -> Iterator[tuple[int, Scene]]:
    """``(index, scene)`` for the ``count`` images of ``split``, image ``index`` drawn from
    ``default_rng([seed, SPLITS[split], index])``; with ``empty_every`` = n, every n-th image (from the first)
    has no objects."""
    for index in range(count):
        rng = np.random.default_rng([seed, SPLITS[split], index])
        empty = empty_every and index % empty_every == 0
        yield index, make_scene(rng, *size, num_objects=0 if empty else None)
        bar.update()


def toy_params(layout: str, num_train, num_val, size, seed) -> dict:
    """The checked parameters of a toy dataset, as its markers store them."""
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 32 for s in size):
        raise ValueError(f"size must be (height, width) with integers >= 32, got {size!r}")
    return {"layout": layout, "version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "size": [int(s) for s in size], "seed": int(seed)}


def is_complete(out: Path, params: dict) -> bool:
    """Whether ``out`` holds a finished toy dataset written with exactly ``params``."""
    try:
        return json.loads((out / ".complete").read_text()) == params
    except (OSError, ValueError):
        return False


@contextmanager
def writing(out: Path, owned: list[Path], params: dict, total: int) -> Iterator[tqdm]:
    """Clears what an earlier generation wrote to ``owned`` (refusing to touch data this module did not write),
    yields a progress bar over ``total`` images, and marks ``out`` complete if the block ends without error."""
    ours = (out / ".synthetic").exists()
    present = [path for path in owned if path.exists()]
    if present and not ours:
        raise ValueError(f"{out} already holds {[p.name for p in present]} without a synthetic-data marker; "
                         "refusing to overwrite what may be a real dataset")
    out.mkdir(parents=True, exist_ok=True)
    (out / ".complete").unlink(missing_ok=True)
    (out / ".synthetic").write_text(json.dumps(params))
    for path in present:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    with tqdm(total=total, desc=f"{params['layout']} toy", unit="img", disable=None, leave=False) as bar:
        yield bar
    (out / ".complete").write_text(json.dumps(params))


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """``[H, W, 3]`` uint8 RGB as a quality-95 JPEG (OpenCV's encoder, so files are the same on every run)."""
    _write(path, *cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _JPEG))


def write_png(path: Path, array: np.ndarray) -> None:
    """A single-channel ``[H, W]`` uint8 or uint16 array as a PNG."""
    _write(path, *cv2.imencode(".png", array))


def _write(path: Path, ok: bool, data: np.ndarray) -> None:
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())
