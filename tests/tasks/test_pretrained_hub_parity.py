"""Task models by hub id and by short name: tiny Hugging Face / timm models with random weights, saved by their
own library into a hub cache in a temporary folder (``HF_HUB_OFFLINE=1``) under the published ids, load through
``from_pretrained`` with the same outputs (fp32, 1e-4)."""
import pytest
import torch

from tasks.depth.model import GLPN
from tasks.detection.model import DeformableDETR
from tasks.segmentation.model import SegFormer
from tests.hubcache import cache_folder, use_cache
from tests.utils import PARITY_ATOL, assert_same_depth, assert_same_logits, perturb

transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")


def _cache(tmp_path, monkeypatch, ref, repo_id):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref.save_pretrained(tmp_path / "src")
    cache_folder(cache, repo_id, tmp_path / "src")


@pytest.mark.parametrize("name", ["nvidia/segformer-b0-finetuned-ade-512-512", "segformer-b0-ade"])
def test_segformer(tmp_path, monkeypatch, name):
    ref = perturb(transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=150)))
    _cache(tmp_path, monkeypatch, ref, "nvidia/segformer-b0-finetuned-ade-512-512")
    assert_same_logits(SegFormer.from_pretrained(name), ref, torch.randn(1, 3, 96, 128))


@pytest.mark.parametrize("name", ["vinvino02/glpn-nyu", "glpn-nyu"])
def test_glpn(tmp_path, monkeypatch, name):
    ref = perturb(transformers.GLPNForDepthEstimation(transformers.GLPNConfig()))
    _cache(tmp_path, monkeypatch, ref, "vinvino02/glpn-nyu")
    assert_same_depth(GLPN.from_pretrained(name), ref, torch.rand(1, 3, 96, 128))


@pytest.mark.parametrize("name", ["SenseTime/deformable-detr-with-box-refine", "deformable-detr-refine"])
def test_deformable_detr(tmp_path, monkeypatch, name):
    pytest.importorskip("timm")  # Hugging Face's Deformable DETR builds its ResNet-50 with timm
    config = transformers.DeformableDetrConfig(
        encoder_layers=2, decoder_layers=2, num_queries=10, num_labels=7, with_box_refine=True
    )
    ref = perturb(transformers.DeformableDetrForObjectDetection(config))
    _cache(tmp_path, monkeypatch, ref, "SenseTime/deformable-detr-with-box-refine")
    ours = DeformableDETR.from_pretrained(name)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = ours(x), ref(pixel_values=x)
    torch.testing.assert_close(a["pred_logits"], b.logits, atol=PARITY_ATOL, rtol=0)
    torch.testing.assert_close(a["pred_boxes"], b.pred_boxes, atol=PARITY_ATOL, rtol=0)


def test_uncached_id(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match=r"^nvidia/segformer-b1-finetuned-ade-512-512: not in the Hugging Face"):
        SegFormer.from_pretrained("nvidia/segformer-b1-finetuned-ade-512-512")


def test_short_name_of_another_task(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(ValueError, match=r"'glpn-nyu' \(vinvino02/glpn-nyu\) is a depth model, not a segmentation"):
        SegFormer.from_pretrained("glpn-nyu")


@pytest.mark.parametrize("name", ["OpenGVLab/pvt_v2_b0", "pvt_v2_b0"])
def test_image_classifier(tmp_path, monkeypatch, name):
    from tasks.classification.model import ImageClassifier

    config = transformers.PvtV2Config(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_labels=5)
    ref = perturb(transformers.PvtV2ForImageClassification(config))
    _cache(tmp_path, monkeypatch, ref, "OpenGVLab/pvt_v2_b0")
    assert_same_logits(ImageClassifier.from_pretrained(name), ref, torch.randn(1, 3, 64, 64))


def test_image_classifier_by_timm_id(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from tasks.classification.model import ImageClassifier

    ref = perturb(timm.create_model("pvt_v2_b0", pretrained=False, num_classes=5))
    cache = use_cache(monkeypatch, tmp_path / "hub")
    timm.models.save_for_hf(ref, tmp_path / "src")
    cache_folder(cache, "timm/pvt_v2_b0.in1k", tmp_path / "src")
    assert_same_logits(ImageClassifier.from_pretrained("timm/pvt_v2_b0.in1k"), ref, torch.randn(1, 3, 64, 64))
