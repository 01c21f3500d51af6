"""What ``GLPN.from_pretrained`` reads: our checkpoints, Hugging Face ``GLPNForDepthEstimation`` folders
(transformers 4.x and 5.x write and hold the same key names) and the original GLPDepth checkpoints.

The encoder's keys are converted by the backbone (every PVTv2/MiT format); the rules below rename the
decoder's (``tasks.common.pretrained`` applies them with ``backbones.weights.RenameRules``' semantics).
"""
from __future__ import annotations

from typing import Mapping

from backbones.pvt_v2_arch import mit_from_hf_config, mit_from_state_dict
from backbones.to_transformers import hf_encoder
from backbones.weights import RenameRules
from tasks.common.pretrained import OriginalFormat, TaskWeights
from tasks.common.to_transformers import HFModel
from tasks.common.zoo import PublishedModel

# Hugging Face (decoder.stages, head.head), original GLPDepth (bot_conv, skip_conv{1,2}, fusion{k}.conv{1,2,3},
# last_layer_depth) under any prefix (``module.``).
HEAD_RULES = RenameRules([
    (r"^decoder\.stages\.", "head.stages."),
    (r"^head\.head\.", "head.depth."),
    (r"^(?:.*\.)?decoder\.bot_conv\.", "head.stages.0.convolution."),
    (r"^(?:.*\.)?decoder\.skip_conv(\d)\.", r"head.stages.\1.convolution."),
    (r"^(?:.*\.)?decoder\.fusion(\d)\.conv3\.", r"head.stages.\1.fusion.convolutional_layer3."),
    (r"^(?:.*\.)?decoder\.fusion(\d)\.conv(\d)\.", r"head.stages.\1.fusion.convolutional_layer\2."),
    (r"^(?:.*\.)?last_layer_depth\.", "head.depth."),
])

TO_HF_RULES = RenameRules([(r"^head\.stages\.", "decoder.stages."), (r"^head\.depth\.", "head.head.")])  # the way back


def config_from_hf(cfg: Mapping, source) -> dict:
    """A Hugging Face ``GLPNConfig`` (dict) -> ``GLPN`` arguments."""
    if cfg.get("head_in_index", -1) not in (-1, 3):
        raise ValueError(
            f"{source}: head_in_index={cfg['head_in_index']} is not supported: the depth head reads the "
            "full-resolution decoder output (-1)"
        )
    backbone, backbone_args = mit_from_hf_config(cfg, source)
    return dict(backbone=backbone, max_depth=float(cfg.get("max_depth", 10)),
                decoder_dim=cfg.get("decoder_hidden_size", 64), backbone_args=backbone_args)


def _bot_conv(state_dict: Mapping) -> str | None:
    return next((k for k in state_dict if k.endswith("decoder.bot_conv.weight")), None)


def config_from_glpdepth(state_dict: Mapping, meta) -> dict:
    """A GLPDepth checkpoint's architecture, read from its weight shapes. ``max_depth`` is not stored there: 10
    (NYU) unless ``from_pretrained(..., max_depth=80)`` (the KITTI checkpoint)."""
    backbone, backbone_args = mit_from_state_dict(state_dict)
    return dict(backbone=backbone, max_depth=10.0, decoder_dim=state_dict[_bot_conv(state_dict)].shape[0],
                backbone_args=backbone_args)


def to_transformers(model) -> HFModel:
    """A GLPN as transformers' ``GLPNForDepthEstimation`` (MiT or PVTv2 encoder without linear attention)."""
    encoder = hf_encoder(model.backbone, "segformer")
    state = {f"glpn.{k}": v for k, v in encoder.state_dict.items()}
    state.update({TO_HF_RULES(k): v for k, v in model.state_dict().items() if k.startswith("head.")})
    max_depth = model.config["max_depth"]
    if max_depth != int(max_depth):  # transformers 5.x types GLPNConfig.max_depth as an int
        raise ValueError(f"max_depth={max_depth} m: transformers' GLPNConfig holds a whole number of metres only")
    config = {"model_type": "glpn", "architectures": ["GLPNForDepthEstimation"], **encoder.config,
              "max_depth": int(max_depth), "decoder_hidden_size": model.config["decoder_dim"],
              "head_in_index": -1}
    return HFModel(config, state, "depth-estimation", "glpn", encoder.notes)


WEIGHTS = TaskWeights(
    task="depth",
    hf_model_types=("glpn",),
    hf_architectures=("GLPNForDepthEstimation",),
    config_from_hf=config_from_hf,
    head_rules=HEAD_RULES,
    originals=(
        OriginalFormat(
            "an original GLPDepth checkpoint (module.decoder.bot_conv.*)",
            lambda sd: _bot_conv(sd) is not None,
            config_from_glpdepth,
        ),
    ),
    to_transformers=to_transformers,
)

# The published checkpoints (the model zoo: short names from_pretrained accepts); the numbers are the paper's.
PUBLISHED = {
    "glpn-nyu": PublishedModel(
        "vinvino02/glpn-nyu", "NYU Depth v2",
        {"d1": 0.915, "d2": 0.988, "d3": 0.997, "abs_rel": 0.098, "rmse": 0.344, "log10": 0.042},
        "GLPN paper (arXiv 2201.07436), Eigen crop, 0-10 m",
    ),
    "glpn-kitti": PublishedModel(
        "vinvino02/glpn-kitti", "KITTI (Eigen split)",
        {"d1": 0.967, "d2": 0.996, "d3": 0.999, "abs_rel": 0.057, "rmse": 2.297, "rmse_log": 0.086},
        "GLPN paper (arXiv 2201.07436), Garg crop, 0-80 m",
    ),
}
