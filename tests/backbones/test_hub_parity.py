"""Reference parity by hub id: Hugging Face and timm models with random weights, saved by their own libraries
into a hub cache in a temporary folder (``HF_HUB_OFFLINE=1``), load by name and give the same stage outputs."""
import pytest
import torch

from backbones import build_backbone
from tests.hubcache import cache_folder, use_cache
from tests.utils import assert_features_close, perturb

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
pytest.importorskip("huggingface_hub")

ALL = (0, 1, 2, 3)
B0 = dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2])


def _ours(name, weights, x, **overrides):
    model = build_backbone(name, out_indices=ALL, weights=weights, **overrides).eval()
    with torch.no_grad():
        return model(x)


def test_pvt_v2_imagenet_keyword(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref = perturb(transformers.PvtV2ForImageClassification(transformers.PvtV2Config(**B0)))
    ref.save_pretrained(tmp_path / "src")
    cache_folder(cache, "OpenGVLab/pvt_v2_b0", tmp_path / "src")
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        expected = ref.pvt_v2(pixel_values=x, output_hidden_states=True).hidden_states
    eps = dict(layer_norm_eps=1e-6, embed_layer_norm_eps=1e-6)  # Hugging Face PvtV2's LayerNorm eps
    assert_features_close(_ours("pvt_v2_b0", "imagenet", x, **eps), expected)
    assert_features_close(_ours("pvt_v2_b0", "OpenGVLab/pvt_v2_b0", x, **eps), expected)


def test_mit_imagenet_keyword(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    cfg = transformers.SegformerConfig(
        hidden_sizes=B0["hidden_sizes"], depths=B0["depths"], num_attention_heads=[1, 2, 5, 8]
    )
    ref = perturb(transformers.SegformerForImageClassification(cfg))
    ref.save_pretrained(tmp_path / "src")
    cache_folder(cache, "nvidia/mit-b0", tmp_path / "src")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.segformer(pixel_values=x, output_hidden_states=True).hidden_states
    eps = dict(layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5)  # Hugging Face Segformer's LayerNorm eps
    assert_features_close(_ours("mit_b0", "imagenet", x, **eps), expected)


def test_timm_hub_id(tmp_path, monkeypatch):
    """A timm hub folder (config.json with "architecture", model.safetensors) loads by its timm id."""
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False))
    timm.models.save_for_hf(ref, tmp_path / "src")
    assert "architecture" in (tmp_path / "src" / "config.json").read_text()
    cache_folder(cache, "timm/pvt_v2_b0.in1k", tmp_path / "src")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
    assert_features_close(_ours("pvt_v2_b0", "timm/pvt_v2_b0.in1k", x), expected)
    assert_features_close(_ours("pvt_v2_b0", "hf-hub:timm/pvt_v2_b0.in1k", x), expected)


def test_timm_resnet50_imagenet_keyword(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref = perturb(timm.create_model("resnet50", pretrained=False))
    timm.models.save_for_hf(ref, tmp_path / "src")
    cache_folder(cache, "timm/resnet50.tv_in1k", tmp_path / "src")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=4, intermediates_only=True)  # layer1..layer4
    assert_features_close(_ours("resnet50", "imagenet", x), expected)
