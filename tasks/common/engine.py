"""The training loop. ``fit`` runs a config to its last iteration, ``train_one_step`` makes one optimizer
step, ``evaluate`` runs a task's evaluator over a dataset, ``evaluate_checkpoint`` evaluates a checkpoint.

A task is a small object made from a config (``tasks.get_task(cfg)``; see ``tasks/segmentation/task.py``)::

    main_metric: str; higher_is_better: bool
    build_model() -> nn.Module               (with a ``config`` dict that rebuilds the architecture)
    load_model(path) -> nn.Module            (a checkpoint of ours or a Hugging Face folder)
    train_dataset() / val_dataset()          (the training set is indexed by (index, seed) keys)
    collate(samples) -> batch
    loss(model, batch, device) -> {"loss_<term>": Tensor}
    evaluate(model, loader, device) -> {metric: float | list}   (gathers across processes)
    metrics_table(metrics) -> str
"""
from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, ConfigError, to_dict, validate
from .data import ShardSampler, TrainSampler
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
)
from .logs import JsonlLog, plot_curves, scalar_metrics
from .optim import build_optimizer, build_scheduler


class NonFiniteLoss(RuntimeError):
    """Training stopped because a loss was NaN or infinite."""


class _StopRequest:
    """SIGTERM / SIGINT ask the loop to save and stop after the current iteration; a second signal kills."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(cfg: Config, device: torch.device):
    amp = cfg.runtime.amp
    if amp == "none":
        return nullcontext()
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"runtime.amp must be none, bf16 or fp16, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("runtime.amp='fp16' needs CUDA; use 'bf16' on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_one_step(model, task, batches, optimizer, scaler, cfg: Config, info: DistInfo, iteration: int) -> dict:
    """Accumulate ``schedule.grad_accum`` micro-batches, clip, step. Returns the mean loss terms (floats)."""
    accum = cfg.schedule.grad_accum
    totals: dict[str, float] = {}
    for micro in range(accum):
        batch = next(batches)
        sync = micro == accum - 1 or not hasattr(model, "no_sync")
        with (nullcontext() if sync else model.no_sync()), _autocast(cfg, info.device):
            losses = task.loss(model, batch, info.device)
            loss = sum(losses.values())
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0])
        if all_reduce_sum(bad).item() > 0:
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLoss(f"non-finite loss at iteration {iteration + 1} (micro-batch {micro}): {values}")
        with nullcontext() if sync else model.no_sync():
            scaler.scale(loss / accum).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) / accum
    if cfg.schedule.clip_grad:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        totals["grad_norm"] = float(nn.utils.clip_grad_norm_(params, cfg.schedule.clip_grad))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return totals


def evaluate(task, model: nn.Module, loader: DataLoader, device: torch.device) -> dict:
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        metrics = task.evaluate(model, loader, device)
    model.train(was_training)
    return metrics


def _val_loader(task, cfg: Config, info: DistInfo) -> DataLoader:
    dataset = task.val_dataset()
    return DataLoader(
        dataset,
        batch_size=getattr(cfg.data, "val_batch_size", 1),
        sampler=ShardSampler(len(dataset), info.rank, info.world_size),
        num_workers=cfg.data.num_workers,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(0),
    )


def _train_loader(task, cfg: Config, info: DistInfo) -> DataLoader:
    """The sampler starts at 0; a resumed run moves ``loader.sampler.start`` before the first iterator."""
    dataset = task.train_dataset()
    sampler = TrainSampler(len(dataset), seed=cfg.runtime.seed, rank=info.rank, world_size=info.world_size)
    return DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=task.collate,
        drop_last=True,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.runtime.seed),
    )


def _meta(cfg: Config, model: nn.Module) -> dict:
    return {"task": cfg.task, "model": getattr(model, "config", None), "config": to_dict(cfg)}


def _build(task, cfg: Config):
    """Everything made from the config; a bad value here is a config error, reported in one line."""
    validate(cfg)
    try:
        info = init_distributed(cfg.runtime.device)
        _autocast(cfg, info.device)
        train_loader = _train_loader(task, cfg, info)  # data first: a missing dataset fails before any work
        val_loader = _val_loader(task, cfg, info)
        _resolve_epochs(cfg, len(train_loader.dataset), info.world_size)
        _seed(cfg.runtime.seed)  # identical initial weights on every rank
        model = task.build_model().to(info.device)
        if info.world_size > 1 and info.device.type == "cuda":  # SyncBN needs CUDA; one process: plain BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        optimizer = build_optimizer(model, cfg.optimizer)
        scheduler = build_scheduler(optimizer, cfg.schedule)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.runtime.amp == "fp16")
    return info, train_loader, val_loader, model, optimizer, scheduler, scaler


def _resolve_epochs(cfg: Config, num_samples: int, world_size: int) -> None:
    """Turn an epoch-based schedule into iterations for this dataset and total batch (in place)."""
    sched = cfg.schedule
    if sched.epochs is None:
        return
    per_epoch = num_samples // (cfg.data.batch_size * world_size * sched.grad_accum)
    if per_epoch < 1:
        raise ValueError(f"schedule.epochs: {num_samples} training samples are less than one total batch")
    sched.max_iters = sched.epochs * per_epoch
    if sched.epoch_milestones:
        sched.milestones = tuple(e * per_epoch for e in sched.epoch_milestones)


def _check_total_batch(cfg: Config, info: DistInfo) -> None:
    total = cfg.data.batch_size * info.world_size * cfg.schedule.grad_accum
    if info.is_main and cfg.schedule.total_batch and total != cfg.schedule.total_batch:
        tqdm.write(
            f"WARNING: total batch {total} (data.batch_size {cfg.data.batch_size} x {info.world_size} processes x "
            f"schedule.grad_accum {cfg.schedule.grad_accum}) differs from the recipe's {cfg.schedule.total_batch}; "
            "the learning rate and results will differ from the reference"
        )


def fit(task, cfg: Config, work_dir: str | Path, resume: str | Path | None = None) -> dict:
    """Train ``cfg`` in ``work_dir``; ``resume`` is a checkpoint to continue from. Returns a summary dict."""
    work_dir = Path(work_dir)
    info, train_loader, val_loader, model, optimizer, scheduler, scaler = _build(task, cfg)
    start, best = 0, None
    _seed(cfg.runtime.seed + info.rank)  # dropout / drop-path differ between ranks
    if resume is not None:
        state = ckpt.load(resume)
        for obj, key in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
            obj.load_state_dict(state[key])
        start, best, rng = state["iteration"], state.get("best"), state["rng"]
        ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
        train_loader.sampler.start = start * cfg.schedule.grad_accum * cfg.data.batch_size
    _check_total_batch(cfg, info)
    net = nn.parallel.DistributedDataParallel(model) if info.world_size > 1 else model
    batches = iter(train_loader)
    log = JsonlLog(work_dir / "log.jsonl")
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_text_atomic(work_dir / "config.json", json.dumps(to_dict(cfg), indent=2))
        log.write({"mode": "start", "iter": start, "world_size": info.world_size, "device": str(info.device)})
    stop = _StopRequest()
    result = {"iteration": start, "stopped": None, "metrics": None, "best": best}
    bar = tqdm(total=cfg.schedule.max_iters, initial=start, disable=not info.is_main, dynamic_ncols=True)
    try:
        net.train()
        tic = time.perf_counter()
        for it in range(start, cfg.schedule.max_iters):
            losses = train_one_step(net, task, batches, optimizer, scaler, cfg, info, it)
            lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            scheduler.step()
            done = result["iteration"] = it + 1
            loss = sum(v for k, v in losses.items() if k.startswith("loss"))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
            if info.is_main and (done % cfg.schedule.log_interval == 0 or done == start + 1):
                sec = (time.perf_counter() - tic) / (done - start)
                log.write({"mode": "train", "iter": done, "lr": lr, "loss": loss, **losses, "sec_per_iter": sec})
            if done % cfg.schedule.eval_interval == 0 or done == cfg.schedule.max_iters:
                broadcast_buffers(model)
                metrics = evaluate(task, model, val_loader, info.device)
                best = _record_eval(task, cfg, model, work_dir, log, info, done, metrics, best)
                result["metrics"], result["best"] = metrics, best
            stop_now = all_reduce_sum(torch.tensor([float(stop.requested)])).item() > 0  # all ranks agree
            if done % cfg.schedule.checkpoint_interval == 0 or done == cfg.schedule.max_iters or stop_now:
                _save_last(work_dir, model, optimizer, scheduler, scaler, cfg, info, done, best)
            if stop_now:
                result["stopped"] = "signal"
                break
    finally:
        stop.restore()
        bar.close()
        if info.is_main and log.path.is_file():
            plot_curves(log.read(), work_dir / "curves.png")
    return result


def _record_eval(task, cfg, model, work_dir, log, info, done, metrics, best):
    """Log an evaluation, write metrics.json, and keep best.pth by the task's main metric."""
    if not info.is_main:
        return best
    value = metrics[task.main_metric]
    log.write({"mode": "val", "iter": done, "metrics": metrics})
    tqdm.write(f"iteration {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(metrics).items()))
    ckpt.write_text_atomic(work_dir / "metrics.json", json.dumps({"iteration": done, **metrics}, indent=2))
    better = best is None or (value > best["value"] if task.higher_is_better else value < best["value"])
    if better and not math.isnan(value):
        best = {"metric": task.main_metric, "value": value, "iteration": done}
        ckpt.save_atomic({"model": model.state_dict(), "meta": _meta(cfg, model), "best": best}, work_dir / "best.pth")
    return best


def _save_last(work_dir, model, optimizer, scheduler, scaler, cfg, info, done, best) -> None:
    rng = [ckpt.rng_state()]
    if info.world_size > 1:  # every rank's generators, so each resumes its own stream
        rng = all_gather_objects(rng[0])
    if info.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": done,
            "best": best,
            "rng": rng,
            "meta": _meta(cfg, model),
        }
        ckpt.save_atomic(state, work_dir / "last.pth")
    barrier()


def evaluate_checkpoint(task, cfg: Config, checkpoint: str | Path, work_dir: str | Path) -> dict:
    """Evaluate a checkpoint on the config's validation set; writes ``test_metrics.json`` in ``work_dir``."""
    info = init_distributed(cfg.runtime.device)
    model = task.load_model(checkpoint).to(info.device)
    metrics = evaluate(task, model, _val_loader(task, cfg, info), info.device)
    if info.is_main:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        out = {"checkpoint": str(checkpoint), **metrics}
        ckpt.write_text_atomic(Path(work_dir) / "test_metrics.json", json.dumps(out, indent=2))
    return metrics
