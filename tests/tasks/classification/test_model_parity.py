"""Reference parity: Hugging Face ``PvtV2ForImageClassification`` / ``SegformerForImageClassification`` and timm
``pvt_v2_*`` classifiers with random weights, saved in their own formats (and the original whai362 format),
loaded by ``ImageClassifier.from_pretrained``, give the same logits (fp32, atol 1e-4) at 224² and a non-square
size, and keep their class names."""
import json
import re

import pytest
import torch

from tasks.classification import ImageClassifier, imagenet_classes
from tests.utils import PARITY_ATOL, perturb

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

SHAPES = [(2, 3, 224, 224), (1, 3, 200, 296)]
ARCH = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b2_li": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], linear_attention=True),
}


def _assert_logits_close(ours, ref, x, atol=PARITY_ATOL):
    with torch.no_grad():
        a = ours(x)
        b = ref(x)
        b = b.logits if hasattr(b, "logits") else b
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs logit diff {err:.3g} > {atol}"


@pytest.mark.parametrize("variant,num_labels", [("b0", 1000), ("b2_li", 1000), ("b0", 7)])
def test_hf_pvt_v2_for_image_classification(tmp_path, variant, num_labels):
    names = {i: f"kind {i}" for i in range(num_labels)} if num_labels != 1000 else None
    cfg = transformers.PvtV2Config(**ARCH[variant], num_labels=num_labels, **({"id2label": names} if names else {}))
    ref = perturb(transformers.PvtV2ForImageClassification(cfg))
    ref.save_pretrained(tmp_path)
    model = ImageClassifier.from_pretrained(tmp_path)
    assert model.config["backbone"] == f"pvt_v2_{variant}" and model.num_classes == num_labels
    expected_names = tuple(names.values()) if names else imagenet_classes()[1]  # LABEL_i placeholders -> ImageNet
    assert model.class_names == expected_names
    for shape in SHAPES:
        _assert_logits_close(model, ref, torch.randn(shape))


def test_hf_segformer_for_image_classification_mit_b0(tmp_path):
    cfg = transformers.SegformerConfig(num_labels=1000)  # the mit-b0 sizes, as nvidia/mit-b0
    ref = perturb(transformers.SegformerForImageClassification(cfg))
    ref.save_pretrained(tmp_path / "folder")
    (tmp_path / "v5").mkdir()  # a bare state dict with transformers 5.x module names, config.json beside it
    torch.save(ref.state_dict(), tmp_path / "v5" / "weights.bin")
    (tmp_path / "v5" / "config.json").write_text((tmp_path / "folder" / "config.json").read_text())
    for source in (tmp_path / "folder", tmp_path / "v5" / "weights.bin"):
        model = ImageClassifier.from_pretrained(source)
        assert model.config["backbone"] == "mit_b0" and model.class_names == imagenet_classes()[1]
        for shape in SHAPES:
            _assert_logits_close(model, ref, torch.randn(shape))


def _timm_to_original(state_dict: dict) -> dict:
    """timm keys -> the whai362/PVT release's (patch_embed{n}, block{n}.{j}, norm{n}, mlp.dwconv.dwconv, head)."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        out[k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = v
    return out


@pytest.mark.parametrize("variant", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_timm_hub_folder_and_original_release(tmp_path, variant):
    ref = perturb(timm.create_model(variant, pretrained=False, num_classes=1000))
    timm.models.save_for_hf(ref, tmp_path / "hub", safe_serialization=True)
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["architecture"] == variant
    torch.save(_timm_to_original(ref.state_dict()), tmp_path / f"{variant}.pth")
    torch.save(ref.state_dict(), tmp_path / "timm_bare.pth")
    for source in (tmp_path / "hub", tmp_path / f"{variant}.pth", tmp_path / "timm_bare.pth"):
        model = ImageClassifier.from_pretrained(source)
        assert model.config["backbone"] == variant and model.class_names == imagenet_classes()[1], source
        assert model.config["backbone_args"] == {}  # timm's and the original's LayerNorm eps are our defaults
        for shape in SHAPES:
            _assert_logits_close(model, ref, torch.randn(shape))


def test_timm_hub_folder_keeps_label_names_and_crop(tmp_path):
    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False, num_classes=3))
    timm.models.save_for_hf(ref, tmp_path, model_config={"label_names": ["cat", "dog", "fox"]})
    model = ImageClassifier.from_pretrained(tmp_path)
    assert model.class_names == ("cat", "dog", "fox")
    crop_pct = ref.pretrained_cfg["crop_pct"]
    assert model.preprocessing.size == (int(224 / crop_pct), 224) and model.preprocessing.resize == "short_side_crop"
    _assert_logits_close(model, ref, torch.randn(1, 3, 224, 224))
