"""Write a model as a Hugging Face transformers model folder: ``config.json`` (with ``id2label``),
``model.safetensors``, ``preprocessor_config.json`` and a model card (``README.md``).

A task says what transformers class holds its model in its ``TaskWeights.to_transformers`` (its ``weights.py``):
a function ``model -> HFModel`` (config and weights in transformers' names), raising a ValueError for a model no
transformers class expresses. This module adds what every task shares and proves the folder before it exists:

1. the weights, read back through our own loader (``from_pretrained`` of the folder, which computes what
   transformers computes: the parity tests hold it to 1e-4), must equal the model's tensor for tensor;
2. that reloaded model's outputs on a probe input must equal the model's within ``tolerance`` (relative to the
   output's size): this measures what the folder cannot hold exactly (a LayerNorm eps; see ``backbones.
   to_transformers``); the card states the measured difference.

The folder is written to a temporary folder beside ``out_dir`` and renamed into place when complete and
checked; an existing non-empty ``out_dir`` is refused (an earlier export is never replaced or merged into).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from .preprocess import Preprocessing

TOLERANCE = 1e-4  # fp32 parity, relative to max(1, largest |output|): our parity tests' bound


@dataclass
class HFModel:
    """A model in transformers' terms: ``config`` (config.json without the labels, which the writer adds),
    ``state_dict`` (transformers' key names), ``pipeline_tag`` (the hub's task name), ``image_processor`` (a
    kind ``image_processor`` takes) and ``notes`` (what it does not hold exactly, one sentence each)."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    pipeline_tag: str
    image_processor: str
    notes: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return self.config["architectures"][0]


def hf_labels(names, count: int | None) -> dict:
    """``id2label`` / ``label2id`` for ``count`` classes: the model's names, or transformers' own ``LABEL_i``
    placeholders for a model without names (which our loader reads back as no names). ``label2id`` needs unique
    labels, so a repeated name keeps its first index there."""
    if not count:
        return {}
    names = [n or f"LABEL_{i}" for i, n in enumerate(names)] if names is not None else [f"LABEL_{i}" for i in range(count)]
    label2id = {}
    for i, n in enumerate(names):
        label2id.setdefault(n, i)
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": label2id}


def image_processor(pre: Preprocessing, kind: str) -> tuple[dict, str | None]:
    """``(preprocessor_config.json, note)``: transformers' image processor ``kind`` (``HFModel.image_processor``:
    the one whose post-processing fits the model, so that pipelines work) set up to compute ``pre``'s
    ``pixel_values``, with the torchvision backend ("...Fast" in transformers 4.x, the default in 5.x). Where that
    processor cannot reproduce ``pre``, ``note`` says how it differs (else None)."""
    if kind not in _PROCESSORS:
        raise ValueError(f"image_processor: kind must be one of {', '.join(_PROCESSORS)}, got {kind!r}")
    config = dict(image_processor_type=_PROCESSORS[kind], do_rescale=True, rescale_factor=1 / 255,
                  resample=_RESAMPLE[pre.interpolation])
    normalizes = kind != "glpn"
    if normalizes:
        config.update(do_normalize=True, image_mean=list(pre.mean), image_std=list(pre.std))
    notes = [] if normalizes or (pre.mean, pre.std) == ((0.0,) * 3, (1.0,) * 3) else [
        f"GLPN's processor does not normalise; ours subtracts {list(pre.mean)} and divides by {list(pre.std)}"]
    size = _processor_size(pre, kind, notes)
    config.update(do_resize=size is not None, **({"size": size} if size is not None else {}))
    if kind == "clip":
        crop = pre.size[1] if pre.resize == "short_side_crop" else None
        config.update(do_center_crop=crop is not None, do_convert_rgb=True,
                      **({"crop_size": {"height": crop, "width": crop}} if crop else {}))
    elif kind == "segformer":
        config.update(do_reduce_labels=False)
    elif kind == "detr":
        config.update(format="coco_detection", do_pad=True)
    if pre.size_divisor > 1 and pre.resize != "fixed":
        notes.append(f"ours then resizes each side up to a multiple of {pre.size_divisor}; this processor does not")
    return config, "; ".join(notes) or None


def _processor_size(pre: Preprocessing, kind: str, notes: list[str]) -> dict | None:
    """The processor's ``size`` for ``pre`` (None: no resize), adding to ``notes`` where it is not ours."""
    if pre.resize == "none":
        return None
    if pre.resize == "fixed" and kind != "glpn":
        return {"height": pre.size[0], "width": pre.size[1]}
    if pre.resize == "short_side_crop" and kind == "clip":
        return {"shortest_edge": pre.size[0]}
    if pre.resize == "short_side" and kind == "detr":
        notes.append(f"where the long side reaches {pre.size[1]}, transformers makes it exactly that and ours (DETR's "
                     "rule) truncates it, so a size can be a pixel longer there; otherwise identical")
        return {"shortest_edge": pre.size[0], "longest_edge": pre.size[1]}
    if kind == "glpn":
        notes.append(f"GLPN's processor does not resize; ours resizes ({pre.resize} {list(pre.size)})")
        return None
    short = min(pre.size) if pre.resize == "keep_ratio" else pre.size[0]
    notes.append(f"ours resizes {pre.resize} {list(pre.size)}, which this processor has no rule for: it resizes to "
                 f"{short}x{short}")
    return {"height": short, "width": short}


_PROCESSORS = {"clip": "CLIPImageProcessorFast", "segformer": "SegformerImageProcessorFast",
               "glpn": "GLPNImageProcessor", "detr": "DeformableDetrImageProcessorFast"}


# PIL's resampling codes, which transformers' processor configs store.
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def save_transformers(model, out_dir, *, to_hf=None, source=None, tolerance: float = TOLERANCE,
                      probe_size: tuple[int, int] = (160, 224)) -> Path:
    """Write ``model`` as a transformers folder at ``out_dir`` (see the module docstring); returns its path.

    ``to_hf``: ``model -> HFModel`` (default: the task's ``model.weights_spec.to_transformers``). ``source``: the
    checkpoint the model came from; its training config and the ``metrics.json`` beside it go into the card.
    A model transformers cannot express, a folder that does not reproduce the model, or an ``out_dir`` that
    exists and is not empty: a ValueError, and nothing is left behind."""
    to_hf = to_hf or getattr(getattr(model, "weights_spec", None), "to_transformers", None)
    if to_hf is None:
        raise ValueError(f"transformers has no class for a {type(model).__name__} ({getattr(model, 'task', '?')} "
                         "task): it cannot be written as a transformers folder")
    out_dir = check_out_dir(out_dir)
    hf = to_hf(model)
    config = {**hf.config, **hf_labels(model.class_names, model.num_classes), "dtype": "float32"}
    processor, processor_note = image_processor(model.preprocessing, hf.image_processor)

    def fill(folder: Path) -> None:
        _write(folder, config, hf.state_dict, processor)
        difference = verify(model, folder, tolerance, probe_size, hf.notes)
        (folder / "README.md").write_text(model_card(model, hf, config, processor_note, difference, source))

    return _atomic_folder(out_dir, fill)


def save_backbone_transformers(backbone, out_dir) -> Path:
    """Write a PVTv2/MiT ``backbone`` (from ``build_backbone``) as a transformers ``PvtV2Model`` folder, checked
    by converting the written weights back with the backbone's own converter (tensor for tensor)."""
    from backbones.to_transformers import hf_encoder

    out_dir = check_out_dir(out_dir)
    encoder = hf_encoder(backbone, "pvt_v2")
    name = getattr(backbone, "name", type(backbone).__name__)
    config = {"model_type": "pvt_v2", "architectures": ["PvtV2Model"], **encoder.config, "dtype": "float32",
              "out_features": list(backbone.out_features)}
    processor, _ = image_processor(Preprocessing(), "clip")

    def fill(folder: Path) -> None:
        from backbones.weights import read_state_dict

        _write(folder, config, encoder.state_dict, processor)
        back = backbone.convert_state_dict(read_state_dict(folder / "model.safetensors")).state_dict
        ours = backbone.state_dict()
        if set(back) != set(ours) or not all(torch.equal(back[k], ours[k]) for k in ours):
            raise ValueError(f"the transformers weights do not read back as {name}'s")
        card = [f"# PvtV2Model ({name})", "", f"The `{name}` encoder in transformers' `PvtV2Model` format (no head). "
                "Preprocessing: RGB in [0, 1], ImageNet mean and std.", *[f"- {n}" for n in encoder.notes]]
        (folder / "README.md").write_text("---\nlibrary_name: transformers\npipeline_tag: image-feature-extraction\n"
                                          "---\n\n" + "\n".join(card) + "\n")

    return _atomic_folder(out_dir, fill)


def check_out_dir(out_dir) -> Path:
    """``out_dir`` as a Path; one that exists and is not an empty folder is a ValueError (nothing is replaced)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder: choose a new OUT_DIR (an earlier export is "
                         "never overwritten)")
    return out_dir


def _atomic_folder(out_dir: Path, fill) -> Path:
    """``fill(folder)`` a temporary folder beside ``out_dir``, then rename it to ``out_dir``; on any failure the
    temporary folder is removed and ``out_dir`` is as it was. A write error is an OSError naming the folder."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            fill(tmp)
        except RuntimeError as e:  # safetensors and torch wrap a full disk's OSError in a RuntimeError
            if "No space left on device" not in str(e):
                raise
            raise OSError(28, f"no space left on device while writing {out_dir} (nothing was written)") from e
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): the rename needs the name free
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write(folder: Path, config: dict, state_dict: Mapping[str, torch.Tensor], processor: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def verify(model, folder: Path, tolerance: float, probe_size: tuple[int, int], notes=()) -> float:
    """The largest output difference between ``model`` and ``folder`` read back with our loader (relative to
    max(1, largest |output|)); a weight that does not come back bit for bit, or a difference over
    ``tolerance``, is a ValueError."""
    back = type(model).from_pretrained(folder)
    ours, theirs = model.state_dict(), back.state_dict()
    same_keys = set(ours) == set(theirs)
    wrong = sorted(k for k in ours if same_keys and not k.endswith("num_batches_tracked")
                   and not torch.equal(ours[k].cpu(), theirs[k]))
    if wrong or not same_keys:
        raise ValueError(f"the transformers weights do not read back as this model's (first: {(wrong or ['keys'])[0]})")
    probe = torch.randn(1, 3, *probe_size, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a, b = _tensors(model(probe.to(model.device))), _tensors(back(probe))
    finally:
        model.train(was_training)
    scale = max(1.0, max(t.abs().max().item() for t in a))
    difference = max((x.cpu() - y).abs().max().item() for x, y in zip(a, b)) / scale
    if not difference <= tolerance or math.isnan(difference):
        raise ValueError(f"transformers would compute other outputs than this model (relative difference "
                         f"{difference:.2g} > {tolerance:g}): " + "; ".join(notes or ["the folder does not reproduce it"]))
    return difference


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [v for k, v in sorted(out.items()) if isinstance(v, torch.Tensor)]
    raise TypeError(f"cannot compare a model output of type {type(out).__name__}")


def model_card(model, hf: HFModel, config: dict, processor_note, difference: float, source) -> str:
    """The folder's README.md: task, architecture, classes, preprocessing, fidelity, training config, metrics."""
    pre = model.preprocessing
    lines = [
        "---", "library_name: transformers", f"pipeline_tag: {hf.pipeline_tag}", "tags:",
        f"- {model.task}", f"- {model.config['backbone']}", "---", "",
        f"# {hf.architecture} ({model.config['backbone']})", "",
        f"A {model.task} model ({type(model).__name__} on a `{model.config['backbone']}` backbone) written in "
        f"transformers' `{hf.architecture}` format. Load it with `AutoModel`/`{hf.architecture}.from_pretrained` "
        "and `AutoImageProcessor.from_pretrained` from this folder.", "",
        "## Classes", "",
        (", ".join(f"{i}: {n}" for i, n in config["id2label"].items()) if "id2label" in config else "none (no class head)"),
        "", "## Preprocessing", "",
        f"RGB in [0, 1], mean {list(pre.mean)}, std {list(pre.std)}; resize `{pre.resize}` {list(pre.size)}, "
        f"size divisor {pre.size_divisor}, {pre.interpolation} interpolation.",
        "The image processor (`preprocessor_config.json`) "
        + ("reproduces this exactly." if processor_note is None else f"differs: {processor_note}."),
        "", "## Fidelity", "",
        f"Checked when written: the weights read back unchanged, and the outputs on a probe input differ from the "
        f"original model's by {difference:.2g} (relative to the output's largest value).",
        *([f"- {n}" for n in hf.notes] or []),
    ]
    train_config, metrics = _run_files(source)
    if metrics is not None:
        lines += ["", "## Metrics", "", "From `metrics.json` of the training run:", "", "```json",
                  json.dumps(metrics, indent=2), "```"]
    if train_config is not None:
        lines += ["", "## Training configuration", "", "```json", json.dumps(train_config, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def _run_files(source) -> tuple[dict | None, dict | None]:
    """The training config stored in our checkpoint ``source`` and the run's ``metrics.json`` beside it."""
    if source is None or not Path(source).is_file():
        return None, None
    path = Path(source)
    config = None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True) if path.suffix in (".pth", ".pt") else None
        meta = obj.get("meta") if isinstance(obj, Mapping) else None
        config = meta.get("config") if isinstance(meta, Mapping) else None
    except (RuntimeError, ValueError, OSError, EOFError):  # read once already by from_pretrained: not expected
        config = None
    metrics = None
    if (path.parent / "metrics.json").is_file():
        try:
            metrics = json.loads((path.parent / "metrics.json").read_text())
        except (ValueError, OSError):
            metrics = None
    return config, metrics
