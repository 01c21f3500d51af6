"""What every backbone shares: stage selection, feature metadata and input checks."""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4")


def select_stages(
    out_features: Sequence[str] | None, out_indices: Sequence[int] | None, stage_names: Sequence[str] = STAGE_NAMES
) -> tuple[str, ...]:
    """Resolve ``out_features`` / ``out_indices`` to stage names (the Hugging Face backbone semantics).

    Indices are 0-based over ``stage_names`` and may be negative. With neither argument the last
    stage is selected. Names must be unique and in stage order; both arguments must agree.
    """
    valid = ", ".join(stage_names)
    by_features = by_indices = None
    if out_features is not None:
        if isinstance(out_features, str) or not isinstance(out_features, Sequence):
            raise TypeError(f"out_features must be a list or tuple of stage names ({valid}), got {out_features!r}")
        for f in out_features:
            if f not in stage_names:
                raise ValueError(f"out_features: unknown stage {f!r}; valid stages: {valid}")
        by_features = tuple(out_features)
        _check_order(by_features, stage_names, "out_features")
    if out_indices is not None:
        if isinstance(out_indices, str) or not isinstance(out_indices, Sequence):
            raise TypeError(f"out_indices must be a list or tuple of ints, got {out_indices!r}")
        n = len(stage_names)
        names = []
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise TypeError(f"out_indices must hold ints, got {i!r}")
            if not -n <= i < n:
                raise ValueError(f"out_indices: index {i} is out of range; valid indices: 0..{n - 1} ({valid}) or -{n}..-1")
            names.append(stage_names[int(i) % n])
        by_indices = tuple(names)
        _check_order(by_indices, stage_names, "out_indices")
    if by_features is not None and by_indices is not None and by_features != by_indices:
        raise ValueError(
            f"out_features {list(out_features)} and out_indices {list(out_indices)} should correspond to the same "
            f"stages (out_indices name {list(by_indices)})"
        )
    selected = by_features or by_indices
    if selected is None:
        return (stage_names[-1],)
    if not selected:
        raise ValueError(f"select at least one stage; valid stages: {valid}")
    return selected


def _check_order(names: tuple[str, ...], stage_names: Sequence[str], arg: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"{arg}: duplicate stages in {list(names)}")
    positions = [stage_names.index(n) for n in names]
    if positions != sorted(positions):
        raise ValueError(f"{arg}: stages must be in stage order ({', '.join(stage_names)}), got {list(names)}")


class Backbone(nn.Module):
    """Base class: subclasses add the children ``stage1`` ... ``stage4`` (after an optional ``stem``), each
    NCHW in and out, and set ``feature_channels`` / ``feature_strides`` for all four stages.

    ``forward`` returns ``{name: Tensor[B, C, H, W]}`` for the names in ``out_features``, in stride order.
    """

    num_channels: int
    min_input_size: int = 32

    def __init__(self, out_features: Sequence[str] | None, out_indices: Sequence[int] | None):
        super().__init__()
        self.out_features = select_stages(out_features, out_indices)
        self.feature_channels: dict[str, int] = {}
        self.feature_strides: dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(x)
        if "stem" in self._modules:  # a child named stem runs before stage1 (ResNet)
            x = self._modules["stem"](x)
        out = {}
        for name in STAGE_NAMES[: STAGE_NAMES.index(self.out_features[-1]) + 1]:  # later stages are not run
            x = getattr(self, name)(x)
            if name in self.out_features:
                out[name] = x
        return out

    def freeze_stages(self) -> None:
        """Freeze what ``frozen_stages`` names: no gradients, and kept in eval mode by ``train()``."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.freeze_stages()
        return self

    def convert_state_dict(self, state_dict):
        """Rename a state dict in any supported key format into ours (returns ``weights.ConvertedWeights``)."""
        raise NotImplementedError

    def load_hint(self, state_dict) -> str:
        """A sentence explaining a failed load of ``state_dict`` (already in our keys), or ""."""
        return ""

    def check_input(self, x) -> None:
        """Raise a ValueError/TypeError naming what is wrong with an input batch."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor [B, C, H, W], got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} expects a 4-d tensor [B, C, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point tensor (normalised pixels), got dtype {x.dtype}")
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            # One rule for every model: the input has the weights' dtype (or autocast decides), never a silent cast.
            raise TypeError(
                f"{name}: the input is {x.dtype} but the weights are {weight.dtype}; convert the input "
                f"(x.to({weight.dtype})) or the model (model.to({x.dtype})), or run under torch.autocast"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} got an empty batch (shape {tuple(x.shape)}); pass at least one image")
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"{name} expects {self.num_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                f"build it with num_channels={x.shape[1]} for other inputs"
            )
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(f"{name} needs H and W >= {self.min_input_size} px, got {h}x{w}")
