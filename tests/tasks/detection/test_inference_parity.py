"""post_process against Hugging Face's post_process_object_detection."""
from types import SimpleNamespace

import pytest
import torch

from tasks.detection.inference import post_process
from tests.utils import random_detr_outputs

transformers = pytest.importorskip("transformers")


def test_against_hugging_face():
    processor = transformers.DeformableDetrImageProcessor()
    outputs = random_detr_outputs(batch=3, queries=50, classes=91, seed=1)
    sizes = torch.tensor([[480, 640], [333, 500], [800, 1199]])
    hf = processor.post_process_object_detection(
        SimpleNamespace(logits=outputs["pred_logits"], pred_boxes=outputs["pred_boxes"]), threshold=0, target_sizes=sizes)
    ours = post_process(outputs, sizes)
    for a, b in zip(ours, hf):
        for key in ("scores", "labels", "boxes"):
            assert torch.equal(a[key], b[key]), key

