"""Classification datasets: ImageNet in its standard folder layout and any folder of class subfolders.

A sample is ``{"image": uint8 [H, W, 3] RGB, "label": int, "path": str}``, then ``transforms(sample)`` if
given. As in every task, ``dataset[(index, seed)]`` runs the transforms with ``sample["rng"] =
np.random.default_rng(seed)`` (the training sampler's keys), ``dataset[index]`` with an unseeded one.

Errors: a missing folder, a class folder without images, or no class folders at all is a
``FileNotFoundError`` naming the folder; an image that cannot be decoded or is truncated is a ``ValueError``
naming the file (``tasks.common.images.read_image``), raised when the sample is read.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from torch.utils.data import Dataset

from tasks.common.images import read_image
from tasks.common.transforms import SeededDataset

Transform = Callable[[dict], dict]
# What torchvision's ImageFolder accepts, compared case-insensitively (ImageNet's files end in .JPEG).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` of ImageNet-1K in label order (sorted wnids, the order of every published head).

    Names are the WordNet lemmas of each synset, e.g. ``"tench, Tinca tinca"`` — the ``id2label`` of the
    published Hugging Face checkpoints. Read from ``imagenet_classes.tsv`` shipped with this package.
    """
    text = resources.files("tasks.classification").joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line]
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{root} holds no class folders (expected {root}/<class name>/<image files>)")
    return folders


def _images(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise FileNotFoundError(f"class folder {folder} holds no images ({', '.join(suffixes)})")
    return files


class ImageFolder(SeededDataset, Dataset):
    """``root/<class>/**/<image>``: one class per subfolder, labels in sorted folder-name order (torchvision's
    ``ImageFolder`` rule, so the labels of a model trained with either agree).

    ``class_names``: display names for the folders in that order (default: the folder names).
    """

    def __init__(self, root: Union[str, Path], *, class_names: Optional[Sequence[str]] = None,
                 suffixes: Sequence[str] = IMAGE_SUFFIXES, transforms: Optional[Transform] = None):
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be a callable on a sample dict or None, got {type(transforms).__name__}")
        self.root = Path(root)
        folders = _class_folders(self.root)
        suffixes = tuple(s.lower() for s in suffixes)
        self.folder_names = tuple(f.name for f in folders)
        if class_names is not None:
            if isinstance(class_names, str) or len(class_names) != len(folders):
                raise ValueError(
                    f"class_names must hold one name per class folder of {self.root} ({len(folders)}: "
                    f"{', '.join(self.folder_names[:5])}{', ...' if len(folders) > 5 else ''}), got {len(class_names)}"
                )
        self.class_names = tuple(class_names) if class_names is not None else self.folder_names
        self.samples = [(path, label) for label, folder in enumerate(folders) for path in _images(folder, suffixes)]
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> dict:
        path, label = self.samples[index]
        return {"image": read_image(path), "label": label, "path": str(path)}


class ImageNet(ImageFolder):
    """ImageNet-1K (ILSVRC-2012) in its standard layout: ``root/{train,val}/<wnid>/*.JPEG``.

    Labels follow the sorted wnids. With the 1000 ImageNet-1K wnids, ``class_names`` are their human names
    (``imagenet_classes``); any other set of folders (a subset, ImageNet-100) keeps the wnids as names.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", transforms: Optional[Transform] = None):
        if split not in ("train", "val"):
            raise ValueError(f"ImageNet: split must be 'train' or 'val', got {split!r}")
        folder = Path(root) / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"ImageNet: expected the folder {folder}; root must hold train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
                "(the validation images sorted into wnid folders, as torchvision and timm expect)"
            )
        wnids, names = imagenet_classes()
        found = tuple(p.name for p in _class_folders(folder))
        super().__init__(folder, class_names=names if found == wnids else None, transforms=transforms)
        self.split = split
        self.wnids = found


def summarize_samples(samples: list[dict], ds) -> list[str]:
    """``tools/check_data.py``'s line about a split's labels: how many classes the samples cover."""
    return [f"{len({s['label'] for s in samples})} of {getattr(ds, 'num_classes', '?')} classes seen"]
