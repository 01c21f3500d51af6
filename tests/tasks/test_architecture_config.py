"""Each architecture's hyper-parameters are declared once, in a dataclass (``DeformableDETRConfig``,
``PanopticSegFormerConfig``) that the head, the model, the config section and the checkpoint read; checkpoints
written before (their config a flat dict of constructor arguments) still load."""
import dataclasses

import pytest
import torch

from heads.deformable_detr import DeformableDETRConfig
from heads.panoptic_segformer import PanopticSegFormerConfig
from tasks.detection import DeformableDETR
from tasks.detection.presets import DeformableDETRModel
from tasks.panoptic import PanopticSegFormer
from tasks.panoptic.presets import PanopticSegFormerModel
from tests.utils import perturb

TINY_BACKBONE = {"depths": (1, 1, 1, 1)}
PRE = {"resize": "short_side", "size": [64, 96], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "size_divisor": 1, "interpolation": "bilinear"}
# meta["model"] exactly as checkpoints were written before the dataclasses: flat constructor arguments.
OLD_DETECTION = {
    "backbone": "pvt_v2_b0", "num_classes": 3, "class_names": ("a", "b", "c"), "num_queries": 5,
    "num_feature_levels": 4, "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 32,
    "dropout": 0.0, "n_points": 2, "with_box_refine": True, "two_stage": False,
    "backbone_stages": ("stage2", "stage3", "stage4"), "backbone_args": TINY_BACKBONE, "preprocessing": PRE,
}
OLD_PANOPTIC = {
    "backbone": "pvt_v2_b0", "num_things_classes": 2, "num_stuff_classes": 1, "num_queries": 4, "hidden_dim": 32,
    "nheads": 2, "enc_layers": 1, "dec_layers": 1, "dim_feedforward": 32, "dropout": 0.0, "n_points": 2,
    "thing_mask_layers": 1, "stuff_mask_layers": 2, "backbone_stages": ("stage2", "stage3", "stage4"),
    "class_names": ("a", "b", "c"), "category_ids": (1, 2, 7), "merge": {"max_per_image": 100,
    "quality_threshold_things": 0.25, "quality_threshold_stuff": 0.25, "overlap_threshold_things": 0.4,
    "overlap_threshold_stuff": 0.2}, "backbone_args": TINY_BACKBONE, "preprocessing": PRE,
}
CASES = [
    (DeformableDETR, DeformableDETRConfig, DeformableDETRModel, OLD_DETECTION, "detection"),
    (PanopticSegFormer, PanopticSegFormerConfig, PanopticSegFormerModel, OLD_PANOPTIC, "panoptic"),
]


@pytest.mark.parametrize("model_cls, config_cls, section_cls, old, task", CASES)
def test_a_checkpoint_written_before_loads(model_cls, config_cls, section_cls, old, task, tmp_path):
    model = perturb(model_cls(**old))
    assert model.config == {**old, "class_names": tuple(old["class_names"])}  # still written the same way
    torch.save({"model": model.state_dict(), "meta": {"task": task, "model": old}}, tmp_path / "old.pth")
    loaded = model_cls.from_pretrained(tmp_path / "old.pth")
    x = torch.randn(1, 3, 128, 128)  # 2x2 at stride 64: GroupNorm needs more than one value
    with torch.no_grad():
        a, b = model.eval()(x), loaded(x)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], atol=0, rtol=0)
    assert loaded.head.config == model.head.config


@pytest.mark.parametrize("model_cls, config_cls, section_cls, old, task", CASES)
def test_one_declaration_read_by_head_model_section_and_checkpoint(model_cls, config_cls, section_cls, old, task):
    names = [f.name for f in dataclasses.fields(config_cls)]
    section = section_cls(backbone="pvt_v2_b0", backbone_args=TINY_BACKBONE, **{n: old[n] for n in names})
    assert isinstance(section, config_cls)  # the section extends the declaration: its fields and defaults
    assert set(names) <= set(model_cls.check_options(section))  # the model takes every field
    model = model_cls.build(section)
    assert model.head.config == config_cls(**{n: old[n] for n in names})  # the head reads it
    assert {n: model.config[n] for n in names} == dataclasses.asdict(model.head.config)  # the checkpoint stores it


@pytest.mark.parametrize("model_cls, config_cls, section_cls, old, task", CASES)
def test_bad_hyper_parameters_are_named(model_cls, config_cls, section_cls, old, task):
    with pytest.raises(TypeError, match=rf"{model_cls.__name__}: unknown argument\(s\) 'num_querys'.*num_queries"):
        model_cls(backbone="pvt_v2_b0", num_querys=3)
    with pytest.raises(ValueError, match=rf"{config_cls.__name__}: num_queries must be an int >= 1, got 0"):
        model_cls(backbone="pvt_v2_b0", num_queries=0)
    with pytest.raises(ValueError, match=rf"{section_cls.__name__}: dropout must be a probability in \[0, 1\), got 1.5"):
        section_cls(dropout=1.5)
    with pytest.raises(ValueError, match=r"enc_layers must be an int >= 1, got True"):
        config_cls(enc_layers=True)
