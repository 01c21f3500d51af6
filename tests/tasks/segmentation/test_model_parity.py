"""SegFormer against Hugging Face through ``from_pretrained``: folders (4.x key names), 5.x in-memory names,
architecture overrides and class names, and the errors for Hugging Face folders of other models."""
import json

import pytest
import torch

from tasks.segmentation.model import SegFormer
from tests.utils import assert_same_logits, perturb

transformers = pytest.importorskip("transformers")

B2 = dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768)


def _hf(tmp_path, **config):
    ref = perturb(transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**config)))
    ref.save_pretrained(tmp_path)  # transformers 5.x writes the 4.x key names (decode_head.linear_c.{i})
    return ref


@pytest.mark.parametrize(
    "config, shapes",
    [
        (dict(num_labels=150), [(1, 3, 200, 296), (2, 3, 97, 131)]),
        (dict(B2, num_labels=7), [(1, 3, 200, 296)]),
    ],
    ids=["b0", "b2"],
)
def test_hf_folder_parity(tmp_path, config, shapes):
    ref = _hf(tmp_path, **config)
    ours = SegFormer.from_pretrained(tmp_path)
    assert not ours.training
    assert ours.config["backbone"] == ("mit_b2" if "depths" in config else "mit_b0")
    assert ours.config["decoder_dim"] == ref.config.decoder_hidden_size
    assert ours.class_names is None  # transformers' LABEL_i placeholders are not kept
    for shape in shapes:
        assert_same_logits(ours, ref, torch.randn(shape))


def test_hf_5x_in_memory_names_with_config_beside(tmp_path):
    ref = _hf(tmp_path, num_labels=5)
    state = ref.state_dict()
    assert "decode_head.linear_projections.0.proj.weight" in state
    assert "segformer.stages.0.blocks.0.attention.q_proj.weight" in state
    torch.save(state, tmp_path / "v5.bin")
    assert_same_logits(SegFormer.from_pretrained(tmp_path / "v5.bin"), ref, torch.randn(1, 3, 97, 131))


def test_hf_architecture_overrides_and_class_names(tmp_path):
    labels = {0: "wall", 1: "sky", 2: "road"}
    # Sizes of no registered variant (hidden 48/96/..., 3 heads in stage 2), a non-default activation.
    ref = _hf(
        tmp_path, hidden_sizes=[16, 48, 96, 128], num_attention_heads=[1, 3, 4, 8], depths=[1, 1, 2, 1],
        decoder_hidden_size=64, hidden_act="relu", id2label=labels, classifier_dropout_prob=0.2,
    )
    ours = SegFormer.from_pretrained(tmp_path)
    assert ours.class_names == ("wall", "sky", "road") and ours.config["class_names"] == ours.class_names
    assert ours.config["backbone"] == "mit_b0" and ours.config["dropout"] == 0.2
    args = ours.config["backbone_args"]
    assert args["hidden_sizes"] == (16, 48, 96, 128) and args["hidden_act"] == "relu"
    assert_same_logits(ours, ref, torch.randn(1, 3, 64, 80))

    # The caller's backbone_args win: the eps the MiT weights were trained with changes the outputs.
    mmseg_eps = SegFormer.from_pretrained(tmp_path, backbone_args={"layer_norm_eps": 1e-6})
    assert mmseg_eps.config["backbone_args"]["layer_norm_eps"] == 1e-6
    assert mmseg_eps.backbone.stage1.norm.eps == 1e-6 and mmseg_eps.backbone.stage1.patch_embed.norm.eps == 1e-5


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        SegFormer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        SegFormer.from_pretrained(tmp_path / "empty")

    glpn = tmp_path / "glpn"
    _hf(glpn, num_labels=3)
    (glpn / "config.json").write_text(json.dumps({"model_type": "glpn"}))
    with pytest.raises(ValueError, match="describes a 'glpn' model"):
        SegFormer.from_pretrained(glpn)

    encoder = tmp_path / "encoder"
    transformers.SegformerModel(transformers.SegformerConfig()).save_pretrained(encoder)
    with pytest.raises(ValueError, match="SegformerModel without a segmentation head"):
        SegFormer.from_pretrained(encoder)
