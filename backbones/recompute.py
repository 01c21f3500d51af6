"""Activation checkpointing that keeps batch-norm statistics right: ``recompute(module, fn, *args)``.

(``heads.recompute`` is the same function: backbones import no project package.)
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

from torch import nn
from torch.utils.checkpoint import checkpoint, noop_context_fn


def _batch_norms_updating(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]


@contextmanager
def _stats_frozen(norms):
    """Batch norms that normalise with the batch's statistics but leave their running statistics alone."""
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = 1·running + 0·batch: unchanged, bit for bit
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def recompute(module: nn.Module, fn, *args):
    """``fn(*args)`` with its activations recomputed in the backward instead of kept (non-reentrant
    ``torch.utils.checkpoint``, the RNG state of dropout replayed). ``module`` holds ``fn``'s layers: its training
    batch norms update their running statistics once, in the forward, not again in the recomputation, so the
    gradients and the buffers equal those of a plain call."""
    norms = _batch_norms_updating(module)
    contexts = (lambda: (nullcontext(), _stats_frozen(norms))) if norms else noop_context_fn
    return checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)
