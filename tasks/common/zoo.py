"""The published task weights: a short name per checkpoint, its Hugging Face hub id and the published numbers.

``resolve(path_or_name, task)`` is what every ``from_pretrained`` calls first: an existing local path wins, a
short name from ``MODELS`` becomes its hub id, anything else with a ``/`` is taken as a hub id; the hub id is
then fetched or read from the cache by ``backbones.hub.resolve``.

The numbers are those published with the weights (the papers and the authors' READMEs); these Hugging Face
checkpoints are conversions of the authors' releases, so the authors' numbers are theirs. Ratios are
fractions like our evaluators'; ``None`` means not published (or not verified here).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from backbones import hub


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint: ``metrics`` use our evaluators' keys, ``source`` says where they come from."""

    hub_id: str
    task: str
    dataset: str
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""


_SEGFORMER = "SegFormer paper (arXiv 2105.15203), single-scale"
_SEGFORMER_ADE = {  # variant: (crop, mIoU)
    "b0": (512, 0.374), "b1": (512, 0.422), "b2": (512, 0.465),
    "b3": (512, 0.494), "b4": (512, 0.503), "b5": (640, 0.510),
}
_SEGFORMER_CITYSCAPES = {"b0": 0.762, "b1": None, "b2": None, "b3": None, "b4": None, "b5": 0.824}
_PVT = "whai362/PVT README (ImageNet-1K val, 224x224)"
_PVT_TOP1 = {"b0": 0.705, "b1": 0.787, "b2": 0.820, "b2_li": 0.821, "b3": 0.831, "b4": 0.836, "b5": 0.838}
_DETR = "fundamentalvision/Deformable-DETR README (COCO val2017, ResNet-50, 50 epochs)"

MODELS: dict[str, PublishedModel] = {
    **{
        f"segformer-{v}-ade": PublishedModel(
            f"nvidia/segformer-{v}-finetuned-ade-{crop}-{crop}", "segmentation", "ADE20K", {"mIoU": miou}, _SEGFORMER
        )
        for v, (crop, miou) in _SEGFORMER_ADE.items()
    },
    **{
        f"segformer-{v}-cityscapes": PublishedModel(
            f"nvidia/segformer-{v}-finetuned-cityscapes-1024-1024", "segmentation", "Cityscapes",
            {"mIoU": miou} if miou is not None else {}, _SEGFORMER if miou is not None else "",
        )
        for v, miou in _SEGFORMER_CITYSCAPES.items()
    },
    "glpn-nyu": PublishedModel(
        "vinvino02/glpn-nyu", "depth", "NYU Depth v2",
        {"d1": 0.915, "d2": 0.988, "d3": 0.997, "abs_rel": 0.098, "rmse": 0.344, "log10": 0.042},
        "GLPN paper (arXiv 2201.07436), Eigen crop, 0-10 m",
    ),
    "glpn-kitti": PublishedModel(
        "vinvino02/glpn-kitti", "depth", "KITTI (Eigen split)",
        {"d1": 0.967, "d2": 0.996, "d3": 0.999, "abs_rel": 0.057, "rmse": 2.297, "rmse_log": 0.086},
        "GLPN paper (arXiv 2201.07436), Garg crop, 0-80 m",
    ),
    "deformable-detr": PublishedModel("SenseTime/deformable-detr", "detection", "COCO 2017", {"AP": 0.445}, _DETR),
    "deformable-detr-refine": PublishedModel(
        "SenseTime/deformable-detr-with-box-refine", "detection", "COCO 2017", {"AP": 0.462}, _DETR
    ),
    "deformable-detr-two-stage": PublishedModel(
        "SenseTime/deformable-detr-with-box-refine-two-stage", "detection", "COCO 2017", {"AP": 0.469}, _DETR
    ),
    **{
        f"pvt_v2_{v}": PublishedModel(
            hub.IMAGENET_WEIGHTS[f"pvt_v2_{v}"], "classification", "ImageNet-1K", {"top1": top1}, _PVT
        )
        for v, top1 in _PVT_TOP1.items()
    },
    **{f"mit_b{i}": PublishedModel(f"nvidia/mit-b{i}", "classification", "ImageNet-1K") for i in range(6)},
}


def resolve_name(name: str) -> str:
    """The hub id of short name ``name``; an unknown name is a ValueError listing the close ones."""
    if name in MODELS:
        return MODELS[name].hub_id
    close = difflib.get_close_matches(name, MODELS, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(MODELS)}"
    raise ValueError(
        f"unknown pretrained model {name!r}: not a local path, a hub id (org/name) or a short name; {hint}"
    )


def resolve(path_or_name: str | os.PathLike, task: str | None = None) -> Path:
    """A local path, short name or hub id -> the local file or folder to read (downloading a hub id once).

    With ``task``, a short name of another task is a ValueError saying which model class loads it.
    """
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be a path, hub id or short name (str or os.PathLike), got {type(path_or_name).__name__}"
        )
    on_disk = Path(path_or_name).expanduser().exists()
    if isinstance(path_or_name, str) and not on_disk and _looks_like_name(path_or_name):
        entry = MODELS.get(path_or_name)
        hub_id = resolve_name(path_or_name)
        if task is not None and entry.task != task:
            raise ValueError(f"{path_or_name!r} ({hub_id}) is a {entry.task} model, not a {task} model")
        return hub.resolve(hub_id)
    return hub.resolve(path_or_name)


def _looks_like_name(text: str) -> bool:
    """A bare word (no folder separator, no file suffix) that is not on disk can only mean a short name."""
    return "/" not in text and os.sep not in text and not Path(text).suffix[1:].isalpha()


def table(task: str | None = None) -> list[tuple[str, PublishedModel]]:
    """``(short name, entry)`` rows, in the order of ``MODELS``, optionally of one task."""
    return [(name, m) for name, m in MODELS.items() if task is None or m.task == task]
