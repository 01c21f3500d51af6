"""Monocular depth as the training engine drives it (see ``tasks/common/engine.py``)."""
from __future__ import annotations

import torch

from tasks.common.distributed import rank0_first
from tasks.common.task import Task, check_min_size

from .datasets import NYUDepthV2
from .evaluator import DepthMetrics
from .losses import silog_loss
from .model import GLPN
from .presets import NYUData, ToyData
from .toy import ensure_toy_dataset
from .transforms import train_pipeline

_TOY_HINT = "for a first run, configs/glpn_pvt_b0_toy.py makes its own small dataset"
METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


class DepthTask(Task):
    main_metric = "abs_rel"
    higher_is_better = False
    data_types = (NYUData, ToyData)

    def build_model(self) -> GLPN:
        return GLPN.build(self.cfg.model)

    def validate(self, model) -> None:
        """Config values the built model cannot take (called by the engine before training)."""
        check_min_size("data.crop", tuple(self.cfg.data.crop), model)

    def load_model(self, path) -> GLPN:
        return GLPN.from_pretrained(path)

    def _dataset(self, split: str, transforms=None) -> NYUDepthV2:
        data = self.cfg.data
        try:
            if isinstance(data, ToyData):
                kwargs = dict(num_train=data.num_train, num_val=data.num_val, size=tuple(data.size), seed=data.seed)
                root = rank0_first(ensure_toy_dataset, data.root, **kwargs)  # rank 0 writes the data once
                return NYUDepthV2(root, split, transforms=transforms)
            list_file = data.train_list if split == "train" else data.test_list
            return NYUDepthV2(data.root, split, list_file=list_file, transforms=transforms)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} ({_TOY_HINT})") from e

    def train_dataset(self):
        return self._dataset("train", train_pipeline(tuple(self.cfg.data.crop), self.cfg.model.max_depth))

    def val_dataset(self):
        return self._dataset("test")  # raw samples at full resolution

    def collate(self, samples: list[dict]):
        if isinstance(samples[0]["image"], torch.Tensor):
            return {"image": torch.stack([s["image"] for s in samples]), "depth": torch.stack([s["depth"] for s in samples])}
        return samples  # evaluation: one full-resolution image at a time

    def loss(self, model, batch: dict, device) -> dict[str, torch.Tensor]:
        pred = model(batch["image"].to(device, non_blocking=True))
        return silog_loss(pred, batch["depth"].to(device, non_blocking=True))

    def evaluate(self, model, loader, device) -> dict:
        """The GLPDepth protocol through ``model.predict`` (the model's own preprocessing): full-resolution prediction, valid range and crop, metrics per image then
        averaged. With ``data.test_flip`` the flip-averaged metrics are reported too, suffixed ``_flip``."""
        d = self.cfg.data
        plain = DepthMetrics(d.min_depth, d.max_depth, d.eval_crop)
        flipped = DepthMetrics(d.min_depth, d.max_depth, d.eval_crop) if d.test_flip else None
        for samples in loader:
            for s in samples:
                plain.update(model.predict(s["image"])[None], s["depth"][None])
                if flipped is not None:
                    flipped.update(model.predict(s["image"], flip=True)[None], s["depth"][None])
        metrics = plain.compute()
        if flipped is not None:
            metrics.update({f"{k}_flip": v for k, v in flipped.compute().items() if k in METRICS})
        return metrics

    def metrics_table(self, metrics: dict) -> str:
        rows = [" ".join(f"{k:>9}" for k in METRICS), " ".join(f"{metrics[k]:>9.4f}" for k in METRICS)]
        if f"{METRICS[0]}_flip" in metrics:
            rows.append(" ".join(f"{metrics[k + '_flip']:>9.4f}" for k in METRICS) + "   (flip-averaged)")
        return "\n".join(rows)
