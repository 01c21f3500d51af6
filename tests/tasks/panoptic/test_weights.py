"""Loading the authors' release format (zhiqi-li/Panoptic-SegFormer mmcv checkpoints): a state dict written key by
key from the authors' module layout (mmdet 2.x / mmcv 1.3 names, their older mask-head names, ``module.``) with
random tensors for a small configuration loads strictly, every tensor the network uses carried over."""
import numpy as np
import pytest
import torch

from backbones import build_backbone
from tasks.panoptic import PanopticSegFormer
from tasks.panoptic.weights import dropped_keys

C, HEADS, POINTS, LEVELS, FFN = 64, 8, 4, 4, 96
T, S, Q, ENC, DEC, THING_LAYERS, STUFF_LAYERS = 3, 2, 12, 1, 2, 2, 3


def _to_original(ours: dict) -> dict:
    """Our PVTv2 keys -> the original whai362 names under ``backbone.``, as the authors' backbone holds them."""
    out = {}
    for key, value in ours.items():
        stage, rest = key.split(".", 1)
        i = stage[-1]
        if rest.startswith("patch_embed."):
            name = f"patch_embed{i}.{rest[len('patch_embed.'):]}"
        elif rest.startswith("blocks."):
            name = f"block{i}.{rest[len('blocks.'):]}".replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        else:
            name = f"norm{i}.{rest[len('norm.'):]}"
        out[f"backbone.{name}"] = value
    return out


def _backbone_original(variant: str = "pvt_v2_b0") -> dict:
    """``variant`` with one block per stage, random tensors, in the authors' names."""
    ours = build_backbone(variant, depths=(1, 1, 1, 1)).state_dict()
    return {k: torch.randn_like(v) for k, v in _to_original(ours).items()}


def _linear(out: dict, prefix: str, o: int, i: int) -> None:
    out[f"{prefix}.weight"], out[f"{prefix}.bias"] = torch.randn(o, i), torch.randn(o)


def _mask_head(out: dict, prefix: str, layers: int, self_attn: bool) -> None:
    def fusion(p):
        for level in ("linear_l1", "linear_l2", "linear_l3"):
            _linear(out, f"{p}.{level}.0", HEADS, HEADS)
        _linear(out, f"{p}.linear.0", 1, 3 * HEADS)

    for n in range(layers):
        b = f"{prefix}.blocks.{n}"
        for norm in ("head_norm1", "head_norm2") + (("norm3",) if self_attn else ()):
            out[f"{b}.{norm}.weight"], out[f"{b}.{norm}.bias"] = torch.randn(C), torch.randn(C)
        for proj in ("q", "k", "v", "proj"):
            _linear(out, f"{b}.attn.{proj}", C, C)
        fusion(f"{b}.attn")
        _linear(out, f"{b}.mlp.fc1", 4 * C, C)
        _linear(out, f"{b}.mlp.fc2", C, 4 * C)
        if self_attn:
            _linear(out, f"{b}.self_attention.qkv", 3 * C, C)
            _linear(out, f"{b}.self_attention.proj", C, C)
    _linear(out, f"{prefix}.attnen.q", C, C)
    _linear(out, f"{prefix}.attnen.k", C, C)
    fusion(f"{prefix}.attnen")


def _deform(out: dict, prefix: str) -> None:
    _linear(out, f"{prefix}.sampling_offsets", HEADS * LEVELS * POINTS * 2, C)
    _linear(out, f"{prefix}.attention_weights", HEADS * LEVELS * POINTS, C)
    _linear(out, f"{prefix}.value_proj", C, C)
    _linear(out, f"{prefix}.output_proj", C, C)


def authors_state_dict(old_names: bool, variant: str = "pvt_v2_b0") -> dict:
    """The key list of the authors' PanopticSegFormer (brief section 5) for the small configuration above."""
    out = _backbone_original(variant)
    in_channels = [out[f"backbone.norm{i}.weight"].shape[0] for i in (2, 3, 4)]  # stage2-4 widths
    for i, c in enumerate(in_channels):
        out[f"neck.convs.{i}.conv.weight"] = torch.randn(C, c, 1, 1)
        out[f"neck.convs.{i}.gn.weight"], out[f"neck.convs.{i}.gn.bias"] = torch.randn(C), torch.randn(C)
    out["neck.extra_convs.0.conv.weight"] = torch.randn(C, in_channels[-1], 3, 3)
    out["neck.extra_convs.0.gn.weight"], out["neck.extra_convs.0.gn.bias"] = torch.randn(C), torch.randn(C)
    t = "bbox_head.transformer"
    out[f"{t}.level_embeds"] = torch.randn(LEVELS, C)
    _linear(out, f"{t}.reference_points", 2, C)
    for n in range(ENC):
        _deform(out, f"{t}.encoder.layers.{n}.attentions.0")
        _linear(out, f"{t}.encoder.layers.{n}.ffns.0.layers.0.0", FFN, C)
        _linear(out, f"{t}.encoder.layers.{n}.ffns.0.layers.1", C, FFN)
        for k in range(2):
            out[f"{t}.encoder.layers.{n}.norms.{k}.weight"], out[f"{t}.encoder.layers.{n}.norms.{k}.bias"] = torch.randn(C), torch.randn(C)
    for n in range(DEC):
        a = f"{t}.decoder.layers.{n}.attentions.0.attn"
        out[f"{a}.in_proj_weight"], out[f"{a}.in_proj_bias"] = torch.randn(3 * C, C), torch.randn(3 * C)
        _linear(out, f"{a}.out_proj", C, C)
        _deform(out, f"{t}.decoder.layers.{n}.attentions.1")
        _linear(out, f"{t}.decoder.layers.{n}.ffns.0.layers.0.0", FFN, C)
        _linear(out, f"{t}.decoder.layers.{n}.ffns.0.layers.1", C, FFN)
        for k in range(3):
            out[f"{t}.decoder.layers.{n}.norms.{k}.weight"], out[f"{t}.decoder.layers.{n}.norms.{k}.bias"] = torch.randn(C), torch.randn(C)
    out["bbox_head.query_embedding.weight"] = torch.randn(Q, 2 * C)
    out["bbox_head.stuff_query.weight"] = torch.randn(S, 2 * C)
    for n in range(DEC):
        _linear(out, f"bbox_head.cls_branches.{n}", T, C)
        for k, (o, i) in zip((0, 2, 4), ((C, C), (C, C), (4, C))):
            _linear(out, f"bbox_head.reg_branches.{n}.{k}", o, i)
    for n in range(THING_LAYERS):
        _linear(out, f"bbox_head.{'cls_branches2' if old_names else 'cls_thing_branches'}.{n}", T, C)
        for k, (o, i) in zip((0, 2, 4), ((C, C), (C, C), (4, C))):
            _linear(out, f"bbox_head.reg_branches2.{n}.{k}", o, i)
    for n in range(STUFF_LAYERS):
        _linear(out, f"bbox_head.cls_stuff_branches.{n}", 1, C)
    _mask_head(out, f"bbox_head.{'mask_head' if old_names else 'things_mask_head'}", THING_LAYERS, self_attn=False)
    _mask_head(out, f"bbox_head.{'mask_head2' if old_names else 'stuff_mask_head'}", STUFF_LAYERS, self_attn=True)
    return out


def ours_for(key: str) -> str | None:
    """Where the test expects an authors' key to land (None: not used by the network)."""
    import re

    rules = [
        (r"^module\.", ""),
        (r"^backbone\.patch_embed(\d)\.", r"backbone.stage\1.patch_embed."),
        (r"^backbone\.block(\d)\.", r"backbone.stage\1.blocks."),
        (r"^backbone\.norm(\d)\.", r"backbone.stage\1.norm."),
        (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
        (r"^neck\.convs\.(\d)\.conv\.", r"head.detr.input_proj.\1.0."),
        (r"^neck\.convs\.(\d)\.gn\.", r"head.detr.input_proj.\1.1."),
        (r"^neck\.extra_convs\.0\.conv\.", "head.detr.input_proj.3.0."),
        (r"^neck\.extra_convs\.0\.gn\.", "head.detr.input_proj.3.1."),
        (r"^bbox_head\.transformer\.level_embeds", "head.detr.level_embed"),
        (r"^bbox_head\.transformer\.", "head.detr."),
        (r"\.attentions\.0\.attn\.", ".self_attn."),
        (r"(encoder\.layers\.\d+)\.attentions\.0\.", r"\1.self_attn."),
        (r"\.attentions\.1\.", ".cross_attn."),
        (r"(encoder\.layers\.\d+)\.norms\.1\.", r"\1.ffn.norm."),
        (r"(decoder\.layers\.\d+)\.norms\.1\.", r"\1.cross_attn_norm."),
        (r"(decoder\.layers\.\d+)\.norms\.2\.", r"\1.ffn.norm."),
        (r"\.norms\.0\.", ".self_attn_norm."),
        (r"\.ffns\.0\.layers\.0\.0\.", ".ffn.linear1."),
        (r"\.ffns\.0\.layers\.1\.", ".ffn.linear2."),
        (r"^bbox_head\.query_embedding\.", "head.detr.query_embed."),
        (r"^bbox_head\.cls_branches\.", "head.detr.class_embed."),
        (r"^bbox_head\.reg_branches\.(\d+)\.0\.", r"head.detr.bbox_embed.\1.layers.0."),
        (r"^bbox_head\.reg_branches\.(\d+)\.2\.", r"head.detr.bbox_embed.\1.layers.1."),
        (r"^bbox_head\.reg_branches\.(\d+)\.4\.", r"head.detr.bbox_embed.\1.layers.2."),
        (r"^bbox_head\.mask_head2\.", "bbox_head.stuff_mask_head."),
        (r"^bbox_head\.mask_head\.", "bbox_head.things_mask_head."),
        (r"\.self_attention\.qkv\.weight$", ".self_attention.in_proj_weight"),
        (r"\.self_attention\.qkv\.bias$", ".self_attention.in_proj_bias"),
        (r"\.self_attention\.proj\.", ".self_attention.out_proj."),
        (r"^bbox_head\.", "head."),
    ]
    if re.match(r"^(module\.)?bbox_head\.(cls_branches2|cls_thing_branches|reg_branches2)\.", key):
        return None
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@pytest.mark.parametrize("old_names, prefix", [(False, ""), (True, "module.")])
def test_authors_release_loads_strictly(tmp_path, old_names, prefix):
    torch.manual_seed(0)
    sd = {prefix + k: v for k, v in authors_state_dict(old_names).items()}
    path = tmp_path / "panformer.pth"
    torch.save({"meta": {"CLASSES": [f"c{i}" for i in range(T + S)], "epoch": 24}, "state_dict": sd}, path)
    model = PanopticSegFormer.from_pretrained(path)
    assert (model.num_things_classes, model.num_stuff_classes, model.head.detr.num_queries) == (T, S, Q)
    assert len(model.head.things_mask_head.blocks) == THING_LAYERS and len(model.head.stuff_mask_head.blocks) == STUFF_LAYERS
    assert model.config["backbone"] == "pvt_v2_b0" and tuple(model.config["backbone_args"]["depths"]) == (1, 1, 1, 1)
    assert model.class_names == tuple(f"c{i}" for i in range(T + S))
    ours = model.state_dict()
    used = {}
    for key, value in sd.items():
        target = ours_for(key)
        if target is None:
            continue
        assert target in ours, f"{key} -> {target} is not a model key"
        torch.testing.assert_close(ours[target], value, rtol=0, atol=0, msg=f"{key} was not carried over")
        used[target] = key
    assert set(used) == set(ours), f"model tensors not from the file: {sorted(set(ours) - set(used))[:5]}"
    assert len(dropped_keys(sd)) == 2 * THING_LAYERS + 3 * 2 * THING_LAYERS  # cls_thing (w, b), reg_branches2 3 x (w, b)
    model.preprocessing = type(model.preprocessing)(resize="short_side", size=(64, 96))
    result = model.predict((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8))
    assert result["panoptic"].shape == (40, 60)


def test_release_merging_thresholds_follow_the_authors_configs(tmp_path):
    """A release with the PVTv2-B5 backbone merges with quality thresholds 0.3 / 0.3 (the authors' B5 config);
    other backbones with the 0.25 defaults (their ResNet configs)."""
    torch.manual_seed(0)
    torch.save({"meta": {}, "state_dict": authors_state_dict(False, "pvt_v2_b5")}, tmp_path / "b5.pth")
    b5 = PanopticSegFormer.from_pretrained(tmp_path / "b5.pth")
    assert b5.config["backbone"] == "pvt_v2_b5"
    assert (b5.merge_options.quality_threshold_things, b5.merge_options.quality_threshold_stuff) == (0.3, 0.3)
    assert (b5.merge_options.overlap_threshold_things, b5.merge_options.overlap_threshold_stuff) == (0.4, 0.2)
    assert b5.config["merge"]["quality_threshold_things"] == 0.3  # kept in what predict and a re-save read
    torch.save({"meta": {}, "state_dict": authors_state_dict(False)}, tmp_path / "b0.pth")
    b0 = PanopticSegFormer.from_pretrained(tmp_path / "b0.pth")
    assert (b0.merge_options.quality_threshold_things, b0.merge_options.quality_threshold_stuff) == (0.25, 0.25)


def test_full_b5_release_layout_is_read_as_b5_with_its_thresholds():
    """The released B5 layout itself (depths 3/6/40/3; shapes only, on the meta device)."""
    from tasks.panoptic.weights import config_from_release

    one_block = build_backbone("pvt_v2_b5", depths=(1, 1, 1, 1)).state_dict()
    backbone = {}
    for key, value in one_block.items():  # every block of a stage has block 0's shapes
        stage = int(key[len("stage")])
        for n in range((3, 6, 40, 3)[stage - 1] if ".blocks.0." in key else 1):
            backbone[key.replace(".blocks.0.", f".blocks.{n}.")] = torch.empty(value.shape, device="meta")
    sd = {k: v for k, v in authors_state_dict(False, "pvt_v2_b5").items() if not k.startswith("backbone.")}
    sd.update(_to_original(backbone))
    cfg = config_from_release(sd, None)
    assert cfg["backbone"] == "pvt_v2_b5" and "depths" not in cfg["backbone_args"]
    assert cfg["merge"] == {"quality_threshold_things": 0.3, "quality_threshold_stuff": 0.3}


def test_a_missing_tensor_is_named(tmp_path):
    sd = authors_state_dict(False)
    del sd["bbox_head.stuff_mask_head.attnen.q.weight"]
    torch.save({"meta": {}, "state_dict": sd}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="stuff_mask_head.attnen.q.weight"):
        PanopticSegFormer.from_pretrained(tmp_path / "broken.pth")


def test_our_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = PanopticSegFormer("pvt_v2_b0", T, S, num_queries=Q, hidden_dim=C, enc_layers=1, dec_layers=1,
                              dim_feedforward=FFN, thing_mask_layers=1, stuff_mask_layers=1,
                              backbone_args={"depths": (1, 1, 1, 1)}, category_ids=[3, 4, 5, 100, 200])
    torch.save({"model": model.state_dict(), "meta": {"task": "panoptic", "model": model.config}}, tmp_path / "best.pth")
    again = PanopticSegFormer.from_pretrained(tmp_path / "best.pth")
    assert again.category_ids == (3, 4, 5, 100, 200)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)


def test_authors_resnet50_release_loads(tmp_path):
    """The authors' ResNet-50 models hold mmdet's ResNet (torchvision names, BN with num_batches_tracked)."""
    import torchvision

    sd = {k: v for k, v in authors_state_dict(False).items() if not k.startswith("backbone.")}
    for key, value in torchvision.models.resnet50().state_dict().items():
        if not key.startswith("fc."):
            sd[f"backbone.{key}"] = value
    for i, c in enumerate((512, 1024, 2048)):
        sd[f"neck.convs.{i}.conv.weight"] = torch.randn(C, c, 1, 1)
    sd["neck.extra_convs.0.conv.weight"] = torch.randn(C, 2048, 3, 3)
    torch.save({"meta": {}, "state_dict": sd}, tmp_path / "r50.pth")
    model = PanopticSegFormer.from_pretrained(tmp_path / "r50.pth")
    assert model.config["backbone"] == "resnet50" and model.config["backbone_args"]["norm_layer"] == "frozen_bn"
    torch.testing.assert_close(model.backbone.stage3[0].conv1.weight, sd["backbone.layer3.0.conv1.weight"])
    torch.testing.assert_close(model.head.detr.input_proj[2][0].weight, sd["neck.convs.2.conv.weight"])


def test_coco_category_table_is_panopticapis():
    """The release's labels are panopticapi's categories in file order (things first); a COCO-sized release
    predicts their ids."""
    import json
    from pathlib import Path

    from tasks.panoptic.weights import COCO_PANOPTIC_IDS, COCO_PANOPTIC_NAMES, config_from_release

    path = Path(__file__).resolve().parents[2] / "data" / "panoptic_sample" / "panoptic_coco_categories.json"
    categories = json.loads(path.read_text())
    assert COCO_PANOPTIC_IDS == tuple(c["id"] for c in categories)
    assert COCO_PANOPTIC_NAMES == tuple(c["name"] for c in categories)
    assert [c["isthing"] for c in categories] == [1] * 80 + [0] * 53
    sd = {k: v for k, v in authors_state_dict(False).items()}
    sd["bbox_head.stuff_query.weight"] = torch.zeros(53, 2 * C)
    for n in range(DEC):
        sd[f"bbox_head.cls_branches.{n}.weight"] = torch.zeros(80, C)
    config = config_from_release(sd, {})
    assert config["category_ids"] == COCO_PANOPTIC_IDS and config["class_names"][-1] == "rug-merged"
