"""post_process: a hand case and a loop-by-loop reference. Hugging Face's post_process_object_detection is in
test_inference_parity.py."""
import pytest
import torch

from tasks.detection.inference import post_process
from tests.utils import random_detr_outputs


def test_hand_case_labels_and_h_w_order():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 2, 3] = 2.0  # best: query 2, class 3 (flat index 11)
    logits[0, 0, 1] = 1.0  # second: query 0, class 1
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    result = post_process({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]), top_k=2)
    assert len(result) == 1
    assert result[0]["labels"].tolist() == [3, 1]
    assert result[0]["scores"].tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item(),
                                                          torch.sigmoid(torch.tensor(1.0)).item()])
    # (h, w) = (100, 200): x scales by 200, y by 100
    assert torch.allclose(result[0]["boxes"], torch.tensor([[0.0, 50.0, 100.0, 100.0], [80.0, 30.0, 120.0, 70.0]]))


def reference(outputs, sizes, top_k):
    """Every (query, class) pair scored, sorted, the first top_k kept."""
    results = []
    for logits, boxes, (h, w) in zip(outputs["pred_logits"], outputs["pred_boxes"], sizes.tolist()):
        pairs = sorted(((torch.sigmoid(logits[q, c]).item(), q, c) for q in range(logits.shape[0])
                        for c in range(logits.shape[1])), key=lambda p: -p[0])[:top_k]
        out = []
        for score, q, c in pairs:
            cx, cy, bw, bh = boxes[q].tolist()
            out.append((score, c, [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
        results.append(out)
    return results


@pytest.mark.parametrize("top_k", [1, 100, 1000])
def test_against_reference(top_k):
    outputs = random_detr_outputs()
    sizes = torch.tensor([[480, 640], [333, 500]])
    ours = post_process(outputs, sizes, top_k=top_k)
    for result, expected in zip(ours, reference(outputs, sizes, top_k)):
        assert len(result["scores"]) == min(top_k, 30 * 7) == len(expected)
        assert result["labels"].dtype == torch.int64
        assert result["scores"].tolist() == pytest.approx([e[0] for e in expected], abs=1e-6)
        assert result["labels"].tolist() == [e[1] for e in expected]
        assert torch.allclose(result["boxes"], torch.tensor([e[2] for e in expected]), atol=1e-3)


def test_bad_input():
    outputs = random_detr_outputs()
    with pytest.raises(ValueError, match=r"target_sizes must be \[B, 2\]"):
        post_process(outputs, torch.tensor([480, 640]))
    with pytest.raises(ValueError, match="top_k"):
        post_process(outputs, torch.tensor([[1, 1], [1, 1]]), top_k=0)
    with pytest.raises(ValueError, match="pred_boxes"):
        post_process({**outputs, "pred_boxes": outputs["pred_boxes"][:, :3]}, torch.tensor([[1, 1], [1, 1]]))


def test_perfect_outputs_on_the_toy_score_ap_1(tmp_path):
    """Dataset -> test pipeline -> outputs built from its targets -> post_process -> CocoEvaluator: AP 1."""
    from tasks.detection.toy import ensure_toy_dataset
    from tasks.detection import transforms as T
    from tasks.detection.datasets import CocoDetection
    from tasks.detection.evaluator import CocoEvaluator

    root = ensure_toy_dataset(tmp_path, num_train=1, num_val=4, size=(80, 112))
    ann_file = root / "annotations" / "instances_val2017.json"
    dataset = CocoDetection(root / "val2017", ann_file, transforms=T.test_pipeline(64, 100))
    evaluator = CocoEvaluator(ann_file)
    for index in range(len(dataset)):
        sample = dataset[index]
        logits = torch.full((1, 10, dataset.num_classes), -20.0)
        boxes = torch.full((1, 10, 4), 0.5)
        n = len(sample["labels"])
        logits[0, torch.arange(n), sample["labels"]] = 5.0
        boxes[0, :n] = sample["boxes"]  # normalised cxcywh: the same on the resized and the original image
        result = post_process({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([sample["orig_size"]]))[0]
        evaluator.update({sample["image_id"]: result})
    stats = evaluator.compute()
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
