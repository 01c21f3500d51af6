"""Optimizer parameter groups (by module identity) and learning-rate schedules."""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .config import OptimizerConfig, ScheduleConfig

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, FrozenBatchNorm2d)


def param_groups(model: nn.Module, cfg: OptimizerConfig, named: dict[str, list[nn.Module]] | None = None) -> list[dict]:
    """One group per (lr multiplier, decays) pair.

    ``cfg.lr_mults`` keys are submodule paths ("head", "backbone.stage1") or names in ``named``, module groups
    such as a task model's ``parameter_groups()`` (e.g. Deformable-DETR's "sampling_offsets"). A
    parameter's multiplier comes from a named group that owns it, else from the longest path that does;
    normalisation-layer parameters and biases get no weight decay unless ``decay_norm_and_bias``.
    Frozen parameters (``requires_grad=False``) are left out.
    """
    named = named or {}
    owners = {}
    for key in sorted(cfg.lr_mults, key=lambda k: (k in named, len(k))):  # named groups, then longer paths, win
        for module in named[key] if key in named else [_submodule(model, key, named)]:
            for p in module.parameters():
                owners[p] = cfg.lr_mults[key]
    no_decay = set()
    if not cfg.decay_norm_and_bias:
        for module in model.modules():
            if isinstance(module, NORM_TYPES):
                no_decay.update(module.parameters(recurse=False))
            elif isinstance(getattr(module, "bias", None), nn.Parameter):
                no_decay.add(module.bias)
    groups: dict[tuple[float, bool], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((owners.get(p, 1.0), p not in no_decay), []).append(p)
    return [
        {"params": params, "lr": cfg.lr * mult, "lr_mult": mult, "weight_decay": cfg.weight_decay if decay else 0.0}
        for (mult, decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]


def _submodule(model: nn.Module, path: str, named: dict) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as e:
        children = ", ".join([n for n, _ in model.named_children()] + sorted(named))
        raise ValueError(f"optimizer.lr_mults: the model has no submodule or group {path!r} (valid: {children})") from e


# Devices where torch's Adam/AdamW have a fused kernel (one pass over each parameter for the whole update).
FUSED_DEVICES = ("cpu", "cuda")


def adam_implementation(params: list[torch.Tensor]) -> dict:
    """Keyword arguments that pick the fastest Adam/AdamW update for ``params``: ``fused`` where the device has the
    fused kernel (on a 2-core CPU, pvt_v2_b2's 25 M parameters: 3.7x faster than torch's CPU default, the
    per-tensor loop; BENCHMARKS.md), else ``foreach`` (one multi-tensor kernel per step of the update)."""
    devices = {p.device.type for p in params}
    if devices and devices <= set(FUSED_DEVICES) and all(p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over ``param_groups``; a task model's declared groups can be named in
    ``cfg.lr_mults`` (``TaskModel.parameter_groups``)."""
    from .model import TaskModel

    groups = param_groups(model, cfg, model.parameter_groups() if isinstance(model, TaskModel) else None)
    impl = adam_implementation([p for g in groups for p in g["params"]])
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **impl)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **impl)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    raise ValueError(f"optimizer.name must be adamw, adam or sgd, got {cfg.name!r}")


def lr_factor(cfg: ScheduleConfig, it: int) -> float:
    """The learning rate at iteration ``it`` (0-based, the step about to be taken) as a fraction of the base."""
    progress = min(it / max(cfg.max_iters, 1), 1.0)
    if cfg.policy == "onecycle":  # the GLPN schedule: start·lr -> lr at the peak -> start·lr, exponent power
        start, peak = cfg.onecycle_start_ratio, cfg.onecycle_peak
        if progress < peak:
            return start + (1 - start) * (progress / peak) ** cfg.power
        return 1 + (start - 1) * ((progress - peak) / (1 - peak)) ** cfg.power
    if cfg.policy == "poly":
        factor = (1 - progress) ** cfg.power * (1 - cfg.min_lr_ratio) + cfg.min_lr_ratio
    elif cfg.policy == "cosine":
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.policy == "step":
        factor = cfg.gamma ** sum(it >= m for m in cfg.milestones)
    elif cfg.policy == "constant":
        factor = 1.0
    else:
        raise ValueError(f"schedule.policy must be poly, step, cosine, onecycle or constant, got {cfg.policy!r}")
    if it < cfg.warmup_iters:  # mmcv's linear warm-up: scales the regular lr
        factor *= 1 - (1 - it / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(cfg, 0)  # validates the policy before training starts
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
