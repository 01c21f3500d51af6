"""Ours -> transformers folder -> ``AutoModel...from_pretrained``: outputs within 1e-4 (fp32) and, from the folder's
image processor, the same ``pixel_values`` as our preprocessing (1e-5); the folder reads back into ours tensor for
tensor; models transformers cannot express, and existing folders, are refused with nothing left behind.

Runs with any installed transformers (5.x in the project's environment; 4.57.6 too, see README "Out to Hugging
Face"). Tiny seeded random models keep each case to a second or two.
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.classification.model import ImageClassifier
from tasks.common.preprocess import Preprocessing
from tasks.common.to_transformers import image_processor, save_backbone_transformers, save_transformers
from tasks.depth.model import GLPN
from tasks.detection.model import DeformableDETR
from tasks.segmentation.model import SegFormer
from tests.utils import perturb

transformers = pytest.importorskip("transformers")

ENC = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 40, 64], num_attention_heads=[1, 2, 2, 4])
DETR = dict(enc_layers=2, dec_layers=2, num_queries=30, num_classes=7, class_names=[f"c{i}" for i in range(7)])
NAMES = ["wall", "sky", "road", "car"]


def _build(kind):
    torch.manual_seed(0)
    if kind == "classifier":
        return ImageClassifier("pvt_v2_b0", num_classes=4, class_names=NAMES, backbone_args=ENC)
    if kind == "classifier_li":  # linear attention: PvtV2 holds it (Segformer does not)
        return ImageClassifier("pvt_v2_b2_li", num_classes=3, backbone_args=ENC)
    if kind == "segformer":
        return SegFormer("mit_b0", num_classes=4, class_names=NAMES, decoder_dim=32, backbone_args=ENC)
    if kind == "segformer_pvt":  # a PVTv2 encoder (MLP ratios 8, 8, 4, 4): SegformerConfig has mlp_ratios
        return SegFormer("pvt_v2_b0", num_classes=4, decoder_dim=32, backbone_args=ENC,
                         preprocessing=Preprocessing(resize="fixed", size=(96, 128)))
    if kind == "glpn":
        return GLPN("mit_b0", decoder_dim=16, max_depth=10.0, backbone_args=ENC)
    backbone, variant = kind.split("_", 1)[1].split("-") if "-" in kind else (kind.split("_", 1)[1], "")
    args = dict(ENC, mlp_ratios=[4, 4, 4, 4]) if backbone == "pvt" else None
    flags = {"": {}, "refine": dict(with_box_refine=True), "twostage": dict(with_box_refine=True, two_stage=True)}
    return DeformableDETR("pvt_v2_b0" if backbone == "pvt" else "resnet50", backbone_args=args, **DETR, **flags[variant])


def _hf_outputs(kind, ref, x):
    out = ref(pixel_values=x)
    if kind.startswith("detr"):
        return {"pred_logits": out.logits, "pred_boxes": out.pred_boxes}
    return out.predicted_depth[:, None] if kind == "glpn" else out.logits


AUTO = {"classifier": "AutoModelForImageClassification", "segformer": "AutoModelForSemanticSegmentation",
        "glpn": "AutoModelForDepthEstimation", "detr": "AutoModelForObjectDetection"}
KINDS = ["classifier", "classifier_li", "segformer", "segformer_pvt", "glpn", "detr_pvt", "detr_pvt-refine",
         "detr_pvt-twostage", "detr_resnet"]


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_loads_the_folder_with_our_outputs(tmp_path, kind):
    model = perturb(_build(kind))
    folder = model.save_pretrained(tmp_path / "hf", format="transformers")
    auto = getattr(transformers, AUTO[kind.split("_")[0]])
    ref, info = auto.from_pretrained(folder, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = model(x), _hf_outputs(kind, ref.eval(), x)
    pairs = [(ours[k], theirs[k]) for k in theirs] if isinstance(theirs, dict) else [(ours, theirs)]
    for a, b in pairs:
        assert a.shape == b.shape
        # 1e-4: fp32 parity as in the loading direction's tests; measured <= 1e-5 (a LayerNorm eps the folder
        # cannot hold, 1e-6 vs transformers' 1e-5, accounts for most of it)
        assert (a - b).abs().max().item() <= 1e-4
    config = json.loads((folder / "config.json").read_text())
    if model.num_classes:
        names = model.class_names or [f"LABEL_{i}" for i in range(model.num_classes)]  # transformers' placeholders
        assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
        assert ref.config.id2label == dict(enumerate(names))
    card = (folder / "README.md").read_text()
    assert config["architectures"][0] in card and "## Preprocessing" in card and "## Fidelity" in card


@pytest.mark.parametrize("kind", KINDS)
def test_the_folder_reads_back_into_ours(tmp_path, kind):
    model = perturb(_build(kind))
    back = type(model).from_pretrained(model.save_pretrained(tmp_path / "hf"))
    ours, theirs = model.state_dict(), back.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.endswith("num_batches_tracked"))
    assert back.class_names == model.class_names  # placeholders (no names) read back as no names


PREPROCESSING = {  # (processor kind, our preprocessing): every rule some processor reproduces
    "classifier": ("clip", Preprocessing(resize="short_side_crop", size=(256, 224), interpolation="bicubic")),
    "classifier_fixed": ("clip", Preprocessing(resize="fixed", size=(224, 224), interpolation="bicubic")),
    "detr": ("detr", Preprocessing(resize="short_side", size=(200, 333))),
    "detr_large": ("detr", Preprocessing(resize="short_side", size=(800, 1333))),
    "glpn": ("glpn", Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))),
    "segformer_fixed": ("segformer", Preprocessing(resize="fixed", size=(128, 160))),
    "segformer_none": ("segformer", Preprocessing()),
}


@pytest.mark.parametrize("case", list(PREPROCESSING))
def test_the_image_processor_reproduces_our_pixel_values(tmp_path, case):
    kind, pre = PREPROCESSING[case]
    config, note = image_processor(pre, kind)
    assert note is None or note.startswith("where the long side reaches")  # DETR's cap: not reached below
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    for shape in [(301, 397, 3), (330, 250, 3)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]
        ours = pre(image)
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().max().item() <= 1e-5  # both resize uint8 with torchvision: float rounding only


def test_a_rule_no_processor_has_is_said_in_the_card(tmp_path):
    model = SegFormer("mit_b0", num_classes=2, decoder_dim=32, backbone_args=ENC)  # keep_ratio (2048, 512) / 32
    folder = model.save_pretrained(tmp_path / "hf")
    card = (folder / "README.md").read_text()
    assert "The image processor (`preprocessor_config.json`) differs: ours resizes keep_ratio [2048, 512]" in card
    assert "multiple of 32" in card


def test_bare_backbone_as_pvt_v2_model(tmp_path):
    from backbones import build_backbone

    torch.manual_seed(0)
    backbone = perturb(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), **ENC))
    folder = save_backbone_transformers(backbone, tmp_path / "hf")
    ref = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(ref).__name__ == "PvtV2Model"
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours = backbone(x)["stage4"]
        theirs = ref(pixel_values=x).last_hidden_state
    # the embedding norms' eps (ours 1e-5, transformers' PvtV2 one eps, 1e-6): measured ~1e-6
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind, message", [
    ("panoptic", "transformers has no class for a PanopticSegFormer"),
    ("segformer_li", "linear spatial-reduction attention, which transformers' Segformer/GLPN encoder cannot express"),
    ("detr_dc5", "a dilated (DC5) ResNet-50 has no transformers ResNetConfig"),
])
def test_models_transformers_cannot_express_are_refused(tmp_path, kind, message):
    if kind == "panoptic":
        from tasks.panoptic.model import PanopticSegFormer

        model = PanopticSegFormer("pvt_v2_b0", 3, 2, num_queries=12, hidden_dim=64, nheads=8, enc_layers=1,
                                  dec_layers=2, dim_feedforward=64, backbone_args=ENC)
    elif kind == "segformer_li":
        model = SegFormer("pvt_v2_b2_li", num_classes=2, decoder_dim=32, backbone_args=ENC)
    else:
        model = DeformableDETR("resnet50", num_queries=10, num_classes=2, enc_layers=1, dec_layers=1,
                               num_feature_levels=1, backbone_args={"replace_stride_with_dilation": (False, False, True)})
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        model.save_pretrained(tmp_path / "hf")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary folder


def test_an_existing_folder_is_never_replaced(tmp_path):
    model = _build("classifier")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        model.save_pretrained(tmp_path / "hf")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"] and (tmp_path / "hf" / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="format must be 'transformers'"):
        model.save_pretrained(tmp_path / "other", format="onnx")
    model.save_pretrained(tmp_path / "empty")  # an empty folder is taken
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_a_model_the_folder_would_change_is_refused(tmp_path):
    # A LayerNorm eps far from transformers' 1e-5 moves the outputs past 1e-4: the folder is not written.
    model = perturb(SegFormer("mit_b0", num_classes=2, decoder_dim=32, backbone_args=dict(ENC, layer_norm_eps=1.0)))
    with pytest.raises(ValueError, match="transformers would compute other outputs than this model"):
        model.save_pretrained(tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


def test_cli_to_transformers_with_card_from_the_run(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
    import export as cli

    model = perturb(_build("glpn"))
    run = tmp_path / "run"
    run.mkdir()
    meta = {"task": model.task, "model": model.config, "config": {"schedule": {"max_iters": 7}}}
    torch.save({"model": model.state_dict(), "meta": meta}, run / "best.pth")
    (run / "metrics.json").write_text(json.dumps({"iteration": 7, "d1": 0.5}))
    assert cli.main([str(run / "best.pth"), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert '"d1": 0.5' in card and '"max_iters": 7' in card
    assert cli.main([str(run / "best.pth"), str(tmp_path / "hf"), "--to", "transformers"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "exists and is not an empty folder" in err
