"""Image classification as the training engine drives it (see ``tasks/common/engine.py``)."""
from __future__ import annotations

import math

import torch

from tasks.common.config import Config
from tasks.common.distributed import rank0_first
from tasks.common.preprocess import Preprocessing
from tasks.common.task import Task

from .datasets import ImageFolder, ImageNet
from .evaluator import Accuracy
from .losses import classification_loss
from .model import ImageClassifier
from .presets import FolderData, ImageNetData, ToyData
from .toy import ensure_toy_dataset
from .transforms import EvalTransform, MixCollate, TrainTransform, eval_collate

_TOY_HINT = "for a first run, configs/classifier_pvt_b0_toy.py makes its own small dataset"


class ClassificationTask(Task):
    main_metric = "top1"
    higher_is_better = True
    data_types = (ImageNetData, FolderData, ToyData)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self._datasets: dict = {}  # split -> dataset, listed once (ImageNet's train split has 1.28M files)
        self._mix = None
        self._names: tuple[str, ...] | None = None  # of the model last evaluated, for metrics_table

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train_dataset().class_names

    def validate(self, model) -> None:
        d = self.cfg.data
        if d.test_resize not in ("short_side_crop", "fixed"):
            raise ValueError(f"data.test_resize must be short_side_crop or fixed, got {d.test_resize!r}")
        if not 0 < d.crop_pct <= 1:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {d.crop_pct}")
        smallest = model.backbone.min_input_size
        if d.input_size < smallest:
            raise ValueError(f"data.input_size must be >= {smallest} (the backbone's smallest input), got {d.input_size}")

    @property
    def val_batch_size(self) -> int:
        return self.cfg.data.val_batch_size

    def preprocessing(self) -> Preprocessing:
        """The evaluation protocol as the model's preprocessing, kept in every checkpoint."""
        d = self.cfg.data
        size = (int(d.input_size / d.crop_pct), d.input_size) if d.test_resize == "short_side_crop" else (d.input_size,) * 2
        return Preprocessing(mean=tuple(d.mean), std=tuple(d.std), resize=d.test_resize, size=size,
                             interpolation=d.interpolation)

    def build_model(self) -> ImageClassifier:
        m, names = self.cfg.model, self.class_names
        if m.num_classes != len(names):
            raise ValueError(f"model.num_classes is {m.num_classes} but the dataset has {len(names)} classes")
        val = self.val_dataset()
        if val.folder_names != self.train_dataset().folder_names:
            raise ValueError(f"the class folders of {val.root} differ from those of {self.train_dataset().root}; "
                             "both splits need the same class folders")
        return ImageClassifier.build(m, class_names=names, preprocessing=self.preprocessing())

    def load_model(self, path) -> ImageClassifier:
        return ImageClassifier.from_pretrained(path)

    def _dataset(self, split: str, transforms):
        if split not in self._datasets:
            self._datasets[split] = self._read(split, transforms)
        return self._datasets[split]

    def _read(self, split: str, transforms):
        data = self.cfg.data
        try:
            if isinstance(data, ImageNetData):
                return ImageNet(data.root, split, transforms=transforms)
            if isinstance(data, ToyData):
                kwargs = dict(num_train=data.num_train, num_val=data.num_val, size=tuple(data.size), seed=data.seed)
                root = rank0_first(ensure_toy_dataset, data.root, **kwargs)  # rank 0 writes the data once
                return ImageNet(root, split, transforms=transforms)  # class names: the folder names
            names = tuple(data.class_names) or None
            return ImageFolder(data.train_dir if split == "train" else data.val_dir, class_names=names, transforms=transforms)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} ({_TOY_HINT})") from e

    def train_dataset(self):
        d = self.cfg.data
        return self._dataset("train", TrainTransform(
            d.input_size, scale=d.scale, ratio=d.ratio, interpolation=d.interpolation, hflip=d.hflip,
            rand_augment=d.rand_augment, erasing=d.random_erasing, mean=d.mean, std=d.std,
        ))

    def val_dataset(self):
        return self._dataset("val", EvalTransform.from_preprocessing(self.eval_preprocessing()))

    def collate(self, samples: list[dict]) -> dict:
        if "mix_seed" not in samples[0]:
            return eval_collate(samples)
        if self._mix is None:
            d = self.cfg.data
            self._mix = MixCollate(self.cfg.model.num_classes, mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha,
                                   prob=d.mix_prob, switch_prob=d.switch_prob, label_smoothing=d.label_smoothing)
        return self._mix(samples)

    def loss(self, model, batch: dict, device) -> dict[str, torch.Tensor]:
        logits = model(batch["image"].to(device, non_blocking=True))
        return classification_loss(logits, batch["target"].to(device, non_blocking=True))

    def evaluate(self, model, loader, device) -> dict:
        """Top-1 / top-5 on the evaluation transform's crops (DeiT's protocol), counts summed over processes."""
        evaluator = Accuracy(model.num_classes, topk=(1, 5), per_class=self.cfg.data.per_class)
        self._names = model.class_names or tuple(str(i) for i in range(model.num_classes))
        for batch in loader:
            evaluator.update(model(batch["image"].to(device, non_blocking=True)), batch["label"])
        return evaluator.compute()

    def metrics_table(self, metrics: dict) -> str:
        rows = []
        if "per_class" in metrics:
            rows = [f"{'class':<32} {'top-1':>7}", "-" * 40]
            rows += [f"{name[:32]:<32} {_pct(acc):>7}" for name, acc in zip(self._names or self.class_names, metrics["per_class"])]
            rows.append("-" * 40)
        rows.append(f"top-1 {_pct(metrics['top1'])}   top-5 {_pct(metrics['top5'])}")
        return "\n".join(rows)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"
