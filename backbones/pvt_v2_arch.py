"""The PVTv2 / MiT architecture that foreign weights and configs describe, as a registered variant and overrides.

Two sources: the weight shapes of a state dict in any key format ``pvt_v2_keys`` reads (original mmseg /
GLPDepth releases store no config), and the Hugging Face ``PvtV2Config`` / ``SegformerConfig`` / ``GLPNConfig``
fields that describe the encoder. ``pvt_v2.variant_for`` picks the variant.
"""
from __future__ import annotations

from .pvt_v2 import MIT_VARIANTS, PVTv2Config, infer_arch, variant_for
from .pvt_v2_keys import convert_pvt_v2_state_dict

# The Hugging Face Segformer / GLPN config fields that describe the encoder (PVTv2Config knobs of the same name).
HF_MIT_FIELDS = (
    "num_channels", "depths", "hidden_sizes", "num_attention_heads", "mlp_ratios", "sr_ratios", "patch_sizes",
    "strides", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate",
)


# Hugging Face SegformerConfig / GLPNConfig defaults of those fields (config.json leaves defaults out).
HF_MIT_DEFAULTS = dict(
    num_channels=3, depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8],
    mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.1,
)


# Hugging Face PvtV2Config's fields that describe the network (the PVTv2Config knobs of the same name).
HF_PVT_V2_FIELDS = HF_MIT_FIELDS + ("layer_norm_eps", "qkv_bias", "linear_attention")
HF_PVT_V2_DEFAULTS = dict(
    HF_MIT_DEFAULTS, mlp_ratios=[8, 8, 4, 4], drop_path_rate=0.0, layer_norm_eps=1e-6, qkv_bias=True,
    linear_attention=False,
)


def _check_stages(cfg: dict, source) -> None:
    if cfg.get("num_encoder_blocks", 4) != 4:
        blocks = cfg["num_encoder_blocks"]
        raise ValueError(f"{source}: num_encoder_blocks={blocks} is not supported: PVTv2/MiT has 4 stages")


def mit_from_hf_config(cfg: dict, source) -> tuple[str, dict]:
    """``(MiT variant, overrides)`` for the encoder a Hugging Face Segformer / GLPN config describes. Hugging Face
    runs every LayerNorm of these models with eps 1e-5 whatever the config says, so the overrides set that too
    (outputs equal Hugging Face's)."""
    _check_stages(cfg, source)
    name, args = variant_for({k: cfg.get(k, HF_MIT_DEFAULTS[k]) for k in HF_MIT_FIELDS}, MIT_VARIANTS)
    return name, {**args, "layer_norm_eps": 1e-5, "embed_layer_norm_eps": 1e-5}


def pvt_v2_from_hf_config(cfg: dict, source) -> tuple[str, dict]:
    """``(variant, overrides)`` for the network a Hugging Face ``PvtV2Config`` (dict) describes.
    Hugging Face's PvtV2 uses ``layer_norm_eps`` in every LayerNorm."""
    _check_stages(cfg, source)
    name, overrides = variant_for({k: cfg.get(k, HF_PVT_V2_DEFAULTS[k]) for k in HF_PVT_V2_FIELDS})
    eps = cfg.get("layer_norm_eps", HF_PVT_V2_DEFAULTS["layer_norm_eps"])
    return name, {**overrides, "layer_norm_eps": eps, "embed_layer_norm_eps": eps}


def arch_from_state_dict(state_dict: dict) -> dict:
    """The ``PVTv2Config`` fields a PVTv2/MiT state dict (any known format) was made with, read from its weight
    shapes; the attention heads and strides are not stored in weights (the registered variants' are assumed)."""
    sd = convert_pvt_v2_state_dict(state_dict).state_dict
    arch = infer_arch(sd)
    if arch is None:
        raise ValueError("the weights have no complete PVTv2/MiT encoder (stage1-4 blocks.0.mlp.fc1 expected)")
    sr = [sd.get(f"stage{i}.blocks.0.attn.sr.weight") for i in range(1, 5)]
    # Linear SRA pools to 7x7 and has a 1x1 "sr" conv in every stage; its sr_ratios are never used.
    default_sr = PVTv2Config().sr_ratios
    arch["sr_ratios"] = default_sr if arch["linear_attention"] else tuple(1 if w is None else w.shape[-1] for w in sr)
    arch["patch_sizes"] = tuple(sd[f"stage{i}.patch_embed.proj.weight"].shape[-1] for i in range(1, 5))
    arch["num_channels"] = sd["stage1.patch_embed.proj.weight"].shape[1]
    return arch


def mit_from_state_dict(state_dict: dict) -> tuple[str, dict]:
    """``(MiT variant, overrides)`` for the MiT encoder in a state dict of any known format (e.g. an original
    mmseg or GLPDepth release, which store no config)."""
    arch = arch_from_state_dict(state_dict)
    arch.pop("linear_attention")
    return variant_for(arch, MIT_VARIANTS)
