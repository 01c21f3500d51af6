"""Depth datasets: NYU Depth v2 in the GLPDepth / BTS layout.

A sample is ``{"image": uint8 [H, W, 3] RGB, "depth": float32 [H, W] metres (0 = no measurement),
"path": image path}``, then ``transforms(sample)`` if given. As in ``tasks.segmentation.datasets``,
``dataset[(index, seed)]`` seeds ``sample["rng"] = np.random.default_rng(seed)`` for the random transforms
(so a sample's augmentation depends only on its key), ``dataset[index]`` uses an unseeded generator, and the
``rng`` entry is removed before the sample is returned.

Errors: a missing root, data folder, list file or listed file is a ``FileNotFoundError`` naming the path
(all listed files are checked when the dataset is built); a malformed list line, an unreadable or truncated
image or depth file (``tasks.common.images``), a depth PNG that is not 16-bit single-channel or that holds
metres instead of millimetres, a depth map with no valid pixel, or an image and depth of different sizes is
a ``ValueError`` naming the file (all but the first when the sample is read).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from torch.utils.data import Dataset

from tasks.common.images import read_image, read_image_unchanged
from tasks.common.transforms import SeededDataset

Transform = Callable[[dict], dict]

NYU_DEPTH_SCALE = 1000.0  # uint16 PNG units per metre (millimetres)
NYU_MAX_DEPTH = 10.0  # metres: the evaluation cap and GLPN's output range on NYU
# Metres stored as integers (depth 1-10 -> values 1-10) read as millimetres give a scene whose farthest point is
# closer than this; no real depth map (the Kinect sees from 0.5 m) is, so such a file is refused.
MIN_FARTHEST_DEPTH = 0.1  # metres

_NYU_LAYOUT = (
    "expected the GLPDepth layout: <root>/nyu_depth_v2/<scene>/rgb_XXXXX.jpg + sync_depth_XXXXX.png (train, "
    "BTS's sync set) and <root>/nyu_depth_v2/official_splits/test/<scene type>/... (test, extracted from "
    "nyu_depth_v2_labeled.mat); root may also be the nyu_depth_v2 folder itself"
)


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """``float32 [H, W]`` metres from a 16-bit single-channel PNG holding ``metres * scale`` (0 = invalid).
    Images are read with their EXIF orientation ignored, so their pixels line up with the depth PNG's."""
    raw = read_image_unchanged(path, "depth file")
    expected = f"depth maps must be uint16 single-channel PNGs holding metres x {scale:g} (0 = no measurement)"
    if raw.dtype != np.uint16 or raw.ndim != 2:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        hint = " (floating-point values look like metres: store round(metres x scale) as uint16)" if raw.dtype.kind == "f" else ""
        raise ValueError(f"depth file {path} is {raw.dtype} with {channels} channel(s); {expected}{hint}")
    farthest = int(raw.max())
    if 0 < farthest < MIN_FARTHEST_DEPTH * scale:
        raise ValueError(
            f"depth file {path} holds values up to {farthest}, i.e. a farthest point at {farthest / scale:g} m; it "
            f"looks like metres, not metres x {scale:g}: {expected}"
        )
    return raw.astype(np.float32) / np.float32(scale)


def read_pair_list(list_file: Path, data_dir: Path) -> list[tuple[Path, Path]]:
    """``(image, depth)`` paths from a BTS/GLPDepth list: ``/scene/rgb_X.jpg /scene/sync_depth_X.png``
    per line, relative to ``data_dir`` (a leading '/' is allowed); a third column (BTS's focal length) is
    ignored. Every listed file must exist."""
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ValueError(
                f"{list_file}:{number}: expected 'image depth [focal]', got {len(fields)} fields: {line!r}"
            )
        pair = tuple(data_dir / field.lstrip("/") for field in fields[:2])
        for path in pair:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is listed in {list_file}:{number} but does not exist")
        pairs.append(pair)
    if not pairs:
        raise ValueError(f"list file {list_file} holds no pairs")
    return pairs


class NYUDepthV2(SeededDataset, Dataset):
    """NYU Depth v2, GLPDepth layout. ``split="train"``: the BTS sync set under ``nyu_depth_v2/`` (24,231
    pairs in GLPDepth's list); ``"test"``: the 654 official test frames under
    ``nyu_depth_v2/official_splits/test/``. ``list_file`` defaults to ``nyu_depth_v2/{train,test}_list.txt``
    (what ``tasks.depth.toy.write_toy_dataset`` writes); GLPDepth ships its lists with its code
    (``code/dataset/filenames/nyudepthv2/``), so pass that path for the real data. Depth PNGs hold uint16
    millimetres, 0 where the Kinect measured nothing.
    """

    depth_scale = NYU_DEPTH_SCALE
    max_depth = NYU_MAX_DEPTH

    def __init__(self, root: Union[str, Path], split: str = "train", list_file: Union[str, Path, None] = None,
                 transforms: Optional[Transform] = None):
        if split not in ("train", "test"):
            raise ValueError(f"NYUDepthV2: split must be 'train' or 'test', got {split!r}")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be a callable on a sample dict or None, got {type(transforms).__name__}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"NYUDepthV2: root {root} does not exist; {_NYU_LAYOUT}")
        base = root / "nyu_depth_v2" if (root / "nyu_depth_v2").is_dir() else root
        data_dir = base if split == "train" else base / "official_splits" / "test"
        if not data_dir.is_dir():
            raise FileNotFoundError(f"NYUDepthV2: no {split} folder {data_dir}; {_NYU_LAYOUT}")
        list_file = Path(list_file) if list_file is not None else base / f"{split}_list.txt"
        if not list_file.is_file():
            raise FileNotFoundError(
                f"NYUDepthV2: list file {list_file} does not exist; pass list_file= (GLPDepth's "
                f"code/dataset/filenames/nyudepthv2/{split}_list.txt, lines relative to {data_dir})"
            )
        self.root, self.split, self.list_file, self.transforms = base, split, list_file, transforms
        self.pairs = read_pair_list(list_file, data_dir)

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> dict:
        """The untransformed sample ``index``, depth in metres."""
        image_path, depth_path = self.pairs[index]
        image, depth = read_image(image_path), read_depth_png(depth_path, self.depth_scale)
        if image.shape[:2] != depth.shape:
            raise ValueError(f"image {image_path} is {image.shape[:2]} but its depth {depth_path} is {depth.shape}")
        if not (depth > 0).any():
            raise ValueError(f"depth file {depth_path} has no valid pixel (all zero)")
        return {"image": image, "depth": depth, "path": str(image_path)}


def summarize_samples(samples: list[dict], ds) -> list[str]:
    """``tools/check_data.py``'s line about a split's depth maps: the valid range and share of valid pixels."""
    valid = np.concatenate([s["depth"][s["depth"] > 0] for s in samples])
    total = sum(s["depth"].size for s in samples)
    return [f"depth {valid.min():.2f}-{valid.max():.2f} m, {valid.size / total:.0%} of pixels valid"]
