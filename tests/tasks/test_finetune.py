"""Fine-tuning to another class count: ``from_pretrained(folder, num_classes=K, class_names=[...])`` on Hugging
Face folders with 150 / 1000 / 91 classes, and a config's ``model.weights=`` through tools/train.py. The tensors
whose shape depends on the class count get the model's own initialisation (one log line names them); every other
tensor equals the folder's."""
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.classification import ImageClassifier
from tasks.common import checkpoint
from tasks.detection import DeformableDETR
from tasks.segmentation import SegFormer
from tests.utils import perturb

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]
PVT_B0 = dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2])


def _segformer(folder):
    perturb(transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=150))).save_pretrained(folder)


def _classifier(folder):
    cfg = transformers.PvtV2Config(**PVT_B0, num_labels=1000)
    perturb(transformers.PvtV2ForImageClassification(cfg)).save_pretrained(folder)


def _detr(folder):
    pytest.importorskip("timm")
    cfg = transformers.DeformableDetrConfig(encoder_layers=1, decoder_layers=2, num_queries=10, num_labels=91,
                                            with_box_refine=True)
    perturb(transformers.DeformableDetrForObjectDetection(cfg)).save_pretrained(folder)


CASES = {  # model, folder writer, the folder's class count, the class-dependent tensors
    "segformer": (SegFormer, _segformer, 150, ("head.classifier.weight", "head.classifier.bias")),
    "classifier": (ImageClassifier, _classifier, 1000, ("head.weight", "head.bias")),
    "detr": (DeformableDETR, _detr, 91, tuple(f"head.class_embed.{i}.{p}" for i in range(2) for p in ("weight", "bias"))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_from_pretrained_with_another_class_count(case, tmp_path, caplog):
    cls, write, count, class_tensors = CASES[case]
    write(tmp_path)
    original = cls.from_pretrained(tmp_path)
    assert original.num_classes == count
    names = [f"thing {i}" for i in range(5)]
    torch.manual_seed(7)
    with caplog.at_level(logging.INFO, logger="tasks.common.model"):
        tuned = cls.from_pretrained(tmp_path, num_classes=5, class_names=names)
    assert tuned.num_classes == 5 and tuned.class_names == tuple(names) and tuned.config["num_classes"] == 5
    (record,) = [r for r in caplog.records if r.name == "tasks.common.model"]  # one log line
    assert f"{count} classes in the weights, 5 now: re-initialised {', '.join(class_tensors)}" in record.getMessage()
    assert tuned.reinitialised == class_tensors

    torch.manual_seed(7)  # the same draws as the model's own constructor: its init, not zeros or a copy
    fresh = cls(**{**tuned.config})
    ours, theirs, init = tuned.state_dict(), original.state_dict(), fresh.state_dict()
    for key, value in ours.items():
        if key in class_tensors:
            assert value.shape[0] == 5 and torch.equal(value, init[key]), key
        else:
            assert torch.equal(value, theirs[key]), key  # everything else: the folder's, exactly

    same = cls.from_pretrained(tmp_path, num_classes=count)  # the stored count: a plain strict load
    assert same.reinitialised == () and all(torch.equal(v, theirs[k]) for k, v in same.state_dict().items())


def test_unknown_keyword_names_the_model(tmp_path):
    _segformer(tmp_path)
    with pytest.raises(TypeError) as info:
        SegFormer.from_pretrained(tmp_path, layer_norm_eps=1e-6)
    assert str(info.value).startswith("SegFormer.from_pretrained: unknown keyword argument 'layer_norm_eps'; it takes "
                                      "SegFormer's arguments (backbone, num_classes, decoder_dim, dropout")
    assert "backbone overrides as backbone_args={...}" in str(info.value)
    model = SegFormer.from_pretrained(tmp_path, backbone_args={"layer_norm_eps": 1e-6})
    assert model.config["backbone_args"]["layer_norm_eps"] == 1e-6


def test_model_weights_with_another_class_count_in_train(tmp_path):
    """tools/train.py with model.weights= a 1000-class folder on the 6-class toy: one log line, and after one
    step at a negligible learning rate every tensor but the classifier is still the folder's."""
    _classifier(tmp_path / "hf")
    options = [f"data.root={tmp_path / 'data'}", "data.num_train=2", "data.num_val=2", "data.size=(40,40)",
               "data.input_size=32", "data.num_workers=0", "data.batch_size=4", "schedule.max_iters=1",
               "schedule.warmup_iters=0", "optimizer.lr=1e-12", f"model.weights={tmp_path / 'hf'}"]
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "classifier_pvt_b0_toy.py"),
           "--work-dir", str(tmp_path / "work"), "--cfg-options", *options]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "re-initialised" in line]
    assert len(lines) == 1 and "1000 classes in the weights, 6 now: re-initialised head.weight, head.bias" in lines[0]
    trained = checkpoint.load(tmp_path / "work" / "last.pth")["model"]
    folder = ImageClassifier.from_pretrained(tmp_path / "hf").state_dict()
    assert trained["head.weight"].shape == (6, 256)
    for key, value in trained.items():
        if not key.startswith("head."):
            torch.testing.assert_close(value, folder[key], rtol=0, atol=1e-6, msg=key)
