"""Semantic segmentation as the training engine drives it (see ``tasks/common/engine.py``)."""
from __future__ import annotations

import math

import torch

from tasks.common.config import Config
from tasks.common.distributed import rank0_first
from tasks.common.preprocess import Preprocessing
from tasks.common.task import Task, check_min_size

from .datasets import ADE20K, ADE20K_CLASSES, SegmentationFolder
from .evaluator import MeanIoU
from .losses import segmentation_loss
from .model import SegFormer
from .presets import ADE20KData, FolderData, ToyData
from .toy import TOY_CLASSES, ensure_toy_dataset
from .transforms import train_pipeline

_TOY_HINT = "for a first run, configs/segformer_pvt_b0_toy.py makes its own small dataset"


class SegmentationTask(Task):
    main_metric = "mIoU"
    higher_is_better = True
    data_types = (ADE20KData, FolderData, ToyData)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        data = cfg.data
        names = ADE20K_CLASSES if isinstance(data, ADE20KData) else TOY_CLASSES if isinstance(data, ToyData) else None
        self.class_names = names or tuple(data.class_names)

    def build_model(self) -> SegFormer:
        m = self.cfg.model
        if m.num_classes != len(self.class_names):
            raise ValueError(f"model.num_classes is {m.num_classes} but the dataset has {len(self.class_names)} classes")
        return SegFormer.build(m, class_names=self.class_names, preprocessing=self.preprocessing())

    def preprocessing(self) -> Preprocessing:
        """The evaluation protocol (keep-ratio resize to ``data.test_scale``, sides multiples of 32, ``data.mean``
        and ``data.std``), kept in every checkpoint."""
        d = self.cfg.data
        return Preprocessing(mean=tuple(v / 255 for v in d.mean), std=tuple(v / 255 for v in d.std),
                             resize="keep_ratio", size=tuple(d.test_scale), size_divisor=32)

    def validate(self, model) -> None:
        """Config values the built model cannot take (called by the engine before training)."""
        check_min_size("data.crop", self.cfg.data.crop, model)

    def load_model(self, path) -> SegFormer:
        return SegFormer.from_pretrained(path)

    def _dataset(self, split: str, transforms=None):
        data = self.cfg.data
        try:
            if isinstance(data, ADE20KData):
                return ADE20K(data.root, split, transforms=transforms)
            if isinstance(data, ToyData):
                kwargs = dict(num_train=data.num_train, num_val=data.num_val, size=tuple(data.size), seed=data.seed)
                root = rank0_first(ensure_toy_dataset, data.root, **kwargs)  # rank 0 writes the data once
                sub = "training" if split == "training" else "validation"
                return SegmentationFolder(
                    root / "images" / sub, root / "annotations" / sub, TOY_CLASSES, reduce_zero_label=True,
                    transforms=transforms,
                )
            images, masks = (data.train_images, data.train_masks) if split == "training" else (data.val_images, data.val_masks)
            return SegmentationFolder(
                images, masks, data.class_names, reduce_zero_label=data.reduce_zero_label, transforms=transforms
            )
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} ({_TOY_HINT})") from e

    def train_dataset(self):
        d = self.cfg.data
        return self._dataset("training", train_pipeline(d.crop, tuple(d.scale), tuple(d.ratio_range), d.cat_max_ratio))

    def val_dataset(self):
        return self._dataset("validation")  # raw samples: evaluation resizes each image itself

    def collate(self, samples: list[dict]):
        if isinstance(samples[0]["image"], torch.Tensor):
            return {"image": torch.stack([s["image"] for s in samples]), "mask": torch.stack([s["mask"] for s in samples])}
        return samples  # evaluation: images of different sizes, handled one by one

    def loss(self, model, batch: dict, device) -> dict[str, torch.Tensor]:
        logits = model(batch["image"].to(device, non_blocking=True))
        return segmentation_loss(logits, batch["mask"].to(device, non_blocking=True))

    def evaluate(self, model, loader, device) -> dict:
        """The ADE20K protocol through ``model.predict`` (the model's own preprocessing: each image resized, keep
        ratio, sides multiple of 32; logits resized back to the original size, argmax) with the config's test-time
        augmentation; IoU from counts summed over the dataset (and over processes)."""
        d = self.cfg.data
        evaluator = MeanIoU(len(self.class_names))
        for samples in loader:
            for s in samples:
                pred = model.predict(s["image"], ratios=tuple(d.test_ratios), flip=d.test_flip, mode=d.test_mode,
                                     crop=d.test_crop, stride=d.test_stride)
                evaluator.update(pred, s["mask"])
        return evaluator.compute()

    def metrics_table(self, metrics: dict) -> str:
        rows = [f"{'class':<24} {'IoU':>7} {'Acc':>7}", "-" * 40]
        for name, iou, acc in zip(self.class_names, metrics["IoU"], metrics["Acc"]):
            rows.append(f"{name:<24} {_pct(iou):>7} {_pct(acc):>7}")
        rows += ["-" * 40, f"mIoU {_pct(metrics['mIoU'])}   mAcc {_pct(metrics['mAcc'])}   aAcc {_pct(metrics['aAcc'])}"]
        return "\n".join(rows)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"
