"""Mixed precision: one ``autocast`` for training, evaluation and prediction, and the float32 islands.

``autocast(amp, device)`` is ``torch.autocast`` for ``amp`` in ``"none"`` / ``None`` (no autocast), ``"bf16"``
(CPU with bf16 instructions, or CUDA) and ``"fp16"`` (CUDA only; training adds a gradient scaler). The matrix
products and convolutions of the backbone and heads then run in the low precision.

Some computations stay in float32 whatever the caller's autocast, because precision decides their result:

- the heads' outputs (``heads.precision.float32``): logits, depth and boxes leave the model as float32, so
  losses, post-processing and metrics see fp32; GLPN's depth is float32 from its last convolution on (bf16 would
  round it to 1/256 of itself) and Deformable-DETR's boxes from each layer's box-head output on (the boxes are
  refined through the layers and end in pixels, where bf16's step is 2-4 px at 500-1000 px);
- losses (``float32``): cross-entropy, SiLog (``log`` of depth ratios), focal / L1 / GIoU; sums over many
  pixels or boxes in bf16 lose the small terms (8 bits of mantissa);
- the Hungarian matcher's cost matrix (``float32``): near-equal costs in bf16 tie and change the assignment;
- the deformable sampler (``heads.deformable_detr.ms_deform_attn``, in the head, which cannot import this
  module): sampling locations in bf16 move a point by up to 1/256 of the map, and the weighted sum over
  levels x points x 4 corners loses the small weights.

``float32`` disables autocast inside the function and casts its floating-point half inputs (also inside lists,
tuples and dicts, e.g. Deformable-DETR's ``aux_outputs``) to float32; gradients flow back through the casts.
"""
from __future__ import annotations

import functools
from contextlib import ExitStack, nullcontext
from pathlib import Path

import torch

AMP_CHOICES = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_HALF = (torch.bfloat16, torch.float16)


def check_amp(amp: str | None, device: torch.device | str) -> str:
    """``amp`` normalised (``None`` -> ``"none"``), or a ``ValueError`` naming the value and the choices."""
    amp = "none" if amp is None else amp
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use 'bf16' on CPU")
    return amp


def autocast(amp: str | None, device: torch.device | str):
    """The context for ``amp`` on ``device`` (see the module docstring); ``"none"`` is a no-op."""
    amp = check_amp(amp, device)
    if amp == "none":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[amp])


# CPU flags of native bf16 arithmetic (x86: AVX512-BF16 dot products, AMX tiles; Arm: the BF16 extension).
# Without them oneDNN emulates bf16 through fp32 with conversions, and a bf16 step is slower than fp32's.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str] | None:
    """The native-bf16 flags this CPU reports (``[]``: none), or None where ``cpuinfo`` cannot be read (not
    Linux): then the capability is unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / Arm
            flags.update(value.split())
    return [f for f in BF16_FLAGS if f in flags]


def bf16_capability(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """One phrase for reports: ``native bf16 (avx512_bf16)``, ``no native bf16 (emulated)`` or ``unknown``."""
    flags = cpu_bf16_flags(cpuinfo)
    if flags is None:
        return "bf16 capability unknown"
    return f"native bf16 ({', '.join(flags)})" if flags else "no native bf16 (emulated)"


def slow_bf16_warning(amp: str | None, device: torch.device | str, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The one start-up warning line for bf16 autocast on a CPU without native bf16, else None."""
    if amp != "bf16" or torch.device(device).type != "cpu" or cpu_bf16_flags(cpuinfo) != []:
        return None
    return ("WARNING: runtime.amp='bf16' on a CPU without native bf16 instructions (no avx512_bf16 / amx_bf16 in "
            "/proc/cpuinfo): bf16 is emulated through fp32 conversions, so training and evaluation will be slower "
            "than fp32; use runtime.amp=None on this machine")


def _to_float(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _HALF else value
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def no_autocast():
    """Autocast off on every device where it is on (a no-op where none is)."""
    stack = ExitStack()
    for device in ("cpu", "cuda"):
        if (device == "cpu" or torch.cuda.is_available()) and torch.is_autocast_enabled(device):
            stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def float32(fn):
    """Decorator: run ``fn`` without autocast, its half-precision floating inputs cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with no_autocast():
            return fn(*_to_float(args), **_to_float(kwargs))

    return wrapper
