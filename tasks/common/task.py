"""The contract between the training engine (``tasks/common/engine.py``) and a task.

A task is made from a config (``tasks.get_task(cfg)``) and tells the engine how to build its model, read its
data, compute its loss and evaluate. Every method the engine calls is declared here; the optional ones have
defaults, so the engine never asks whether a task "has" something.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import Config, ConfigError
from .preprocess import Preprocessing


class Task(ABC):
    """``main_metric`` picks ``best.pth`` (``higher_is_better`` says which way); ``data_types`` are the config
    sections the task reads its data from."""

    main_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    data_types: ClassVar[tuple[type, ...]]

    # Set by the engine to the model's own preprocessing when it evaluates a checkpoint: evaluation follows the
    # model, never the config (``eval_preprocessing()``).
    model_preprocessing: Preprocessing | None = None

    def __init__(self, cfg: Config):
        if not isinstance(cfg.data, self.data_types):
            names = " or ".join(t.__name__ for t in self.data_types)
            raise TypeError(f"{cfg.task}: data must be {names}, got {type(cfg.data).__name__}")
        self.cfg = cfg

    def preprocessing(self) -> Preprocessing | None:
        """The preprocessing the config's data section describes, which the models it builds store (their
        evaluation protocol); None: the model class's default."""
        return None

    def eval_preprocessing(self) -> Preprocessing | None:
        """What evaluation preprocesses with: the evaluated model's own, else the config's."""
        return self.model_preprocessing or self.preprocessing()

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model to train, from ``cfg.model`` (with a ``config`` dict that rebuilds the architecture)."""

    @abstractmethod
    def load_model(self, path) -> nn.Module:
        """A trained model from a checkpoint of ours, a Hugging Face folder or a hub id."""

    @abstractmethod
    def train_dataset(self) -> Dataset:
        """The training set, indexed by ``(index, seed)`` keys (see ``tasks/common/transforms.py``)."""

    @abstractmethod
    def val_dataset(self) -> Dataset:
        """The evaluation set, indexed by int."""

    @abstractmethod
    def collate(self, samples: list) -> Any:
        """A batch from samples (the DataLoader's ``collate_fn``)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        """``{"loss_<term>": Tensor}``: the engine back-propagates ``"loss"`` when given (a weighted total) and
        the sum of the ``loss_*`` terms otherwise; every entry is logged (``engine.total_loss``)."""

    def begin_step(self, batches: list) -> None:
        """Called with the micro-batches of one optimizer step (``schedule.grad_accum`` of them, this process's)
        before ``loss`` sees each: a loss that divides by counts over the whole batch (summed over processes)
        reads them here, so that accumulating micro-batches equals running them on more processes. Default:
        nothing."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict:
        """``{metric: float | list}`` over the whole loader, gathered across processes."""

    @abstractmethod
    def metrics_table(self, metrics: dict) -> str:
        """The metrics as a table for the terminal."""

    def validate(self, model: nn.Module) -> None:
        """Raise a ValueError naming the config key when a config value does not fit the built model (e.g. a
        crop below the backbone's minimum input), before any training step."""

    @property
    def val_batch_size(self) -> int:
        """Images per evaluation batch (results never depend on it)."""
        return 1


def check_min_size(key: str, value, model) -> None:
    """ConfigError naming ``key`` if any side in ``value`` (an int or a sequence of ints) is below the smallest
    input ``model.backbone`` accepts (its ``min_input_size``: 32 px for PVTv2)."""
    backbone = getattr(model, "backbone", None)
    minimum = getattr(backbone, "min_input_size", None)
    if minimum is None:
        return
    sides = (value,) if isinstance(value, int) else tuple(value)
    if any(side < minimum for side in sides):
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ConfigError(f"{key}={value!r}: {name} needs inputs of at least {minimum} px per side")
