"""runtime.activation_checkpointing: every task model offers recomputation (backbone blocks, the heads' heavy
parts), and the gradients and the batch-norm statistics equal those of a plain step, bit for bit."""
import pytest
import torch

from tasks.common.compile import set_activation_checkpointing
from tests.tasks.common.training_models import KINDS, build, forward_loss


def _step(model, x):
    torch.manual_seed(1)  # the same dropout masks in both runs (recomputation replays the RNG state)
    forward_loss(model, x).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, dict(model.named_buffers())


@pytest.mark.parametrize("kind", KINDS)
def test_checkpointing_gives_the_same_gradients(kind):
    x = torch.randn(2, 3, 64, 96)
    plain = build(kind).train()
    grads, buffers = _step(plain, x)
    recomputed = build(kind).train()
    heads = 0 if kind in ("backbone", "classification") else 1  # the classifier's head is one linear layer
    assert set_activation_checkpointing(recomputed, True) == 4 + heads  # the backbone's four stages, the head's part
    grads_ckpt, buffers_ckpt = _step(recomputed, x)
    assert grads.keys() == grads_ckpt.keys() and grads
    for name in grads:
        assert torch.equal(grads[name], grads_ckpt[name]), name
    for name in buffers:
        assert torch.equal(buffers[name], buffers_ckpt[name]), name
