"""The base of every task model: a registered backbone, a head, a config that rebuilds it, its preprocessing
and class names, the checks at its boundary, and the one ``from_pretrained`` pipeline.

A task model subclasses ``TaskModel``, builds its head on ``self.in_channels`` and ends ``__init__`` with
``self._set_config(...)`` (its own architecture arguments); it names its ``TaskWeights`` table (its
``weights.py``) and its default ``Preprocessing``, and implements ``forward`` and ``predict``.

The predict contract is declared here once: every subclass's ``predict`` runs in eval mode, under
``torch.inference_mode``, and leaves the model's training flag as it found it (``predicting``), whatever mode the
model was left in; so does the same ``predict`` run on an exported network standing in for the model
(``tasks.common.export``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from backbones import build_backbone

from .preprocess import Preprocessing
from .pretrained import TaskWeights, check_names, convert, load_model_weights, load_strict, read_pretrained

_log = logging.getLogger(__name__)
_RESERVED_BACKBONE_ARGS = ("out_features", "out_indices", "weights")


@contextlib.contextmanager
def predicting(model: nn.Module) -> Iterator[nn.Module]:
    """The predict contract: ``model`` in eval mode (no dropout, drop-path, batch statistics) and no gradients
    (``torch.inference_mode``) inside the block; its training flag restored after it, even on an error."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _under_contract(predict: Callable) -> Callable:
    if getattr(predict, "under_predict_contract", False):
        return predict

    @functools.wraps(predict)
    def contract(self, *args, **kwargs):
        with predicting(self):
            return predict(self, *args, **kwargs)

    contract.under_predict_contract = True
    return contract


class TaskModel(nn.Module):
    """``TaskModel(backbone, *, out_features, backbone_args, backbone_weights, num_classes, class_names,
    preprocessing)``; ``type(model)(**model.config)`` rebuilds the architecture (no weights).

    ``backbone_args`` are overrides for ``build_backbone`` (see ``backbones.pvt_v2.PVTv2Config``); None takes
    ``default_backbone_args`` of the subclass for that backbone. ``backbone_weights`` (a local path or a hub id)
    initialises the backbone (ImageNet pre-training). ``class_names``: one per class (kept for reports and
    pictures). ``preprocessing``: a ``Preprocessing`` or its dict; None takes the subclass's default.
    """

    task: ClassVar[str]
    weights_spec: ClassVar[TaskWeights]
    default_preprocessing: ClassVar[Preprocessing]
    default_backbone_args: ClassVar[Mapping[str, Mapping]] = {}
    # Fields of the config's model section that are not constructor arguments, read elsewhere: ``weights`` (the
    # whole model's initial checkpoint) and whatever the task reads itself (e.g. loss coefficients).
    options_not_passed: ClassVar[tuple[str, ...]] = ("weights",)
    # The dataclass of the head's hyper-parameters (as backbones.PVTv2Config is the backbone's), where the
    # constructor takes its fields as keyword arguments (``**head``, checked by ``head_options``): the config
    # section extends it and the checkpoint's config stores its fields, so each is declared once.
    head_config: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs):
        """A subclass's own ``predict`` is put under the predict contract (``predicting``)."""
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:
            cls.predict = _under_contract(cls.__dict__["predict"])

    def __init__(
        self,
        backbone: str,
        *,
        out_features: Sequence[str],
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
    ):
        super().__init__()
        who = type(self).__name__
        if not isinstance(backbone, str):
            raise TypeError(f"{who}: backbone must be a registered backbone name (str), got {backbone!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"{who}: num_classes must be a positive int, got {num_classes!r}")
        if backbone_args is None:
            backbone_args = self.default_backbone_args.get(backbone, {})
        if not isinstance(backbone_args, Mapping):
            raise TypeError(f"{who}: backbone_args must be a dict of build_backbone overrides, got {backbone_args!r}")
        backbone_args = dict(backbone_args)
        reserved = sorted(set(backbone_args) & set(_RESERVED_BACKBONE_ARGS))
        if reserved:
            raise ValueError(f"{who}: backbone_args may not set {', '.join(reserved)} ({who} sets them itself)")
        self.backbone = build_backbone(backbone, out_features=tuple(out_features), weights=backbone_weights, **backbone_args)
        self.in_channels = [self.backbone.feature_channels[name] for name in self.backbone.out_features]
        self.num_classes = num_classes
        self.class_names = check_names(class_names, num_classes, who) if num_classes is not None else None
        self.preprocessing = self.default_preprocessing if preprocessing is None else Preprocessing.from_dict(preprocessing)
        self._backbone_config = dict(backbone=backbone, backbone_args=backbone_args)

    def _set_config(self, **arch: Any) -> None:
        """Record the arguments that rebuild this model (``type(self)(**self.config)``)."""
        extra = {"num_classes": self.num_classes, "class_names": self.class_names} if self.num_classes is not None else {}
        self.config = {
            "backbone": self._backbone_config["backbone"], **extra, **arch,
            "backbone_args": self._backbone_config["backbone_args"], "preprocessing": self.preprocessing.to_dict(),
        }

    def features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's selected stages, in stride order (the backbone checks the input)."""
        out = self.backbone(pixel_values)
        return [out[name] for name in self.backbone.out_features]

    def load_hint(self, state_dict: Mapping[str, torch.Tensor]) -> str:
        """Why ``state_dict`` (in our keys) does not fit, when the backbone can tell."""
        inner = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        return self.backbone.load_hint(inner)

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        """Modules the recipe trains at their own learning rate (``optimizer.lr_mults`` by group name)."""
        return {}

    def predict(self, image: np.ndarray, **options):
        """The prediction for one ``image[H, W, 3]`` uint8 RGB, at the image's own size; a subclass's ``predict``
        runs under the predict contract (``predicting``: eval mode, no gradients, the training flag restored)."""
        raise NotImplementedError

    def export_forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The exported graph's outputs, in the order of the task's ``TaskSpec.export_outputs`` (default: the
        one tensor ``forward`` returns)."""
        return (self(pixel_values),)

    def for_export(self, sampler: str | None = None) -> "TaskModel":
        """The module to export (``tasks.common.export``): this model, or a copy set up for a graph (e.g. the
        deformable attention's ``sampler``; ignored by models without one)."""
        return self

    def save_pretrained(self, out_dir: str | os.PathLike, *, format: str = "transformers") -> os.PathLike:
        """Write this model as a Hugging Face transformers model folder (``config.json`` with ``id2label``,
        ``model.safetensors``, ``preprocessor_config.json``, a model card), checked against this model before it
        is renamed into place (``tasks.common.to_transformers``); what ``tools/export.py CKPT DIR --to
        transformers`` writes. A model no transformers class expresses is a ValueError saying so."""
        if format != "transformers":
            raise ValueError(f"save_pretrained: format must be 'transformers' (our checkpoints are written by "
                             f"tools/train.py), got {format!r}")
        from .to_transformers import save_transformers

        return save_transformers(self, out_dir)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def arguments(cls) -> list[str]:
        """The constructor's argument names, the ``head_config`` fields it takes as keywords included."""
        params = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                  if n != "self" and p.kind is not p.VAR_KEYWORD]
        head = [f.name for f in dataclasses.fields(cls.head_config)] if cls.head_config is not None else []
        return params + [n for n in head if n not in params]

    @classmethod
    def head_options(cls, **values: Any):
        """``values`` as a ``head_config`` (its defaults for the rest); a name that is not one of its fields is a
        TypeError naming the model and the valid ones."""
        known = [f.name for f in dataclasses.fields(cls.head_config)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown argument(s) {', '.join(map(repr, unknown))}; its head's "
                            f"hyper-parameters ({cls.head_config.__name__}) are {', '.join(known)}")
        return cls.head_config(**values)

    @classmethod
    def check_options(cls, options, set_by_task: Sequence[str] = ()) -> list[str]:
        """The constructor arguments a config's model section (a dataclass) may set; a field that is neither one
        of them nor in ``options_not_passed`` (a misspelt or stale name) is a ValueError naming it and the valid
        ones. ``set_by_task``: arguments the task passes itself (e.g. ``class_names``)."""
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"the model section must be a dataclass, got {type(options).__name__}")
        params = [n for n in cls.arguments() if n not in set_by_task]
        unknown = [f.name for f in dataclasses.fields(options) if f.name not in params and f.name not in cls.options_not_passed]
        if unknown:
            valid = ", ".join(sorted({*params, *cls.options_not_passed}))
            raise ValueError(f"model.{unknown[0]} is not an option of {cls.__name__} ({type(options).__name__}); "
                             f"valid: {valid}")
        return params

    @classmethod
    def build(cls, options, **overrides) -> "TaskModel":
        """A model from a config's model section: ``options`` is a dataclass whose fields are this class's
        constructor arguments (passed on) or named in ``options_not_passed``; any other field is a ValueError
        naming it and the valid ones. ``weights`` (if set) initialise the whole model; weights with another class
        count fine-tune: the class-dependent tensors keep this model's own (seeded) initialisation, with one log
        line naming them (``from_pretrained``), and the rest load strictly."""
        params = cls.check_options(options, set_by_task=tuple(overrides))
        kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in params}
        model = cls(**{**kwargs, **overrides})
        if getattr(options, "weights", None):
            classes = {"num_classes": model.num_classes} if model.num_classes is not None else {}
            pretrained = cls.from_pretrained(options.weights, **classes)
            own = model.state_dict()
            load_model_weights(model, pretrained, keep={k: own[k] for k in pretrained.reinitialised})
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, backbone_args: Mapping | None = None, **kwargs) -> "TaskModel":
        """Build the architecture ``path`` describes and load its weights strictly; returns it in eval mode.

        ``path``: our checkpoint (``best.pth``/``last.pth`` from ``tools/train.py``: ``{"model": state_dict,
        "meta": {"task": ..., "model": config}}``), a Hugging Face model folder of a class the task's weights
        table names (``config.json`` + weights; transformers 4.x and 5.x key names), a bare state dict with a
        ``config.json`` beside it, a Hugging Face hub id, or an original release the table recognises.

        ``kwargs`` are this model's constructor arguments, replacing the stored ones; an unknown one is a
        TypeError naming the model. ``num_classes=K`` (with ``class_names=[...]``) fine-tunes to another class
        count: the tensors whose shape depends on it (the classifier) keep the model's own initialisation, one
        log line names them, and every other tensor loads strictly. ``backbone_args`` update the stored backbone
        overrides (e.g. ``{"layer_norm_eps": 1e-6}``).
        """
        if backbone_args is not None and not isinstance(backbone_args, Mapping):
            raise TypeError(f"{cls.__name__}.from_pretrained: backbone_args must be a dict of build_backbone overrides, "
                            f"got {backbone_args!r}")
        params = [n for n in cls.arguments() if n not in ("backbone_args", "backbone_weights")]
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.from_pretrained: unknown keyword argument {', '.join(map(repr, unknown))}; it takes "
                f"{cls.__name__}'s arguments ({', '.join(params)}), and backbone overrides as backbone_args={{...}}"
            )
        return cls._load_pretrained(path, backbone_args or {}, **kwargs)

    @classmethod
    def _load_pretrained(cls, path, backbone_args: Mapping, **overrides) -> "TaskModel":
        state_dict, config, local = read_pretrained(path, cls.weights_spec)
        config["backbone_args"] = {**(config.get("backbone_args") or {}), **backbone_args}
        new_count = overrides.get("num_classes", config.get("num_classes")) != config.get("num_classes")
        if new_count and "class_names" not in overrides:
            overrides["class_names"] = None  # the stored names belong to the other count
        model = cls(**{**config, **overrides})
        weights = convert(state_dict, cls.weights_spec, model)
        model.reinitialised = ()
        if new_count:  # only num_classes differs from the stored architecture: what changes shape depends on it
            own = model.state_dict()
            changed = tuple(k for k, v in own.items() if k in weights.state_dict and weights.state_dict[k].shape != v.shape)
            weights.state_dict.update({k: own[k] for k in changed})
            model.reinitialised = changed
            _log.warning(
                "%s.from_pretrained(%s): %s classes in the weights, %s now: re-initialised %s (the model's own "
                "init); every other tensor loaded", cls.__name__, local, config.get("num_classes"),
                overrides["num_classes"], ", ".join(changed) or "nothing",
            )
        load_strict(model, weights, local)
        return model.eval()
