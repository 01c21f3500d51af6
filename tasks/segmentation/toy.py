"""The segmentation toy dataset: synthetic scenes (``tasks.common.synthetic``) in the ADE20K layout that
``datasets.ADE20K`` and ``datasets.SegmentationFolder`` read."""
from __future__ import annotations

from pathlib import Path

from tasks.common.synthetic import SHAPE_CLASSES, is_complete, scenes, toy_params, write_jpeg, write_png, writing

TOY_CLASSES = ("background", *SHAPE_CLASSES)  # after reduce_zero_label


def write_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """``root/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_%08d.{jpg,png}``.

    Masks use the ADE encoding: 0 = not evaluated, 1 = background, 2..4 = ``SHAPE_CLASSES``, so after
    reduce_zero_label the 4 classes are ``TOY_CLASSES`` (0..3). A 1-pixel border of every mask is 0, so the
    ignore path (0 -> 255) is exercised. Returns the ADEChallengeData2016 path.
    """
    params = toy_params("ade20k", num_train, num_val, size, seed)
    out = Path(root) / "ADEChallengeData2016"
    with writing(out, [out / "images", out / "annotations"], params, num_train + num_val) as bar:
        for split, folder, count in (("train", "training", num_train), ("val", "validation", num_val)):
            (out / "images" / folder).mkdir(parents=True)
            (out / "annotations" / folder).mkdir(parents=True)
            for index, scene in scenes(seed, split, count, size, bar):
                name = f"ADE_{split}_{index + 1:08d}"
                annotation = scene.labels + 1
                annotation[[0, -1], :] = annotation[:, [0, -1]] = 0
                write_jpeg(out / "images" / folder / f"{name}.jpg", scene.image)
                write_png(out / "annotations" / folder / f"{name}.png", annotation)
    return out


def ensure_toy_dataset(root, *, num_train: int, num_val: int, size=(128, 128), seed: int = 0) -> Path:
    """The ADEChallengeData2016 path, generated unless a complete copy with these parameters exists."""
    out = Path(root) / "ADEChallengeData2016"
    if is_complete(out, toy_params("ade20k", num_train, num_val, size, seed)):
        return out
    return write_toy_dataset(root, num_train=num_train, num_val=num_val, size=size, seed=seed)
