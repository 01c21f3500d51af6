"""Panoptic segmentation as the training engine drives it (see ``tasks/common/engine.py``)."""
from __future__ import annotations

from pathlib import Path

import torch

from tasks.common.config import Config
from tasks.common.distributed import rank0_first
from tasks.common.preprocess import Preprocessing
from tasks.common.task import Task, check_min_size

from .datasets import CocoPanoptic, PanopticCategories, collate, load_panoptic_json
from .evaluator import METRIC_NAMES, PanopticPredictionWriter, PanopticQuality, metrics_table
from .losses import PanopticCriterion
from .matcher import MaskHungarianMatcher
from .model import PanopticSegFormer
from .presets import CocoPanopticData, ToyData
from .toy import ensure_toy_dataset
from .transforms import test_pipeline, train_pipeline
from .weights import BACKBONE_DOWNLOADS

_TOY_HINT = "for a first run, configs/panoptic_segformer_pvt_b0_toy.py makes its own small dataset"


class PanopticTask(Task):
    main_metric = "PQ"
    higher_is_better = True
    data_types = (CocoPanopticData, ToyData)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        m = cfg.model
        weights = {"loss_ce": m.cls_loss_coef, "loss_bbox": m.bbox_loss_coef, "loss_giou": m.giou_loss_coef,
                   "loss_mask_things": m.mask_loss_coef, "loss_mask_stuff": m.mask_loss_coef,
                   "loss_cls_stuff": m.stuff_cls_loss_coef}
        mask_matcher = MaskHungarianMatcher(2 * m.cls_loss_coef, m.bbox_loss_coef, m.giou_loss_coef, m.mask_loss_coef,
                                            m.focal_alpha)
        self.criterion = PanopticCriterion(m.num_things_classes, m.num_stuff_classes, weights=weights,
                                           mask_matcher=mask_matcher, max_pos=m.max_pos, focal_alpha=m.focal_alpha)
        self.categories: PanopticCategories | None = None  # read with the data
        self._step: tuple[list, tuple[float, float]] = ([], (1.0, 1.0))  # (micro-batches, their normalisers)

    def _paths(self, split: str) -> tuple[Path, Path]:
        data = self.cfg.data
        if isinstance(data, ToyData):
            kwargs = dict(num_train=data.num_train, num_val=data.num_val, size=tuple(data.size), seed=data.seed)
            root = rank0_first(ensure_toy_dataset, data.root, **kwargs)  # rank 0 writes the data once
            name = "train2017" if split == "train" else "val2017"
            return root / name, root / "annotations" / f"panoptic_{name}.json"
        images, ann = (data.train_images, data.train_ann) if split == "train" else (data.val_images, data.val_ann)
        return Path(data.root) / images, Path(data.root) / ann

    def _dataset(self, split: str, transforms) -> CocoPanoptic:
        try:
            dataset = CocoPanoptic(*self._paths(split), transforms=transforms)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} ({_TOY_HINT})") from e
        self.categories = dataset.categories
        return dataset

    def _read_categories(self) -> PanopticCategories:
        if self.categories is None:
            _, ann = self._paths("val")
            self.categories = PanopticCategories.from_json(load_panoptic_json(ann)["categories"], str(ann))
        return self.categories

    def build_model(self) -> PanopticSegFormer:
        m = self.cfg.model
        categories = self._read_categories()
        for key, found in (("num_things_classes", categories.num_things), ("num_stuff_classes", categories.num_stuff)):
            if getattr(m, key) != found:
                raise ValueError(f"model.{key}={getattr(m, key)} but the dataset has {found} such categories")
        try:
            return PanopticSegFormer.build(m, preprocessing=self.preprocessing(),
                                           category_ids=categories.category_ids, class_names=categories.names)
        except FileNotFoundError as e:
            path = Path(str(m.backbone_weights))
            if path.name not in BACKBONE_DOWNLOADS or path.exists():
                raise
            raise FileNotFoundError(f"{e}; model.backbone_weights={str(path)!r} is the authors' backbone: download it "
                                    f"with `wget {BACKBONE_DOWNLOADS[path.name]} -P {path.parent}`") from None

    def preprocessing(self) -> Preprocessing:
        """The evaluation resize (short side ``data.test_size``, long side at most ``data.max_size``) with ImageNet's
        mean and std (the data pipeline's); kept in every checkpoint."""
        return Preprocessing(resize="short_side", size=(self.cfg.data.test_size, self.cfg.data.max_size))

    def validate(self, model) -> None:
        check_min_size("data.scales", tuple(self.cfg.data.scales), model)
        check_min_size("data.test_size", self.cfg.data.test_size, model)

    def load_model(self, path) -> PanopticSegFormer:
        return PanopticSegFormer.from_pretrained(path)

    def train_dataset(self):
        d = self.cfg.data
        return self._dataset("train", train_pipeline(d.scales, d.max_size, d.crop_resize, tuple(d.crop_size)))

    def val_dataset(self):
        p = self.eval_preprocessing()  # the evaluated model's resize (short side, long-side cap)
        return self._dataset("val", test_pipeline(p.size[0], p.size[1]))

    def collate(self, samples: list[dict]) -> dict:
        return collate(samples)

    def begin_step(self, batches: list) -> None:
        """The loss normalisers and the things/stuff ratio of the whole step (all micro-batches, all processes),
        as the authors' 8 GPUs share them: ``grad_accum`` micro-batches in one process train as that many
        processes would."""
        self._step = (list(batches), self.criterion.normalisers([b["targets"] for b in batches]))

    def loss(self, model, batch: dict, device) -> dict[str, torch.Tensor]:
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
        selector = self.criterion.selector(targets)
        outputs = model(batch["image"].to(device), batch["pixel_mask"].to(device), select=selector)
        batches, normalisers = self._step
        in_step = any(batch is b for b in batches)  # else a batch outside a step: its own counts
        # "loss" (the weighted total) is back-propagated; every term is logged unweighted.
        return self.criterion(outputs, targets, selector, normalisers if in_step else None)

    @property
    def val_batch_size(self) -> int:
        return self.cfg.data.val_batch_size

    def evaluate(self, model, loader, device) -> dict:
        """PQ in memory (no PNG written unless ``data.save_predictions``) against the ground truth at its original
        size; the predictions are merged at that size."""
        net = getattr(model, "module", model)
        categories = [{"id": i, "isthing": int(t), "name": n}
                      for i, t, n in zip(net.category_ids, net.isthing, net.class_names or [""] * net.num_classes)]
        evaluator = PanopticQuality(categories)
        out_dir = self.cfg.data.save_predictions
        writer = PanopticPredictionWriter(out_dir, categories) if out_dir else None
        for batch in loader:
            images = batch["image"].to(device)
            outputs = net(images, batch["pixel_mask"].to(device))
            meta = batch["meta"]
            results = net.post_process(outputs, [m["size"] for m in meta], [m["orig_size"] for m in meta],
                                       tuple(images.shape[-2:]))
            for m, (panoptic, segments) in zip(meta, results):
                panoptic = panoptic.cpu().numpy()
                evaluator.update(m["panoptic"], m["segments_info"], panoptic, segments, m["image_id"])
                if writer is not None:
                    writer.add(m["image_id"], m["file_name"], panoptic, segments)
        if writer is not None:
            writer.finish()
        return evaluator.compute()

    def metrics_table(self, metrics: dict) -> str:
        categories = self._read_categories()
        head = " ".join(f"{k:>6}" for k in METRIC_NAMES)
        values = " ".join(f"{metrics[k]:>6.3f}" for k in METRIC_NAMES)
        return "\n".join([metrics_table(metrics, categories.names, categories.isthing), "", head, values])
