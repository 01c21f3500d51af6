"""Accuracy against a direct count, per-class accuracy, prediction formats, and its errors."""
import math

import numpy as np
import pytest
import torch

from tasks.classification import Accuracy


def _direct(scores: np.ndarray, target: np.ndarray, k: int) -> float:
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(target, ranked)]))


def test_top1_top5_over_batches_equal_a_direct_count():
    rng = np.random.default_rng(0)
    scores, target = rng.normal(size=(103, 12)).astype(np.float32), rng.integers(0, 12, 103)
    acc = Accuracy(12)
    for start in range(0, 103, 25):  # uneven batches, numpy and torch inputs
        s, t = scores[start:start + 25], target[start:start + 25]
        acc.update(torch.from_numpy(s) if start % 50 else s, torch.from_numpy(t))
    out = acc.compute()
    assert out == {"top1": pytest.approx(_direct(scores, target, 1)), "top5": pytest.approx(_direct(scores, target, 5))}
    assert 0 < out["top1"] < out["top5"] < 1


def test_per_class_accuracy_and_absent_classes():
    acc = Accuracy(4, per_class=True)
    logits = torch.eye(4)[[0, 0, 1, 2, 2, 2]]  # predictions 0, 0, 1, 2, 2, 2
    acc.update(logits, torch.tensor([0, 1, 1, 2, 2, 0]))
    out = acc.compute()
    assert out["per_class"][:3] == [0.5, 0.5, 1.0] and math.isnan(out["per_class"][3])
    assert out["top1"] == pytest.approx(4 / 6) and out["top5"] == 1.0  # 4 classes: top-5 holds them all
    acc.reset()
    assert math.isnan(acc.compute()["top1"])


def test_integer_predictions():
    acc = Accuracy(5, topk=(1,))
    acc.update(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0]))
    assert acc.compute() == {"top1": pytest.approx(2 / 3)}
    ranked = Accuracy(10, topk=(1, 3))
    ranked.update(torch.tensor([[4, 1, 2], [0, 9, 8]]), torch.tensor([1, 7]))
    assert ranked.compute() == {"top1": 0.0, "top3": 0.5}
    with pytest.raises(ValueError, match="top-5"):
        Accuracy(10).update(torch.tensor([1, 2]), torch.tensor([1, 2]))


def test_errors_name_the_problem():
    acc = Accuracy(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        acc.update(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        acc.update(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer labels"):
        acc.update(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="scores for 3 targets"):
        acc.update(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        acc.update([[0.1, 0.2, 0.7]], torch.tensor([2]))
    with pytest.raises(ValueError, match="num_classes"):
        Accuracy(0)
