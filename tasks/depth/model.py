"""GLPN: a registered backbone's four stages into the GLPN decoder, depth in metres at the input size.

``GLPN.from_pretrained`` reads our training checkpoints, Hugging Face ``GLPNForDepthEstimation`` folders
(transformers 4.x and 5.x write and hold the same key names) and the original GLPDepth checkpoints; the
weight conversion and the architecture read from each format live here too.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from backbones import build_backbone
from backbones.pvt_v2 import HF_MIT_FIELDS, mit_variant
from backbones.pvt_v2_weights import convert_pvt_v2_state_dict
from backbones.weights import ConvertedWeights
from heads.glpn_head import GLPNHead
from tasks.common.checkpoint import load_strict, read_config_json, read_pretrained

_RESERVED_BACKBONE_ARGS = ("out_features", "out_indices", "weights")


class GLPN(nn.Module):
    """``forward(pixel_values: Tensor[B, 3, H, W]) -> Tensor[B, 1, H, W]`` depth in metres, in (0, max_depth).

    ``pixel_values`` are RGB in [0, 1] with no mean/std normalisation (GLPN's input). Any H, W the backbone
    accepts work; for MiT/PVTv2 the decoder's ``4 ceil(H/4) x 4 ceil(W/4)`` map is cropped to H x W, which
    equals Hugging Face's output (cropped) wherever Hugging Face accepts the size.
    ``backbone_args`` are overrides for ``build_backbone`` (see ``PVTv2Config``); ``backbone_weights`` is a
    local path loaded into the backbone (ImageNet pre-training). ``GLPN(**model.config)`` rebuilds the
    architecture.
    """

    def __init__(
        self,
        backbone: str = "mit_b4",
        max_depth: float = 10.0,
        decoder_dim: int = 64,
        backbone_args: dict | None = None,
        backbone_weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        if not isinstance(backbone, str):
            raise TypeError(f"GLPN: backbone must be a registered backbone name (str), got {backbone!r}")
        backbone_args = dict(backbone_args or {})
        reserved = sorted(set(backbone_args) & set(_RESERVED_BACKBONE_ARGS))
        if reserved:
            raise ValueError(f"GLPN: backbone_args may not set {', '.join(reserved)} (GLPN sets them itself)")
        self.backbone = build_backbone(backbone, out_indices=(0, 1, 2, 3), weights=backbone_weights, **backbone_args)
        channels = [self.backbone.feature_channels[name] for name in self.backbone.out_features]
        self.head = GLPNHead(channels, decoder_dim=decoder_dim, max_depth=max_depth)
        self.config = dict(
            backbone=backbone, max_depth=self.head.max_depth, decoder_dim=decoder_dim, backbone_args=backbone_args
        )

    @property
    def max_depth(self) -> float:
        return self.head.max_depth

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixel_values)
        return self.head([features[name] for name in self.backbone.out_features], size=pixel_values.shape[-2:])

    def load_hint(self, state_dict: Mapping[str, torch.Tensor]) -> str:
        """Why ``state_dict`` (in our keys) does not fit, when the backbone can tell (see ``check_state_dict``)."""
        inner = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        return self.backbone.load_hint(inner) if hasattr(self.backbone, "load_hint") else ""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, max_depth: float | None = None, **backbone_args) -> "GLPN":
        """Build and strictly load a GLPN from a local checkpoint; returns it in eval mode.

        ``path`` is one of:
        - our checkpoint: a ``.pth`` holding ``{"model": state_dict, "meta": {"task": "depth", "model":
          config}}`` (written by ``tools/train.py``);
        - a Hugging Face ``GLPNForDepthEstimation`` folder (``config.json`` + weights);
        - a bare state dict file (``.pth``/``.bin``/``.safetensors``, our / HF keys) with a ``config.json``
          beside it (a Hugging Face config, or ``{"task": "depth", "model": config}``);
        - an original GLPDepth checkpoint (``module.encoder.*``, ``module.decoder.bot_conv.*``, ...); its
          architecture is read from the weight shapes (MiT attention heads and strides assumed);
          ``max_depth`` is not stored there: 10 (NYU) unless given (80 for the KITTI checkpoint).

        ``max_depth`` overrides the stored one; ``backbone_args`` override the stored backbone arguments.
        Hugging Face runs every LayerNorm with eps 1e-5, so HF folders load with ``layer_norm_eps=1e-5,
        embed_layer_norm_eps=1e-5`` (outputs equal HF's); pass ``layer_norm_eps=1e-6`` to use the eps the MiT weights were trained with in GLPDepth.
        """
        state_dict, config = read_pretrained(
            path, "depth", _config_from_json, _config_from_glpdepth_file,
            "an original GLPDepth checkpoint (module.decoder.bot_conv.*)",
        )
        config["backbone_args"] = {**(config.get("backbone_args") or {}), **backbone_args}
        if max_depth is not None:
            config["max_depth"] = max_depth
        model = cls(**config)
        weights = convert_glpn_state_dict(state_dict, model.backbone.convert_state_dict)
        load_strict(model, weights, path)
        return model.eval()


# --- reading checkpoints -----------------------------------------------------------------------------


def _config_from_glpdepth_file(state_dict: Mapping, meta) -> dict | None:
    """The config of a checkpoint of the original code, read from its weight shapes (None if it is not one)."""
    if any(k.endswith("decoder.bot_conv.weight") for k in state_dict):
        return _config_from_glpdepth(state_dict)
    return None


def _config_from_json(path: Path) -> dict:
    ours, hf = read_config_json(path, "depth", "glpn", "GLPNForDepthEstimation", "depth head")
    return ours if ours is not None else _config_from_hf(hf)


# Hugging Face GLPNConfig defaults, for config.json files that leave a field out.
_HF_DEFAULTS = dict(
    num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
    hidden_sizes=[32, 64, 160, 256], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], hidden_act="gelu", hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, drop_path_rate=0.1, decoder_hidden_size=64, max_depth=10, head_in_index=-1,
)


def _config_from_hf(cfg: Mapping) -> dict:
    cfg = {**_HF_DEFAULTS, **cfg}
    if cfg["num_encoder_blocks"] != 4:
        raise ValueError(f"num_encoder_blocks={cfg['num_encoder_blocks']} is not supported: our encoders have 4 stages")
    if cfg["head_in_index"] not in (-1, 3):
        raise ValueError(
            f"head_in_index={cfg['head_in_index']} is not supported: the depth head reads the full-resolution "
            "decoder output (-1)"
        )
    name, args = mit_variant({k: cfg[k] for k in HF_MIT_FIELDS})
    args.update(layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5)  # HF GLPN's LayerNorms ignore config eps
    return dict(backbone=name, max_depth=float(cfg["max_depth"]), decoder_dim=cfg["decoder_hidden_size"],
                backbone_args=args)


def _config_from_glpdepth(sd: Mapping) -> dict:
    """Architecture from an original GLPDepth state dict's shapes (heads and strides are MiT's, not stored)."""
    prefix = next(k for k in sd if k.endswith("decoder.bot_conv.weight"))[: -len("decoder.bot_conv.weight")]
    arch: dict[str, list] = dict(hidden_sizes=[], depths=[], mlp_ratios=[], sr_ratios=[], patch_sizes=[])
    for n in range(1, 5):
        proj = sd.get(f"{prefix}encoder.patch_embed{n}.proj.weight")
        fc1 = sd.get(f"{prefix}encoder.block{n}.0.mlp.fc1.weight")
        if proj is None or fc1 is None:
            raise ValueError(f"the GLPDepth checkpoint has no {prefix}encoder.patch_embed{n} / block{n}.0 weights")
        arch["hidden_sizes"].append(proj.shape[0])
        arch["patch_sizes"].append(proj.shape[-1])
        blocks = f"{prefix}encoder.block{n}."
        arch["depths"].append(len({k[len(blocks) :].split(".")[0] for k in sd if k.startswith(blocks)}))
        arch["mlp_ratios"].append(fc1.shape[0] // fc1.shape[1])
        sr = sd.get(f"{prefix}encoder.block{n}.0.attn.sr.weight")
        arch["sr_ratios"].append(1 if sr is None else sr.shape[-1])
    arch["num_channels"] = sd[f"{prefix}encoder.patch_embed1.proj.weight"].shape[1]
    name, args = mit_variant(arch)
    return dict(backbone=name, max_depth=10.0, decoder_dim=sd[f"{prefix}decoder.bot_conv.weight"].shape[0],
                backbone_args=args)


# --- converting weights -----------------------------------------------------------------------------

# Decoder keys -> ours, first matching rule wins: ours, Hugging Face (4.x = 5.x), original GLPDepth
# (bot_conv, skip_conv{1,2}, fusion{k}.conv{1,2,3}, last_layer_depth) under any prefix (``module.``).
_HEAD_RULES = [
    (r"^head\.(?!head\.)", "head."),
    (r"^decoder\.stages\.", "head.stages."),
    (r"^head\.head\.", "head.depth."),
    (r"^(?:.*\.)?decoder\.bot_conv\.", "head.stages.0.convolution."),
    (r"^(?:.*\.)?decoder\.skip_conv(\d)\.", r"head.stages.\1.convolution."),
    (r"^(?:.*\.)?decoder\.fusion(\d)\.conv3\.", r"head.stages.\1.fusion.convolutional_layer3."),
    (r"^(?:.*\.)?decoder\.fusion(\d)\.conv(\d)\.", r"head.stages.\1.fusion.convolutional_layer\2."),
    (r"^(?:.*\.)?last_layer_depth\.", "head.depth."),
]
_HEAD_COMPILED = [(re.compile(p), r) for p, r in _HEAD_RULES]


def convert_glpn_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    convert_backbone: Callable[[Mapping], ConvertedWeights] = convert_pvt_v2_state_dict,
) -> ConvertedWeights:
    """Rename a GLPN state dict (ours, HF, original GLPDepth) into ``GLPN`` keys.

    The encoder goes through the backbone's converter (for PVTv2/MiT: any published format, any prefix);
    keys that neither converter knows keep their name, so the strict load reports them as unexpected.
    """
    encoder = convert_backbone(state_dict)
    out = {f"backbone.{k}": v for k, v in encoder.state_dict.items()}
    origin = {f"backbone.{k}": o for k, o in encoder.origin.items()}
    for key in encoder.dropped:
        new = key
        for pattern, repl in _HEAD_COMPILED:
            if pattern.match(key):
                new = pattern.sub(repl, key, count=1)
                break
        out[new] = state_dict[key]
        origin[new] = key
    return ConvertedWeights(out, origin, [], encoder.format, encoder.prefix)
