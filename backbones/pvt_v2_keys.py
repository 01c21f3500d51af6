"""Convert PVTv2 / MiT state dicts from every published key format into ours (a pure function).

Formats: ours (``stage1.patch_embed.proj.weight``), original whai362/PVT and NVlabs/SegFormer MiT
(``patch_embed1``, ``block1.0``, ``norm1``), timm (``patch_embed``, ``stages.0``), Hugging Face
``PvtV2*`` (``encoder.layers.0``), Hugging Face ``Segformer*`` / ``GLPN*`` as saved by transformers 4.x
and 5.x (``encoder.patch_embeddings.0``, ``encoder.block.0.0``) and as held in memory by transformers 5.x
(``stages.0.patch_embeddings``). Each may sit under a prefix (``backbone.``, ``segformer.``, ``pvt_v2.`` ...);
keys outside that prefix, and a classifier ``head.*``, are returned as dropped.

Which architecture a state dict or a Hugging Face config describes is ``pvt_v2_arch``'s concern.
"""
from __future__ import annotations

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
