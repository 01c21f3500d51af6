"""``logits_to_labels`` against Hugging Face's semantic-segmentation post-processing."""
import pytest
import torch

from tasks.segmentation.inference import logits_to_labels

transformers = pytest.importorskip("transformers")


def test_logits_to_labels_equals_hf_post_processing():
    from transformers.modeling_outputs import SemanticSegmenterOutput

    processor = transformers.SegformerImageProcessor()
    logits = torch.randn(2, 7, 25, 33)
    outputs = SemanticSegmenterOutput(logits=logits)
    sizes = [(97, 131), (97, 131)]
    expected = torch.stack(processor.post_process_semantic_segmentation(outputs, target_sizes=sizes))
    torch.testing.assert_close(logits_to_labels(logits, (97, 131)), expected)
    no_resize = torch.stack(processor.post_process_semantic_segmentation(outputs))
    torch.testing.assert_close(logits_to_labels(logits, None), no_resize)
