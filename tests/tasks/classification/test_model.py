"""ImageClassifier: the head on every registered PVTv2/MiT variant, our checkpoint and the original release format
through ``from_pretrained``, prediction on a raw image, and loud errors. Reference parity is in
test_model_parity.py."""
import re

import numpy as np
import pytest
import torch

from backbones.pvt_v2 import MIT_VARIANTS, PVT_V2_VARIANTS
from tasks.classification import ImageClassifier, imagenet_classes
from tests.utils import assert_same_logits, perturb


@pytest.mark.parametrize("backbone", sorted({**PVT_V2_VARIANTS, **MIT_VARIANTS}))
def test_every_variant_pools_its_last_stage(backbone):
    small = dict(depths=(1, 1, 1, 1))  # each variant's widths and attention, cheap depth
    model = ImageClassifier(backbone, num_classes=7, backbone_args=small).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits = model(x)
        last = model.backbone(x)["stage4"]
    assert logits.shape == (2, 7) and model.head.in_features == model.backbone.feature_channels["stage4"]
    torch.testing.assert_close(logits, model.head(last.flatten(2).mean(-1)))


def test_our_checkpoint_round_trip(tmp_path):
    model = perturb(ImageClassifier("pvt_v2_b0", num_classes=3, class_names=["a", "b", "c"]))
    torch.save({"model": model.state_dict(), "meta": {"task": "classification", "model": model.config}}, tmp_path / "c.pth")
    loaded = ImageClassifier.from_pretrained(tmp_path / "c.pth")
    assert loaded.config == model.config and loaded.class_names == ("a", "b", "c") and not loaded.training
    assert_same_logits(loaded, model, torch.randn(1, 3, 64, 80), atol=0.0)
    torch.save({"model": model.state_dict(), "meta": {"task": "segmentation", "model": model.config}}, tmp_path / "s.pth")
    with pytest.raises(ValueError, match="task 'segmentation', not 'classification'"):
        ImageClassifier.from_pretrained(tmp_path / "s.pth")


def _to_original(state: dict) -> dict:
    """Our keys -> the whai362/PVT release's (patch_embed{n}, block{n}.{j}, norm{n}, dwconv.dwconv, split kv)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^backbone\.stage(\d)\.patch_embed\.", r"patch_embed\1.", k)
        k = re.sub(r"^backbone\.stage(\d)\.blocks\.", r"block\1.", k)
        k = re.sub(r"^backbone\.stage(\d)\.norm\.", r"norm\1.", k)
        out[k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")] = v
    return out


@pytest.mark.parametrize("backbone", ["pvt_v2_b0", "pvt_v2_b2_li", "mit_b0"])
def test_original_release_architecture_read_from_the_weights(tmp_path, backbone):
    model = perturb(ImageClassifier(backbone, num_classes=1000, backbone_args={"depths": (1, 2, 1, 1)}))
    torch.save(_to_original(model.state_dict()), tmp_path / "release.pth")
    loaded = ImageClassifier.from_pretrained(tmp_path / "release.pth")
    assert loaded.config["backbone"] == backbone and loaded.config["backbone_args"] == {"depths": (1, 2, 1, 1)}
    assert loaded.class_names == imagenet_classes()[1]  # a 1000-class head without names: ImageNet's
    assert_same_logits(loaded, model, torch.randn(1, 3, 64, 64), atol=0.0)


def test_predict_is_the_preprocessed_forward():
    model = perturb(ImageClassifier("pvt_v2_b0", num_classes=4))
    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    probs = model.predict(image)
    assert probs.shape == (4,) and probs.dtype == np.float32 and probs.sum() == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        expected = torch.softmax(model(model.preprocessing(image)), -1)[0]
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-6)
    assert model.preprocessing.resize == "short_side_crop" and model.preprocessing.size == (256, 224)
    with pytest.raises(TypeError, match="uint8"):
        model.predict(image.astype(np.float32))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassifier("pvt_v2_b0", num_classes=0)
    with pytest.raises(ValueError, match="class_names"):
        ImageClassifier("pvt_v2_b0", num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match="out_features"):
        ImageClassifier("pvt_v2_b0", num_classes=3, backbone_args={"out_features": ["stage1"]})
    with pytest.raises(ValueError):
        ImageClassifier("no_such_backbone", num_classes=3)
