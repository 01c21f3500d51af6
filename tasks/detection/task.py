"""Object detection as the training engine drives it (see ``tasks/common/engine.py``)."""
from __future__ import annotations

from pathlib import Path

import torch

from tasks.common.config import Config
from tasks.common.distributed import rank0_first
from tasks.common.preprocess import Preprocessing
from tasks.common.task import Task, check_min_size

from .datasets import CocoDetection
from .evaluator import CocoEvaluator
from .losses import SetCriterion, weighted_total
from .matcher import HungarianMatcher
from .model import DeformableDETR
from .inference import post_process
from .presets import CocoData, ToyData
from .toy import ensure_toy_dataset
from .transforms import test_pipeline, train_pipeline

_TOY_HINT = "for a first run, configs/deformable_detr_pvt_b0_toy.py makes its own small dataset"
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class DetectionTask(Task):
    main_metric = "AP"
    higher_is_better = True
    data_types = (CocoData, ToyData)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        m = cfg.model
        loss_weights = {"loss_ce": m.cls_loss_coef, "loss_bbox": m.bbox_loss_coef, "loss_giou": m.giou_loss_coef}
        matcher = HungarianMatcher(m.set_cost_class, m.set_cost_bbox, m.set_cost_giou, m.focal_alpha)
        self.criterion = SetCriterion(m.num_classes, matcher, loss_weights, focal_alpha=m.focal_alpha)
        self.categories: dict[int, str] | None = None  # {category id: name}, read with the validation set

    def build_model(self) -> DeformableDETR:
        names = None
        if self.categories is not None and max(self.categories) < self.cfg.model.num_classes:
            names = tuple(self.categories.get(i, "N/A") for i in range(self.cfg.model.num_classes))
        return DeformableDETR.build(self.cfg.model, preprocessing=self.preprocessing(), class_names=names)

    def preprocessing(self) -> Preprocessing:
        """The evaluation resize (short side ``data.test_size``, long side at most ``data.max_size``), ImageNet's
        mean and std; kept in every checkpoint."""
        return Preprocessing(resize="short_side", size=(self.cfg.data.test_size, self.cfg.data.max_size))

    def validate(self, model) -> None:
        """Config values the built model cannot take (called by the engine before training): every training
        scale (the short side after augmentation) and the test size."""
        check_min_size("data.scales", tuple(self.cfg.data.scales), model)
        check_min_size("data.test_size", self.cfg.data.test_size, model)

    def load_model(self, path) -> DeformableDETR:
        return DeformableDETR.from_pretrained(path)

    def _dataset(self, split: str, transforms) -> CocoDetection:
        data = self.cfg.data
        try:
            if isinstance(data, ToyData):
                kwargs = dict(num_train=data.num_train, num_val=data.num_val, size=tuple(data.size), seed=data.seed)
                root = rank0_first(ensure_toy_dataset, data.root, **kwargs)  # rank 0 writes the data once
                name = "train2017" if split == "train" else "val2017"
                return CocoDetection(root / name, root / "annotations" / f"instances_{name}.json", transforms)
            images, ann = (data.train_images, data.train_ann) if split == "train" else (data.val_images, data.val_ann)
            return CocoDetection(Path(data.root) / images, Path(data.root) / ann, transforms)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} ({_TOY_HINT})") from e

    def train_dataset(self):
        d = self.cfg.data
        return self._dataset("train", train_pipeline(d.scales, d.max_size, d.crop_resize, tuple(d.crop_size)))

    def val_dataset(self):
        p = self.eval_preprocessing()  # the evaluated model's: short side, long-side cap, mean, std
        dataset = self._dataset("val", test_pipeline(p.size[0], p.size[1], mean=p.mean, std=p.std))
        self.coco_gt, self.categories = dataset.coco, dataset.categories
        return dataset

    def collate(self, samples: list[dict]) -> dict:
        """Pad images to the largest in the batch (bottom/right); ``pixel_mask`` is 1 on real pixels."""
        h = max(s["image"].shape[1] for s in samples)
        w = max(s["image"].shape[2] for s in samples)
        images = samples[0]["image"].new_zeros(len(samples), 3, h, w)
        mask = torch.zeros(len(samples), h, w, dtype=torch.long)
        for i, s in enumerate(samples):
            _, sh, sw = s["image"].shape
            images[i, :, :sh, :sw] = s["image"]
            mask[i, :sh, :sw] = 1
        targets = [{"labels": s["labels"], "boxes": s["boxes"]} for s in samples]
        meta = [{"image_id": s["image_id"], "orig_size": s["orig_size"]} for s in samples]
        return {"image": images, "pixel_mask": mask, "targets": targets, "meta": meta}

    def loss(self, model, batch: dict, device) -> dict[str, torch.Tensor]:
        outputs = model(batch["image"].to(device), batch["pixel_mask"].to(device))
        if not self.cfg.model.aux_loss:
            outputs.pop("aux_outputs", None)
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
        losses = self.criterion(outputs, targets)
        # "loss" (the weighted sum) is back-propagated; every term (loss_ce, loss_bbox, loss_giou, their _0.._{L-2}
        # and _enc copies, unweighted) and cardinality_error are logged.
        return {"loss": weighted_total(losses, self.criterion.weight_dict), **losses}

    @property
    def val_batch_size(self) -> int:
        return self.cfg.data.val_batch_size

    def evaluate(self, model, loader, device) -> dict:
        """COCO bbox AP on boxes in original-image pixels (top-100 over queries x classes)."""
        evaluator = CocoEvaluator(self.coco_gt)
        for batch in loader:
            outputs = model(batch["image"].to(device), batch["pixel_mask"].to(device))
            sizes = torch.tensor([m["orig_size"] for m in batch["meta"]], device=device)
            results = post_process(outputs, sizes)
            evaluator.update({m["image_id"]: r for m, r in zip(batch["meta"], results)})
        return evaluator.compute()

    def metrics_table(self, metrics: dict) -> str:
        return "\n".join([" ".join(f"{k:>6}" for k in STATS), " ".join(f"{metrics[k]:>6.3f}" for k in STATS)])
