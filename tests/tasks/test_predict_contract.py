"""One predict contract (``tasks.common.model.predicting``) for every registered task: ``predict`` runs in eval
mode without gradients and restores the training flag, so a model left in training mode predicts what it predicts
in eval mode; the same holds for a network standing in for the model (the exported ONNX file's role)."""
import numpy as np
import pytest
import torch
from torch import nn

import tests.tasks.fifth_task  # noqa: F401  (registers the task defined outside tasks/)
from tasks import get_task_spec, list_tasks
from tasks.common.preprocess import Preprocessing
from tests.utils import perturb

# Tiny architectures with dropout and drop-path on, so training mode changes what a forward pass computes.
BACKBONE = {"depths": (2, 1, 1, 1), "drop_path_rate": 0.5}  # stage1 block 2 drops paths too
NO_THRESHOLDS = ("quality_threshold_things", "quality_threshold_stuff", "overlap_threshold_things",
                 "overlap_threshold_stuff")  # random weights: keep every segment, so the test can fail
DETR = dict(num_queries=6, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=32, dropout=0.5)
TINY = {
    "classification": dict(backbone="pvt_v2_b0", num_classes=4, dropout=0.5),
    "segmentation": dict(backbone="mit_b0", num_classes=4, decoder_dim=32),
    "depth": dict(backbone="mit_b0", decoder_dim=16),
    "detection": dict(backbone="pvt_v2_b0", num_classes=3, **DETR),
    "panoptic": dict(backbone="pvt_v2_b0", num_things_classes=2, num_stuff_classes=2, thing_mask_layers=1,
                     stuff_mask_layers=1, merge={k: 0.0 for k in NO_THRESHOLDS}, **DETR),
    "foreground": dict(backbone="pvt_v2_b0"),
}
SMALL_INPUT = Preprocessing(resize="keep_ratio", size=(96, 64))


def _model(task: str):
    spec = get_task_spec(task)
    pre = {} if task == "depth" else {"preprocessing": SMALL_INPUT}  # depth predicts at the image size
    return perturb(spec.model(**TINY[task], backbone_args=BACKBONE, **pre))


def _as_arrays(out):
    if isinstance(out, dict):
        return {k: _as_arrays(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_as_arrays(v) for v in out]
    if isinstance(out, torch.Tensor):
        assert not out.requires_grad
        return out.numpy()
    return out


def test_every_registered_task_is_covered():
    assert sorted(TINY) == list_tasks()


@pytest.mark.parametrize("task", sorted(TINY))
def test_a_model_left_in_training_mode_predicts_as_in_eval_mode(task):
    model = _model(task)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    x = model.preprocessing(image) if task != "depth" else torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the test can fail: a training-mode forward is not the eval one
        trained = model.train()(x)
        evaluated = model.eval()(x)
    first = next(iter(trained.values())) if isinstance(trained, dict) else trained
    assert not torch.allclose(first, next(iter(evaluated.values())) if isinstance(evaluated, dict) else evaluated)

    expected = _as_arrays(model.eval().predict(image))
    assert not model.training
    got = _as_arrays(model.train().predict(image))
    assert model.training  # the training flag is restored
    np.testing.assert_equal(got, expected)


def test_a_stand_in_network_gets_the_same_contract():
    """``OnnxPredictor.predict`` runs the model class's ``predict`` with the ONNX network in its place."""
    seen = []

    class StandIn(nn.Module):
        preprocessing = SMALL_INPUT
        device = torch.device("cpu")

        def forward(self, pixel_values):
            seen.append((self.training, torch.is_inference_mode_enabled()))
            return torch.zeros(pixel_values.shape[0], 3)

    stand_in = StandIn()
    probs = get_task_spec("classification").model.predict(stand_in, np.zeros((20, 30, 3), np.uint8))
    assert seen == [(False, True)] and stand_in.training and np.allclose(probs, 1 / 3)


def test_the_training_flag_is_restored_after_an_error():
    model = _model("classification").train()
    with pytest.raises(TypeError):
        model.predict(np.zeros((20, 30, 3), np.float32))
    assert model.training
