"""Where the heads leave the low precision of autocast (see ``tasks.common.amp`` for the whole policy)."""
from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is fp16 / bf16 (autocast's outputs), unchanged otherwise (float32, float64)."""
    return x.float() if x.dtype in _HALF else x
