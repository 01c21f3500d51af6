"""The foreground task as the engine drives it: config sections, synthetic data, loss, IoU, picture."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tasks.common.preprocess import Preprocessing
from tasks.common.task import Task
from tasks.common.transforms import Compose, RandomHorizontalFlip, SeededDataset

from .model import ForegroundNet

TINY_BACKBONE = {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 24, 32], "num_attention_heads": [1, 1, 1, 1]}


@dataclass
class ForegroundModel:
    backbone: str = "pvt_v2_b0"
    backbone_args: dict = field(default_factory=lambda: dict(TINY_BACKBONE))
    backbone_weights: str | None = None
    weights: str | None = None


@dataclass
class ForegroundData:
    num_train: int = 16
    num_val: int = 4
    size: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # 0-1 units; kept in the checkpoint's preprocessing
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    batch_size: int = 4
    num_workers: int = 0


class Discs(SeededDataset, Dataset):
    """A bright disc (the foreground) on a noisy dark background, drawn from the sample's index."""

    def __init__(self, count: int, size: int, offset: int, transforms=None):
        self.count, self.size, self.offset, self.transforms = count, size, offset, transforms

    def __len__(self) -> int:
        return self.count

    def read(self, index: int) -> dict:
        rng = np.random.default_rng(self.offset + index)
        image = rng.integers(0, 60, (self.size, self.size, 3), dtype=np.uint8)
        mask = np.zeros((self.size, self.size), np.uint8)
        centre = tuple(int(v) for v in rng.integers(self.size // 4, 3 * self.size // 4, 2))
        cv2.circle(mask, centre, int(rng.integers(self.size // 8, self.size // 4)), 1, -1)
        image[mask == 1] = 200
        return {"image": image, "mask": mask}


class ForegroundTask(Task):
    main_metric = "IoU"
    higher_is_better = True
    data_types = (ForegroundData,)

    def build_model(self) -> ForegroundNet:
        return ForegroundNet.build(self.cfg.model, preprocessing=self.preprocessing())

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(mean=tuple(self.cfg.data.mean), std=tuple(self.cfg.data.std))

    def load_model(self, path) -> ForegroundNet:
        return ForegroundNet.from_pretrained(path)

    def train_dataset(self):
        return Discs(self.cfg.data.num_train, self.cfg.data.size, 0, Compose([RandomHorizontalFlip(keys={"mask": "hw"})]))

    def val_dataset(self):
        return Discs(self.cfg.data.num_val, self.cfg.data.size, 10_000)

    def collate(self, samples: list[dict]):
        return samples

    def loss(self, model, batch, device) -> dict[str, torch.Tensor]:
        x = torch.cat([model.preprocessing(s["image"]) for s in batch]).to(device)
        target = torch.stack([torch.from_numpy(s["mask"]).float() for s in batch])[:, None].to(device)
        logits = F.interpolate(model(x), size=target.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss_bce": F.binary_cross_entropy_with_logits(logits, target)}

    def evaluate(self, model, loader, device) -> dict:
        inter = union = 0
        for samples in loader:
            for s in samples:
                pred, gt = model.predict(s["image"]), s["mask"].astype(bool)
                inter, union = inter + int((pred & gt).sum()), union + int((pred | gt).sum())
        return {"IoU": inter / max(union, 1)}

    def metrics_table(self, metrics: dict) -> str:
        return f"IoU {100 * metrics['IoU']:.2f}"


def summarize_samples(samples: list[dict], ds) -> list[str]:
    share = np.mean([s["mask"].mean() for s in samples])
    return [f"{share:.0%} foreground"]


def save_prediction_png(path, image: np.ndarray, prediction: np.ndarray, *, class_names=None) -> None:
    picture = image.copy()
    picture[prediction] = (0.5 * picture[prediction] + (0, 127, 0)).astype(np.uint8)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
