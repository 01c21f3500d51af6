"""Segmentation datasets: ADE20K (SceneParse150, the official layout) and a folder of images + index masks.

A sample is ``{"image": uint8 [H, W, 3] RGB, "mask": uint8 [H, W] class indices, "path": image path}``,
then ``transforms(sample)`` if given. Random transforms draw from ``sample["rng"]`` (a
``numpy.random.Generator``; see ``transforms.py``): ``dataset[(index, seed)]`` seeds it with
``np.random.default_rng(seed)`` (``seed`` an int or a sequence of ints, e.g. the training sampler's
``(seed, epoch, index)``), so a sample's augmentation depends only on its key; ``dataset[index]`` uses a
fresh, unseeded generator. The ``rng`` entry is removed before the sample is returned.

Errors: a missing folder or an image without its mask (or the reverse) is a ``FileNotFoundError`` naming
the path; a file that cannot be decoded or is truncated (``tasks.common.images``), an RGB mask, or a label
outside the classes is a ``ValueError`` naming the file, raised when the sample is read. Images are read with
their EXIF orientation ignored, so the pixels line up with the mask's, which PIL reads without rotating.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from tasks.common.images import read_bytes, read_image
from tasks.common.transforms import SeededDataset

Transform = Callable[[dict], dict]

# mmseg's names in label order (mask value k+1 -> class k): the first synonym of each row of the devkit's
# objectInfo150.csv, except row 90 where mmseg took "television receiver" over "television". The copy of
# that csv in tests/data joins the words of a name with ';' like the synonyms, so "the text before the
# first ';'" would give truncated and duplicated names ("chest", "pool", two "screen");
# tests/tasks/segmentation/test_datasets.py checks every name against the csv. mmseg spells the 8th
# name 'bed ' with a trailing space, a typo that breaks name lookups: we write 'bed'.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


def distinct_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` RGB colours picked greedily, each as far (Euclidean RGB) from black and from all earlier picks as
    possible, over the 16-level grid 0, 17, ..., 255. Deterministic (ties go to the first grid point); black
    stays free for ignored pixels."""
    levels = np.arange(0, 256, 17, dtype=np.float64)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    if not 0 <= n <= len(grid) - 1:
        raise ValueError(f"distinct_palette: n must be in 0..{len(grid) - 1}, got {n}")
    distance = np.linalg.norm(grid, axis=1)
    picks = []
    for _ in range(n):
        i = int(np.argmax(distance))
        picks.append(tuple(int(v) for v in grid[i]))
        distance = np.minimum(distance, np.linalg.norm(grid - grid[i], axis=1))
    return tuple(picks)


# Our own palette, generated above (the official mmseg ADE20K palette is not reproduced here): 150
# distinct colours, pairwise at least ~40 apart in RGB.
ADE20K_PALETTE: tuple[tuple[int, int, int], ...] = distinct_palette(len(ADE20K_CLASSES))


def read_mask(path: Path) -> np.ndarray:
    """``uint8 [H, W]`` class indices from a single-channel PNG ("L") or a palette PNG ("P", its indices)."""
    data = read_bytes(path, "mask file")
    try:
        with Image.open(io.BytesIO(data)) as mask:
            mode, bands = mask.mode, len(mask.getbands())
            array = np.array(mask) if mode in ("L", "P") else None
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read mask file {path}: {err}") from err
    if array is None:
        hint = "; it stores colours: convert colour-coded masks to index masks first" if bands > 1 else ""
        raise ValueError(
            f"mask file {path} has PIL mode {mode!r}; masks must hold class indices as 8-bit single-channel "
            f"PNGs (mode 'L', or 'P' whose palette indices are the classes){hint}"
        )
    return array


def reduce_zero_label(mask: np.ndarray) -> np.ndarray:
    """0 -> 255 (ignored), k -> k-1, 255 stays 255 (the mmseg / HF rule)."""
    reduced = mask - np.uint8(1)  # uint8 arithmetic wraps 0 to 255
    reduced[reduced == 254] = 255  # an original 255 became 254
    return reduced


def _files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """stem -> path for the files of ``folder`` whose lower-cased suffix is in ``suffixes``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise ValueError(f"two files share the stem {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return found


def _pair(images_dir: Path, masks_dir: Path, image_suffixes: Sequence[str], mask_suffix: str) -> list[tuple[Path, Path]]:
    for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    images = _files(images_dir, tuple(s.lower() for s in image_suffixes))
    masks = _files(masks_dir, (mask_suffix.lower(),))
    for stem, path in images.items():
        if stem not in masks:
            raise FileNotFoundError(f"image {path} has no mask {masks_dir / (stem + mask_suffix)}")
    for stem, path in masks.items():
        if stem not in images:
            raise FileNotFoundError(f"mask {path} has no image named {stem}{{{','.join(image_suffixes)}}} in {images_dir}")
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(image_suffixes)}) in {images_dir}")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


class _PairedFolders(SeededDataset, Dataset):
    """Reads ``(image, mask)`` file pairs; subclasses set the pairs and the label rules."""

    def __init__(self, pairs: list[tuple[Path, Path]], class_names: Sequence[str], *, reduce_zero_label: bool,
                 ignore_index: int, transforms: Optional[Transform]):
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be a callable on a sample dict or None, got {type(transforms).__name__}")
        self.pairs = pairs
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> dict:
        """The untransformed sample ``index``, labels already in ``0..num_classes-1`` or ``ignore_index``."""
        image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image_path} is {image.shape[:2]} but its mask {mask_path} is {mask.shape}")
        if self.reduce_zero_label:
            mask = reduce_zero_label(mask)
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"mask file {mask_path} holds label {int(mask[bad][0])}"
                f"{' (after reduce_zero_label)' if self.reduce_zero_label else ''}, outside the "
                f"{self.num_classes} classes 0..{self.num_classes - 1} and not ignore_index={self.ignore_index}"
            )
        return {"image": image, "mask": mask, "path": str(image_path)}


class ADE20K(_PairedFolders):
    """SceneParse150: ``ADEChallengeData2016/{images,annotations}/{training,validation}/``, ``X.jpg`` with
    ``X.png``. ``root`` is the ``ADEChallengeData2016`` folder or its parent. Masks hold 0 ("other", not
    evaluated) and 1..150; they are reduced once, here, to 150 classes 0..149 with 0 -> 255 (ignored)."""

    def __init__(self, root: Union[str, Path], split: str = "training", transforms: Optional[Transform] = None):
        if split not in ("training", "validation"):
            raise ValueError(f"ADE20K: split must be 'training' or 'validation', got {split!r}")
        root = Path(root)
        base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        for sub in ("images", "annotations"):
            if not (base / sub / split).is_dir():
                raise FileNotFoundError(
                    f"ADE20K: expected the folder {base / sub / split}; root must be ADEChallengeData2016 "
                    f"(or its parent) holding images/{split}/*.jpg and annotations/{split}/*.png"
                )
        pairs = _pair(base / "images" / split, base / "annotations" / split, (".jpg",), ".png")
        super().__init__(pairs, ADE20K_CLASSES, reduce_zero_label=True, ignore_index=255, transforms=transforms)
        self.root, self.split, self.palette = base, split, ADE20K_PALETTE


class SegmentationFolder(_PairedFolders):
    """Your own data: ``images_dir/X.jpg`` with ``masks_dir/X.png`` (matched by stem), masks holding class
    indices ``0..len(class_names)-1`` or ``ignore_index``. ``reduce_zero_label=True`` is for masks where 0
    means "unlabelled" and 1..K are the classes (then ``ignore_index`` must be 255)."""

    def __init__(self, images_dir: Union[str, Path], masks_dir: Union[str, Path], class_names: Sequence[str], *,
                 reduce_zero_label: bool = False, ignore_index: int = 255,
                 image_suffixes: Sequence[str] = (".jpg", ".jpeg", ".png"), mask_suffix: str = ".png",
                 transforms: Optional[Transform] = None):
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            raise TypeError(f"SegmentationFolder: class_names must be a sequence of str, got {class_names!r}")
        if not 1 <= len(class_names) <= 255:
            raise ValueError(f"SegmentationFolder: class_names must hold 1..255 names (uint8 masks), got {len(class_names)}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"SegmentationFolder: class_names has duplicates: {list(class_names)}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not len(class_names) <= ignore_index <= 255:
            raise ValueError(
                f"SegmentationFolder: ignore_index must be an int in {len(class_names)}..255 (not a class, "
                f"fits a uint8 mask), got {ignore_index!r}"
            )
        if reduce_zero_label and ignore_index != 255:
            raise ValueError(f"SegmentationFolder: reduce_zero_label maps 0 to 255, so ignore_index must be 255, got {ignore_index}")
        if not mask_suffix.startswith(".") or not all(s.startswith(".") for s in image_suffixes):
            raise ValueError(f"SegmentationFolder: suffixes start with '.', got {tuple(image_suffixes)} and {mask_suffix!r}")
        pairs = _pair(Path(images_dir), Path(masks_dir), tuple(image_suffixes), mask_suffix)
        super().__init__(pairs, class_names, reduce_zero_label=reduce_zero_label, ignore_index=ignore_index,
                         transforms=transforms)
        self.palette = distinct_palette(self.num_classes)


def summarize_samples(samples: list[dict], ds) -> list[str]:
    """``tools/check_data.py``'s line about a split's masks: dtype, label range, classes seen, ignored share."""
    masks = [s["mask"] for s in samples]
    ignore = getattr(ds, "ignore_index", 255)
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    labels = values[values != ignore]
    ignored = sum(int((m == ignore).sum()) for m in masks) / sum(m.size for m in masks)
    text = f"labels {labels.min()}-{labels.max()}" if labels.size else "no labelled pixel"
    if getattr(ds, "reduce_zero_label", False):
        text += " after reduce_zero_label"
    return [f"{masks[0].dtype} masks, {text} ({labels.size} of {ds.num_classes} classes seen), {ignored:.0%} ignored"]
