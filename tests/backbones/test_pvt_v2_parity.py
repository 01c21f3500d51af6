"""Reference parity: Hugging Face and timm models with random weights, saved in their own formats,
loaded into ours by ``build_backbone(..., weights=...)``, give the same stage outputs (fp32, atol 1e-4)."""
import re

import pytest
import torch

from backbones import build_backbone, save_backbone_weights
from tests.utils import assert_features_close, perturb

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

ALL = (0, 1, 2, 3)
SHAPES = [(2, 3, 200, 296), (1, 3, 97, 131), (1, 3, 64, 64)]
ARCH = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2]),
    "b2_li": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], linear_attention=True),
}
# Hugging Face PvtV2 uses eps 1e-6 in every LayerNorm; its Segformer and GLPN use 1e-5 in every one.
HF_PVT_EPS = dict(layer_norm_eps=1e-6, embed_layer_norm_eps=1e-6)
HF_SEGFORMER_EPS = dict(layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5)


def _hf_hidden_states(model, x):
    with torch.no_grad():
        return model(pixel_values=x, output_hidden_states=True).hidden_states


def _ours(name, weights, x, **overrides):
    model = build_backbone(name, out_indices=ALL, weights=weights, **overrides).eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("variant", ["b0", "b1", "b2_li"])
def test_hf_pvt_v2_model_folder(tmp_path, variant):
    cfg = transformers.PvtV2Config(**ARCH[variant])
    ref = perturb(transformers.PvtV2Model(cfg))
    ref.save_pretrained(tmp_path)
    for shape in SHAPES:
        x = torch.randn(shape)
        assert_features_close(_ours(f"pvt_v2_{variant}", tmp_path, x, **HF_PVT_EPS), _hf_hidden_states(ref, x))


def test_hf_pvt_v2_classification_and_backbone(tmp_path):
    cfg = transformers.PvtV2Config(**ARCH["b0"])
    ref = perturb(transformers.PvtV2ForImageClassification(cfg))
    ref.save_pretrained(tmp_path / "cls")
    x = torch.randn(1, 3, 97, 131)
    expected = _hf_hidden_states(ref.pvt_v2, x)
    assert_features_close(_ours("pvt_v2_b0", tmp_path / "cls", x, **HF_PVT_EPS), expected)

    backbone = transformers.PvtV2Backbone(transformers.PvtV2Config(**ARCH["b0"], out_indices=[0, 1, 2, 3]))
    backbone.load_state_dict(ref.pvt_v2.state_dict())
    torch.save(backbone.eval().state_dict(), tmp_path / "backbone.bin")
    with torch.no_grad():
        maps = backbone(x).feature_maps
    assert_features_close(_ours("pvt_v2_b0", tmp_path / "backbone.bin", x, **HF_PVT_EPS), maps)


def test_timm_and_original_formats(tmp_path):
    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False))
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    # The whai362/PVT release format: patch_embed{n}, block{n}.{j}, norm{n}, mlp.dwconv.dwconv.
    original = {}
    for k, v in ref.state_dict().items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        original[k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = v
    torch.save(original, tmp_path / "pvt_v2_b0.pth")

    for shape in SHAPES:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = ref.forward_intermediates(x, intermediates_only=True)
        # Our default eps scheme is the original one, which timm shares.
        assert_features_close(_ours("pvt_v2_b0", tmp_path / "timm.pth", x), expected)
        assert_features_close(_ours("pvt_v2_b0", tmp_path / "pvt_v2_b0.pth", x), expected)


def test_timm_b2_li(tmp_path):
    ref = perturb(timm.create_model("pvt_v2_b2_li", pretrained=False))
    torch.save({"model": ref.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")  # a nested training checkpoint
    x = torch.randn(1, 3, 200, 296)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
    assert_features_close(_ours("pvt_v2_b2_li", tmp_path / "ckpt.pth", x), expected)


def test_hf_segformer_mit_b0(tmp_path):
    cfg = transformers.SegformerConfig()  # the mit-b0 sizes
    ref = perturb(transformers.SegformerModel(cfg))
    ref.save_pretrained(tmp_path / "folder")  # transformers writes the 4.x key names
    torch.save(ref.state_dict(), tmp_path / "v5_in_memory.bin")  # transformers 5.x module names
    for shape in SHAPES:
        x = torch.randn(shape)
        expected = _hf_hidden_states(ref, x)
        assert_features_close(_ours("mit_b0", tmp_path / "folder", x, **HF_SEGFORMER_EPS), expected)
        assert_features_close(_ours("mit_b0", tmp_path / "v5_in_memory.bin", x, **HF_SEGFORMER_EPS), expected)


def test_hf_segmentation_and_depth_encoders(tmp_path):
    x = torch.randn(1, 3, 97, 131)
    seg = perturb(transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=5)))
    seg.save_pretrained(tmp_path / "seg")
    expected = _hf_hidden_states(seg.segformer, x)
    assert_features_close(_ours("mit_b0", tmp_path / "seg", x, **HF_SEGFORMER_EPS), expected)

    glpn = perturb(transformers.GLPNForDepthEstimation(transformers.GLPNConfig()))
    glpn.save_pretrained(tmp_path / "glpn")
    expected = _hf_hidden_states(glpn.glpn, x)
    assert_features_close(_ours("mit_b0", tmp_path / "glpn", x, **HF_SEGFORMER_EPS), expected)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_our_format_round_trip(tmp_path, suffix):
    model = perturb(build_backbone("pvt_v2_b0", out_indices=ALL))
    path = tmp_path / f"ours{suffix}"
    save_backbone_weights(model, path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = list(model(x).values())
    assert_features_close(_ours("pvt_v2_b0", path, x), expected, atol=0.0)
