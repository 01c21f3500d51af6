"""Every Hugging Face Deformable-DETR whose backbone our registry has loads with parity: the Hugging Face
``ResNetConfig`` ResNet-50 and ``PvtV2Config`` through ``backbone_config`` (any ``out_features``), with box
refinement and two-stage; an unsupported backbone is one line naming it. (The timm ResNet-50 of the published
checkpoints, single-scale and DC5: test_model_parity.py.)

Small transformers (2 + 2 layers, 30 queries) and inputs of about 100x100 pixels keep each case fast."""
import pytest
import torch

from tasks.detection.model import DeformableDETR
from tests.utils import DETR_VARIANTS, PARITY_ATOL, perturb

transformers = pytest.importorskip("transformers")

SMALL = dict(encoder_layers=2, decoder_layers=2, num_queries=30, two_stage_num_proposals=30, num_labels=7,
             use_timm_backbone=False, use_pretrained_backbone=False)
PVT = dict(hidden_sizes=[16, 32, 40, 64], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4], mlp_ratios=[4, 4, 4, 4])


def _perturb_frozen_bn(model):
    """Frozen BN keeps its statistics and affine as buffers, which ``perturb`` leaves alone."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("normalization.weight"):
                b.uniform_(0.2, 0.6)
            elif name.endswith(("normalization.bias", "normalization.running_mean")):
                b.normal_(0, 0.1)
            elif name.endswith("normalization.running_var"):
                b.uniform_(0.5, 1.5)
    return model


def _check(tmp_path, backbone_config, **config):
    cfg = transformers.DeformableDetrConfig(**SMALL, backbone_config=backbone_config, **config)
    ref = _perturb_frozen_bn(perturb(transformers.DeformableDetrForObjectDetection(cfg)))
    ref.save_pretrained(tmp_path)
    ours = DeformableDETR.from_pretrained(tmp_path)
    for x in (torch.randn(1, 3, 96, 128), torch.randn(2, 3, 100, 84)):
        with torch.no_grad():
            a, b = ours(x), ref(pixel_values=x)
        err = max((a["pred_logits"] - b.logits).abs().max().item(), (a["pred_boxes"] - b.pred_boxes).abs().max().item())
        assert err <= PARITY_ATOL, f"{tuple(x.shape)}: max abs diff {err:.3g}"
    return ours


@pytest.mark.parametrize("variant", ["base", "single_scale", "box_refine", "two_stage"])  # DC5 is timm-only in HF
def test_hf_resnet_backbone(tmp_path, variant):
    stages = ["stage4"] if variant == "single_scale" else ["stage2", "stage3", "stage4"]
    ours = _check(tmp_path, transformers.ResNetConfig(out_features=stages), **DETR_VARIANTS[variant])
    assert ours.config["backbone"] == "resnet50" and list(ours.backbone.out_features) == stages


@pytest.mark.parametrize(
    "out_features, levels, variant",
    [
        (["stage2", "stage3", "stage4"], 4, "base"),
        (["stage1", "stage2", "stage3", "stage4"], 4, "box_refine"),  # four backbone maps, no extra level
        (["stage3", "stage4"], 3, "two_stage"),
        (["stage4"], 1, "base"),  # single-scale
    ],
)
def test_hf_pvt_v2_backbone(tmp_path, out_features, levels, variant):
    pvt = transformers.PvtV2Config(**PVT, out_features=out_features)
    ours = _check(tmp_path, pvt, num_feature_levels=levels, **DETR_VARIANTS[variant])
    assert ours.config["backbone"] == "pvt_v2_b0" and list(ours.backbone.out_features) == out_features


def test_hf_pvt_v2_b2_li_is_found(tmp_path):
    pvt = transformers.PvtV2Config(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], linear_attention=True,
                                   out_features=["stage2", "stage3", "stage4"])
    cfg = transformers.DeformableDetrConfig(**SMALL, backbone_config=pvt)
    (tmp_path / "config.json").write_text(cfg.to_json_string())
    from tasks.common.pretrained import read_config
    from tasks.detection.weights import WEIGHTS

    assert read_config(tmp_path / "config.json", WEIGHTS)["backbone"] == "pvt_v2_b2_li"


def test_unsupported_backbone_is_one_line(tmp_path):
    swin = transformers.SwinConfig(out_features=["stage2", "stage3", "stage4"])
    cfg = transformers.DeformableDetrConfig(**SMALL, backbone_config=swin)
    (tmp_path / "config.json").write_text(cfg.to_json_string())
    with pytest.raises(ValueError, match=r"the backbone 'swin' is not one our registry has") as e:
        DeformableDETR.from_pretrained(tmp_path)
    assert "\n" not in str(e.value)
    resnet18 = transformers.ResNetConfig(depths=[2, 2, 2, 2], layer_type="basic", out_features=["stage4"])
    (tmp_path / "config.json").write_text(transformers.DeformableDetrConfig(**SMALL, backbone_config=resnet18).to_json_string())
    with pytest.raises(ValueError, match="not a ResNet-50"):
        DeformableDETR.from_pretrained(tmp_path)


def test_two_stage_with_another_width(tmp_path):
    """Two-stage proposals embed each box coordinate in hidden_dim / 2 sine features (Hugging Face's rule)."""
    pvt = transformers.PvtV2Config(**PVT, out_features=["stage2", "stage3", "stage4"])
    narrow = dict(d_model=64, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                  decoder_ffn_dim=64)
    ours = _check(tmp_path, pvt, **narrow, **DETR_VARIANTS["two_stage"])
    assert ours.config["hidden_dim"] == 64 and ours.config["two_stage"]
