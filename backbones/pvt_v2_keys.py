"""Convert PVTv2 / MiT state dicts from every published key format into ours (a pure function).

Formats: ours (``stage1.patch_embed.proj.weight``), original whai362/PVT and NVlabs/SegFormer MiT
(``patch_embed1``, ``block1.0``, ``norm1``), timm (``patch_embed``, ``stages.0``), Hugging Face
``PvtV2*`` (``encoder.layers.0``), Hugging Face ``Segformer*`` / ``GLPN*`` as saved by transformers 4.x
and 5.x (``encoder.patch_embeddings.0``, ``encoder.block.0.0``) and as held in memory by transformers 5.x
(``stages.0.patch_embeddings``). Each may sit under a prefix (``backbone.``, ``segformer.``, ``pvt_v2.`` ...);
keys outside that prefix, and a classifier ``head.*``, are returned as dropped.

The rest of the PVTv2 format knowledge lives here too: the architecture a state dict was made with
(``infer_arch``, ``arch_from_state_dict``; original mmseg / GLPDepth releases store no config), and the
Hugging Face ``PvtV2Config`` / ``SegformerConfig`` / ``GLPNConfig`` fields that describe the encoder
(``pvt_v2_from_hf_config``, ``mit_from_hf_config``), mapped onto a registered variant and overrides.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

import torch

from .weights import ConvertedWeights, RenameRules, find_prefix


def _stage(offset: int, suffix: str) -> Callable[[re.Match], str]:
    return lambda m: f"stage{int(m[1]) + offset}.{suffix}"


# (regex, replacement) rules per format, applied to each key (prefix removed) with ``RenameRules``' semantics.
_HF_BLOCK = [
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
]
_FORMATS: dict[str, dict] = {
    "ours": dict(stem=r"stage1\.patch_embed\.proj\.weight", rules=[], head=()),
    "huggingface-pvt_v2": dict(
        stem=r"encoder\.layers\.0\.patch_embedding\.proj\.weight",
        rules=[
            (r"^encoder\.layers\.(\d)\.patch_embedding\.layer_norm\.", _stage(1, "patch_embed.norm.")),
            (r"^encoder\.layers\.(\d)\.patch_embedding\.", _stage(1, "patch_embed.")),
            (r"^encoder\.layers\.(\d)\.blocks\.", _stage(1, "blocks.")),
            (r"^encoder\.layers\.(\d)\.layer_norm\.", _stage(1, "norm.")),
            (r"\.attention\.query\.", ".attn.q."),
            (r"\.attention\.key\.", ".attn.k."),
            (r"\.attention\.value\.", ".attn.v."),
            (r"\.attention\.spatial_reduction\.", ".attn.sr."),
            (r"\.attention\.layer_norm\.", ".attn.norm."),
            (r"\.attention\.proj\.", ".attn.proj."),
            *_HF_BLOCK,
        ],
        head=(),
    ),
    "huggingface-segformer": dict(
        stem=r"encoder\.patch_embeddings\.0\.proj\.weight",
        rules=[
            (r"^encoder\.patch_embeddings\.(\d)\.layer_norm\.", _stage(1, "patch_embed.norm.")),
            (r"^encoder\.patch_embeddings\.(\d)\.", _stage(1, "patch_embed.")),
            (r"^encoder\.block\.(\d)\.", _stage(1, "blocks.")),
            (r"^encoder\.layer_norm\.(\d)\.", _stage(1, "norm.")),
            (r"\.attention\.self\.query\.", ".attn.q."),
            (r"\.attention\.self\.key\.", ".attn.k."),
            (r"\.attention\.self\.value\.", ".attn.v."),
            (r"\.attention\.self\.sr\.", ".attn.sr."),
            (r"\.attention\.self\.layer_norm\.", ".attn.norm."),
            (r"\.attention\.output\.dense\.", ".attn.proj."),
            *_HF_BLOCK,
        ],
        head=(),
    ),
    "huggingface-segformer-v5": dict(
        stem=r"stages\.0\.patch_embeddings\.proj\.weight",
        rules=[
            (r"^stages\.(\d)\.patch_embeddings\.layer_norm\.", _stage(1, "patch_embed.norm.")),
            (r"^stages\.(\d)\.patch_embeddings\.", _stage(1, "patch_embed.")),
            (r"^stages\.(\d)\.blocks\.", _stage(1, "blocks.")),
            (r"^stages\.(\d)\.layer_norm\.", _stage(1, "norm.")),
            (r"\.layernorm_before\.", ".norm1."),
            (r"\.layernorm_after\.", ".norm2."),
            (r"\.attention\.q_proj\.", ".attn.q."),
            (r"\.attention\.k_proj\.", ".attn.k."),
            (r"\.attention\.v_proj\.", ".attn.v."),
            (r"\.attention\.o_proj\.", ".attn.proj."),
            (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
            (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
            (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
        ],
        head=(),
    ),
    "original": dict(
        stem=r"patch_embed1\.proj\.weight",
        rules=[
            (r"^patch_embed(\d)\.", _stage(0, "patch_embed.")),
            (r"^block(\d)\.", _stage(0, "blocks.")),
            (r"^norm(\d)\.", _stage(0, "norm.")),
            (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
        ],
        head=("head.",),
    ),
    "timm": dict(
        stem=r"patch_embed\.proj\.weight",
        rules=[
            (r"^patch_embed\.", "stage1.patch_embed."),
            (r"^stages\.(\d)\.downsample\.", _stage(1, "patch_embed.")),
            (r"^stages\.(\d)\.blocks\.", _stage(1, "blocks.")),
            (r"^stages\.(\d)\.norm\.", _stage(1, "norm.")),
        ],
        head=("head.",),
    ),
}
_COMPILED = {
    name: (re.compile(rf"^(.*?){fmt['stem']}$"), RenameRules(fmt["rules"]), fmt["head"])
    for name, fmt in _FORMATS.items()
}


def detect_pvt_v2_format(keys) -> tuple[str, str]:
    """Return ``(format name, key prefix)`` of a PVTv2/MiT state dict, or raise a ValueError."""
    for name, (stem, _, _) in _COMPILED.items():
        prefixes = {m[1] for k in keys if (m := stem.match(k))}
        if name == "timm":  # "patch_embed.proj.weight" also ends our and HF names; timm has stages.N at the root
            prefixes = {p for p in prefixes if any(k.startswith(f"{p}stages.0.blocks.") for k in keys)}
        if len(prefixes) > 1:
            raise ValueError(f"the weights hold several PVTv2/MiT encoders (key prefixes {sorted(prefixes)})")
        if prefixes:
            return name, prefixes.pop()
    sample = ", ".join(list(keys)[:5])
    raise ValueError(
        "the weights are not a PVTv2/MiT state dict in any known format (original, timm, Hugging Face PvtV2/"
        f"Segformer/GLPN, ours): no patch-embedding key found; first keys: {sample}"
    )


def convert_pvt_v2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ConvertedWeights:
    """Rename a PVTv2/MiT state dict into our keys; Hugging Face's split key/value are fused into ``kv``."""
    fmt, prefix = detect_pvt_v2_format(list(state_dict))
    _, rules, head = _COMPILED[fmt]
    inner, dropped = find_prefix(state_dict, prefix)
    out, origin = {}, {}
    for key, value in inner.items():
        if key.startswith(head):
            dropped.append(prefix + key)
            continue
        new = rules(key)
        out[new] = value
        origin[new] = prefix + key
    _fuse_kv(out, origin)
    return ConvertedWeights(out, origin, sorted(dropped), fmt, prefix)


def _fuse_kv(sd: dict, origin: dict) -> None:
    for k_key in [k for k in sd if ".attn.k." in k]:
        v_key = k_key.replace(".attn.k.", ".attn.v.")
        if v_key not in sd:
            continue  # left as is: the strict load reports it
        kv_key = k_key.replace(".attn.k.", ".attn.kv.")
        sd[kv_key] = torch.cat([sd.pop(k_key), sd.pop(v_key)], dim=0)
        origin[kv_key] = f"{origin.pop(k_key)} + {origin.pop(v_key)}"


# Reading the architecture from other formats: weight shapes, Hugging Face configs (PvtV2, Segformer / GLPN).
def infer_arch(sd: dict) -> dict | None:
    """The architecture a state dict in our keys was made for, or None if it is incomplete."""
    try:
        arch = dict(hidden_sizes=[], depths=[], mlp_ratios=[])
        for i in range(1, 5):
            fc1 = sd[f"stage{i}.blocks.0.mlp.fc1.weight"]
            arch["hidden_sizes"].append(fc1.shape[1])
            arch["mlp_ratios"].append(fc1.shape[0] // fc1.shape[1])
            arch["depths"].append(len({k.split(".")[2] for k in sd if k.startswith(f"stage{i}.blocks.")}))
        arch = {k: tuple(v) for k, v in arch.items()}
        arch["linear_attention"] = "stage4.blocks.0.attn.sr.weight" in sd
        return arch
    except KeyError:
        return None


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


def mit_from_hf_config(cfg: dict, source) -> tuple[str, dict]:
    """``(variant, overrides)`` for the encoder a Hugging Face Segformer / GLPN config describes. Hugging Face
    runs every LayerNorm of these models with eps 1e-5 whatever the config says, so the overrides set that too
    (outputs equal Hugging Face's)."""
    if cfg.get("num_encoder_blocks", 4) != 4:
        raise ValueError(f"{source}: num_encoder_blocks={cfg['num_encoder_blocks']} is not supported: our encoders have 4 stages")
    name, args = mit_variant({k: cfg.get(k, HF_MIT_DEFAULTS[k]) for k in HF_MIT_FIELDS})
    args.update(layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5)
    return name, args


def arch_from_state_dict(state_dict: dict) -> dict:
    """The ``PVTv2Config`` fields a PVTv2/MiT state dict (any known format) was made with, read from its weight
    shapes; the attention heads and strides are not stored in weights (the registered variants' are assumed)."""
    from .pvt_v2 import PVTv2Config

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
    """``(variant, overrides)`` for the MiT encoder in a state dict of any known format (e.g. an original
    mmseg or GLPDepth release, which store no config)."""
    arch = arch_from_state_dict(state_dict)
    arch.pop("linear_attention")
    return mit_variant(arch)


def variant_for(arch: dict) -> tuple[str, dict]:
    """``(registered variant, overrides)`` that build ``arch`` (``PVTv2Config`` fields): the first PVTv2 or MiT
    variant with its hidden sizes, depths, MLP ratios and attention kind; failing that, its sizes and depths;
    then its sizes, MLP ratios and attention kind; else pvt_v2_b0. The overrides are where ``arch`` differs."""
    from .pvt_v2 import MIT_VARIANTS, PVT_V2_VARIANTS, PVTv2Config

    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    variants = {n: dataclasses.asdict(PVTv2Config(**a)) for n, a in {**PVT_V2_VARIANTS, **MIT_VARIANTS}.items()}
    tries = (("hidden_sizes", "depths", "mlp_ratios", "linear_attention"), ("hidden_sizes", "depths"),
             ("hidden_sizes", "mlp_ratios", "linear_attention"))
    fits = [n for keys in tries for n, a in variants.items() if all(a[k] == arch.get(k, a[k]) for k in keys)]
    name = (fits or ["pvt_v2_b0"])[0]
    return name, {k: v for k, v in arch.items() if variants[name][k] != v}


# Hugging Face PvtV2Config's fields that describe the network (the PVTv2Config knobs of the same name).
HF_PVT_V2_FIELDS = HF_MIT_FIELDS + ("layer_norm_eps", "qkv_bias", "linear_attention")
HF_PVT_V2_DEFAULTS = dict(
    HF_MIT_DEFAULTS, mlp_ratios=[8, 8, 4, 4], drop_path_rate=0.0, layer_norm_eps=1e-6, qkv_bias=True,
    linear_attention=False,
)


def pvt_v2_from_hf_config(cfg: dict, source) -> tuple[str, dict]:
    """``(variant, overrides)`` for the network a Hugging Face ``PvtV2Config`` (dict) describes (``variant_for``).
    Hugging Face's PvtV2 uses ``layer_norm_eps`` in every LayerNorm."""
    if cfg.get("num_encoder_blocks", 4) != 4:
        raise ValueError(f"{source}: num_encoder_blocks={cfg['num_encoder_blocks']} is not supported: PVTv2 has 4 stages")
    name, overrides = variant_for({k: cfg.get(k, HF_PVT_V2_DEFAULTS[k]) for k in HF_PVT_V2_FIELDS})
    eps = cfg.get("layer_norm_eps", HF_PVT_V2_DEFAULTS["layer_norm_eps"])
    return name, {**overrides, "layer_norm_eps": eps, "embed_layer_norm_eps": eps}


def mit_variant(arch: dict) -> tuple[str, dict]:
    """The registered MiT variant with ``arch``'s hidden sizes and depths (else mit_b0), and the
    ``PVTv2Config`` overrides that turn it into ``arch`` (for configs read from other libraries)."""
    from .pvt_v2 import MIT_VARIANTS, PVTv2Config

    arch = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in arch.items()}
    fits = [
        n for n, a in MIT_VARIANTS.items()
        if a["hidden_sizes"] == arch.get("hidden_sizes") and a["depths"] == arch.get("depths")
    ]
    name = fits[0] if fits else "mit_b0"
    variant = PVTv2Config(**MIT_VARIANTS[name])
    return name, {k: v for k, v in arch.items() if getattr(variant, k) != v}
