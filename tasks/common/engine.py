"""The training loop. ``fit`` runs a config to its last iteration, ``train_one_step`` makes one optimizer
step, ``evaluate`` runs a task's evaluator over a dataset, ``evaluate_checkpoint`` evaluates a checkpoint.

The engine drives a ``tasks.common.task.Task`` (made from a config by ``tasks.get_task(cfg)``); every method
it calls is declared there.
"""
from __future__ import annotations

import copy
import json
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import amp
from . import checkpoint as ckpt
from .check_data import preflight
from .compile import apply_runtime, compile_log
from .config import Config, ConfigError, to_dict, validate
from .samplers import ShardSampler, TrainSampler
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
)
from .model import predicting
from .logs import JsonlLog, LossMeter, TensorBoardLog, main_terms, plot_curves, scalar_metrics
from .samples import BadSample, DataError, GuardedCollate, GuardedDataset, GuardedLoader
from .runs import archive_run, check_new_run, claim_work_dir, resume_run
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
    try:
        return amp.autocast(cfg.runtime.amp, device)
    except ValueError as e:
        raise ValueError(f"runtime.{e}") from None


def total_loss(losses: dict) -> torch.Tensor:
    """What is back-propagated: ``losses["loss"]`` when the task gives it (a weighted sum of its terms, e.g.
    Deformable-DETR's), otherwise the sum of the ``loss_*`` terms; other entries are logged statistics."""
    if "loss" in losses:
        return losses["loss"]
    terms = [v for k, v in losses.items() if k.startswith("loss_")]
    if not terms:
        raise ValueError(f"task.loss must return 'loss' or 'loss_<term>' entries, got {sorted(losses)}")
    return sum(terms)


def train_one_step(model, task, batches, optimizer, scaler, cfg: Config, info: DistInfo) -> dict[str, torch.Tensor]:
    """Accumulate ``schedule.grad_accum`` micro-batches, clip, step. Returns the step's values, detached, on the
    device: ``loss`` (what was back-propagated), the task's terms (means over the micro-batches) and, with
    clipping, ``grad_norm``. Nothing here waits for the device; ``LossMeter`` checks the values when read."""
    accum = cfg.schedule.grad_accum
    micro_batches = [next(batches) for _ in range(accum)]
    task.begin_step(micro_batches)  # e.g. loss normalisers over the whole step
    keys, total = None, None
    for micro, batch in enumerate(micro_batches):
        sync = micro == accum - 1 or not hasattr(model, "no_sync")
        with (nullcontext() if sync else model.no_sync()), _autocast(cfg, info.device):
            losses = task.loss(model, batch, info.device)
            loss = total_loss(losses)
        with nullcontext() if sync else model.no_sync():
            scaler.scale(loss / accum).backward()
        values = {"loss": loss, **{k: v for k, v in losses.items() if k != "loss"}}
        if keys is not None and list(values) != keys:
            raise ValueError(f"task.loss must return the same keys every time; got {keys}, then {list(values)}")
        keys = list(values)
        with torch.no_grad():  # one stack for all terms: the per-step bookkeeping stays a few small ops
            vec = torch.stack([v if v.dim() == 0 else v.reshape(()) for v in values.values()]).float() / accum
            total = vec if total is None else total + vec
    out = dict(zip(keys, total.unbind()))
    if cfg.schedule.clip_grad:
        scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        out["grad_norm"] = nn.utils.clip_grad_norm_(params, cfg.schedule.clip_grad).detach()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return out


def evaluate(task, model: nn.Module, loader: DataLoader, device: torch.device, amp_mode: str | None = None) -> dict:
    """``task.evaluate`` in eval mode, without gradients, under ``amp_mode``'s autocast (``tasks.common.amp``:
    the model's convolutions and matrix products in bf16 / fp16, its outputs, post-processing and metrics in
    float32)."""
    with predicting(model), amp.autocast(amp_mode, device):
        return task.evaluate(model, loader, device)


def _val_loader(task, cfg: Config, info: DistInfo) -> GuardedLoader:
    """A sample that cannot be read is a ``DataError`` naming it, raised here, not in a worker (samples.py)."""
    dataset = task.val_dataset()
    return GuardedLoader(
        dataset,
        batch_size=task.val_batch_size,
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
        GuardedDataset(dataset),  # a sample that cannot be read comes back as a BadSample (see samples.py)
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=GuardedCollate(task.collate),
        drop_last=True,
        persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.runtime.seed),
    )


def _meta(cfg: Config, model: nn.Module) -> dict:
    # "module": where the model class is defined, so a task outside tasks/ can be imported to load the checkpoint
    module = type(getattr(model, "module", model)).__module__
    return {"task": cfg.task, "module": module, "model": getattr(model, "config", None), "config": to_dict(cfg)}


def _build(task, cfg: Config):
    """Everything made from the config; a bad value here is a config error, reported in one line."""
    validate(cfg)
    try:
        info = init_distributed(cfg.runtime.device)
        _autocast(cfg, info.device)
        train_loader = _train_loader(task, cfg, info)  # data first: a missing dataset fails before any work
        val_loader = _val_loader(task, cfg, info)
        warnings = preflight(cfg, train_loader.dataset.dataset, val_loader.raw_dataset)  # counts and pairing; no decoding
        for line in warnings if info.is_main else []:
            tqdm.write(f"WARNING: {line}")
        _resolve_epochs(cfg, len(train_loader.dataset), info.world_size)
        _seed(cfg.runtime.seed)  # identical initial weights on every rank
        model = task.build_model()
        task.validate(model)  # the task's limits that depend on the model, e.g. a crop below its minimum
        model = model.to(info.device)
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


def fit(task, cfg: Config, work_dir: str | Path, resume: str | Path | None = None, restart: bool = False,
        pictures=None) -> dict:
    """Train ``cfg`` in ``work_dir``; ``resume`` is a checkpoint to continue from. A work dir that already holds a
    run is refused unless ``resume`` or ``restart`` (which moves that run's files aside; see ``runs.py``); one
    that another live run holds is refused in any case (``runs.claim_work_dir``). ``pictures(model, val_dataset)``
    -> ``[(name, uint8 [H, W, 3])]`` draws a few validation predictions for TensorBoard (``tasks.infer``).
    ``cfg`` itself is not changed (an epoch schedule is resolved on a copy). Returns a summary dict."""
    work_dir, cfg = Path(work_dir), copy.deepcopy(cfg)
    try:
        info = init_distributed(cfg.runtime.device)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    lock = _claim(work_dir, info)  # before anything reads or writes the work dir
    try:
        return _fit(task, cfg, work_dir, resume, restart, pictures)
    finally:
        if lock is not None:
            lock.release()


def _claim(work_dir: Path, info: DistInfo, purpose: str = "training"):
    """Rank 0 locks the work dir (``runs.claim_work_dir``); when it cannot, every rank raises its error."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = claim_work_dir(work_dir, purpose)
        except (ConfigError, ckpt.WriteError) as e:
            error = e
    messages = all_gather_objects(None if error is None else str(error))
    if error is not None:
        raise error
    if messages[0] is not None:
        raise ConfigError(messages[0])
    return lock


@dataclass
class _Run:
    """What the loop's helpers share: the objects of one run and its progress (``done``: the last completed
    iteration, ``best``: the best evaluation so far, as ``best.pth`` records it)."""

    task: Any
    cfg: Config
    info: DistInfo
    work_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    log: JsonlLog
    done: int = 0
    best: dict | None = None
    saved: tuple[Path, int] | None = None  # the last good checkpoint and its iteration


def _fit(task, cfg: Config, work_dir: Path, resume, restart: bool, pictures) -> dict:
    if "tensorboard" in cfg.runtime.loggers:
        TensorBoardLog.check_installed()
    if resume is None:
        check_new_run(work_dir, restart)  # every rank reads the folder before rank 0 changes anything
    info, train_loader, val_loader, model, optimizer, scheduler, scaler = _build(task, cfg)
    compiled = apply_runtime(model, cfg.runtime, info.device, tqdm.write if info.is_main else None)
    start, best, evaluate_first = 0, None, False
    _seed(cfg.runtime.seed + info.rank)  # dropout / drop-path differ between ranks
    if resume is not None:
        start, best, evaluate_first = resume_run(Path(resume), to_dict(cfg), info.rank, model, optimizer, scheduler,
                                                 scaler)
        train_loader.sampler.start = start * cfg.schedule.grad_accum * cfg.data.batch_size
    _check_total_batch(cfg, info)
    net = nn.parallel.DistributedDataParallel(model) if info.world_size > 1 else model
    batches = iter(train_loader)
    log = JsonlLog(work_dir / "log.jsonl")
    saved = (Path(resume), start) if resume is not None else None
    run = _Run(task, cfg, info, work_dir, model, optimizer, scheduler, scaler, log, start, best, saved)
    if info.is_main:
        _prepare_work_dir(work_dir, cfg, log, info, start, archive=restart and resume is None)
    tb = TensorBoardLog(work_dir / "tensorboard", start) if info.is_main and "tensorboard" in cfg.runtime.loggers else None
    stop = _StopRequest()
    result = {"iteration": start, "stopped": None, "metrics": None, "best": best}
    meter = LossMeter(info.device)
    bar = tqdm(total=cfg.schedule.max_iters, initial=start, disable=not info.is_main, dynamic_ncols=True)
    try:
        net.train()
        if evaluate_first:  # the evaluation of this iteration was stopped by a sample that could not be read
            result["metrics"] = _evaluate_run(run, val_loader, tb, pictures)
        tic = time.perf_counter()
        for it in range(start, cfg.schedule.max_iters):
            micro = [next(batches) for _ in range(cfg.schedule.grad_accum)]
            _check_batches(micro, it, run)
            try:
                meter.add(train_one_step(net, task, iter(micro), optimizer, scaler, cfg, info), it + 1)
            except Exception as e:  # e.g. the matcher refusing NaN boxes: the NaN loss before it is the cause
                bad = meter.local_bad()
                if bad is not None:
                    raise _non_finite(bad, run) from e
                raise
            lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            scheduler.step()
            done = result["iteration"] = run.done = it + 1
            bar.update(1)
            evaluate_now = done % cfg.schedule.eval_interval == 0 or done == cfg.schedule.max_iters
            stop_now = all_reduce_sum(torch.tensor([float(stop.requested)])).item() > 0  # all ranks agree
            save_now = done % cfg.schedule.checkpoint_interval == 0 or done == cfg.schedule.max_iters or stop_now
            log_now = done % cfg.schedule.log_interval == 0 or done == start + 1
            if log_now or evaluate_now or save_now:  # never evaluate or save weights a non-finite loss reached
                means, bad = meter.read()
                if bad is not None:
                    raise _non_finite(bad, run)
                if log_now:
                    meter.reset()
                    _log_train(log, bar, info, done, lr, {**means, **compile_log(compiled)},
                               (time.perf_counter() - tic) / (done - start))
                    if tb is not None:
                        tb.train(done, lr, means)
            if evaluate_now:
                result["metrics"] = _evaluate_run(run, val_loader, tb, pictures)
            if save_now:
                _save_last(run)
            if stop_now:
                result["stopped"] = "signal"
                break
    except ckpt.WriteError as e:
        raise e.adding(_last_good(run)) from e.__cause__
    finally:
        stop.restore()
        bar.close()
        if tb is not None:
            tb.close()
        if info.is_main:
            _plot(log, work_dir / "curves.png")
    result["best"] = run.best
    return result


def _evaluate_run(run: _Run, val_loader: GuardedLoader, tb, pictures) -> dict:
    """The evaluation after iteration ``run.done``: logged, metrics.json, best.pth, TensorBoard. A validation
    sample that cannot be read saves the state of ``run.done`` first, marked so that ``--resume`` runs this
    evaluation before the next iteration, and raises ``DataError``."""
    broadcast_buffers(run.model)
    try:
        metrics = evaluate(run.task, run.model, val_loader, run.info.device, run.cfg.runtime.amp)
    except DataError as e:
        if run.info.world_size > 1:  # the other processes wait inside the task's evaluation: no collective save
            raise DataError(f"iteration {run.done}: the evaluation stopped: {e}; {_last_good(run)}") from None
        _save_last(run, evaluate_first=True)
        raise DataError(
            f"iteration {run.done}: the evaluation stopped: {e}; the state after iteration {run.done} is saved in "
            f"{run.work_dir / 'last.pth'}: fix the file, then continue with --resume (it evaluates first)"
        ) from None
    _record_eval(run, metrics)
    if tb is not None:
        tb.val(run.done, metrics, _pictures(pictures, run.model, val_loader.raw_dataset))
    return metrics


def _last_good(run: _Run) -> str:
    if run.saved is None:
        return "no checkpoint was saved before it"
    return f"the last good checkpoint is {run.saved[0]} (iteration {run.saved[1]})"


def _pictures(pictures, model, dataset) -> list:
    """A few validation predictions drawn for TensorBoard, in eval mode; a failure to draw them is reported, not
    fatal."""
    if pictures is None:
        return []
    try:
        with predicting(model):
            return pictures(model, dataset)
    except Exception as e:  # noqa: BLE001 - a picture must not end a run
        tqdm.write(f"warning: no prediction pictures for TensorBoard: {type(e).__name__}: {e}")
        return []


def _check_batches(micro, it: int, run: _Run) -> None:
    """Before iteration ``it + 1``: if any process met a sample it cannot read, every process saves the state of
    the last completed iteration ``run.done`` (so ``--resume`` continues once the file is fixed) and raises
    ``DataError`` with the first bad sample's message."""
    bad = next((b.message for b in micro if isinstance(b, BadSample)), None)
    if run.info.world_size > 1:
        if all_reduce_sum(torch.tensor([float(bad is not None)])).item() == 0:
            return
        bad = next(m for m in all_gather_objects(bad) if m is not None)
    elif bad is None:
        return
    _save_last(run)
    raise DataError(
        f"iteration {it + 1}: a training sample cannot be read: {bad}; the state after iteration {run.done} is saved "
        f"in {run.work_dir / 'last.pth'}: fix the file, then continue with --resume"
    )


def _prepare_work_dir(work_dir: Path, cfg: Config, log: JsonlLog, info: DistInfo, start: int, archive: bool) -> None:
    """Rank 0, before the first iteration: move an earlier run aside (restart), delete the temporary files of
    killed writes (they can keep a full disk full), write the resolved config and the log's start record."""
    moved = archive_run(work_dir) if archive else None
    if moved is not None:
        tqdm.write(f"the previous run in {work_dir} moved to {moved}")
    ckpt.remove_stale_temps(work_dir)
    ckpt.write_text_atomic(work_dir / "config.json", json.dumps(to_dict(cfg), indent=2))
    log.write({
        "mode": "start", "iter": start, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "world_size": info.world_size,
        "device": str(info.device),
    })


def _log_train(log: JsonlLog, bar, info: DistInfo, done: int, lr: float, means: dict, sec: float) -> None:
    """A train record (means over processes and over the iterations since the last one) and the progress bar's
    total plus main terms."""
    if not info.is_main:
        return
    log.write({"mode": "train", "iter": done, "lr": lr, **means, "sec_per_iter": sec})
    shown = {k: f"{means[k]:.4f}" for k in ("loss", *main_terms(means)) if k in means}
    bar.set_postfix(**shown, lr=f"{lr:.3g}")


def _non_finite(bad: tuple[int, dict], run: _Run) -> NonFiniteLoss:
    iteration, values = bad
    shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
    where = _last_good(run)
    return NonFiniteLoss(f"non-finite loss at iteration {iteration}" + (f" ({shown})" if shown else "") + f"; {where}")


def _plot(log: JsonlLog, path: Path) -> None:
    """Draw the curves; a failure here (e.g. the disk is full) is reported and never hides the run's own error."""
    try:
        if log.path.is_file():
            plot_curves(log.read(), path)
    except Exception as e:  # noqa: BLE001 - a figure must not replace the real outcome of the run
        tqdm.write(f"warning: {path} was not updated: {e}")


def _record_eval(run: _Run, metrics: dict) -> None:
    """Log an evaluation, write metrics.json, and keep best.pth by the task's main metric (``run.best``)."""
    if not run.info.is_main:
        return
    task, done, best = run.task, run.done, run.best
    value = metrics[task.main_metric]
    run.log.write({"mode": "val", "iter": done, "metrics": metrics})
    tqdm.write(f"iteration {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(metrics).items()))
    ckpt.write_text_atomic(run.work_dir / "metrics.json", json.dumps({"iteration": done, **metrics}, indent=2))
    better = best is None or (value > best["value"] if task.higher_is_better else value < best["value"])
    if better and not math.isnan(value):
        run.best = {"metric": task.main_metric, "value": value, "iteration": done}
        state = {"model": run.model.state_dict(), "meta": _meta(run.cfg, run.model), "best": run.best}
        ckpt.save_atomic(state, run.work_dir / "best.pth")


def _save_last(run: _Run, evaluate_first: bool = False) -> None:
    """``last.pth``: the full training state after iteration ``run.done`` (``evaluate_first``: its evaluation is
    still to run, see ``_evaluate_run``); it becomes ``run.saved``."""
    rng = [ckpt.rng_state()]
    if run.info.world_size > 1:  # every rank's generators, so each resumes its own stream
        rng = all_gather_objects(rng[0])
    if run.info.is_main:
        state = {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "iteration": run.done,
            "best": run.best,
            "rng": rng,
            "meta": _meta(run.cfg, run.model),
            "evaluate_first": evaluate_first,
        }
        ckpt.save_atomic(state, run.work_dir / "last.pth")
    barrier()
    run.saved = (run.work_dir / "last.pth", run.done)


def _differences(config, model) -> str:
    """``mean=(...) (checkpoint: (...)), size=...``: the fields where two preprocessings differ."""
    ours, theirs = config.to_dict(), model.to_dict()
    return ", ".join(f"{k}={ours[k]} (checkpoint: {theirs[k]})" for k in ours if ours[k] != theirs[k])


def _checked_amp(cfg: Config, device: torch.device) -> str:
    try:
        return amp.check_amp(cfg.runtime.amp, device)
    except ValueError as e:
        raise ConfigError(f"runtime.{e}") from None


def evaluate_checkpoint(task, cfg: Config, checkpoint: str | Path, work_dir: str | Path) -> dict:
    """Evaluate a checkpoint on the config's validation set; writes ``test_metrics.json`` in ``work_dir``. The
    work dir is locked as training locks it: an evaluation into the work dir of a live training or of another
    evaluation is refused (``runs.WorkDirBusy``, naming the holder) before anything is read."""
    info = init_distributed(cfg.runtime.device)
    lock = _claim(Path(work_dir), info, "evaluation")
    try:
        return _evaluate_checkpoint(task, cfg, checkpoint, Path(work_dir), info)
    finally:
        if lock is not None:
            lock.release()


def _evaluate_checkpoint(task, cfg: Config, checkpoint: str | Path, work_dir: Path, info: DistInfo) -> dict:
    amp_mode = _checked_amp(cfg, info.device)
    try:
        model = task.load_model(checkpoint)
    except (RuntimeError, KeyError, EOFError) as e:  # what torch raises for a file it cannot parse
        raise ValueError(f"cannot load {checkpoint}: {e}") from e
    model = model.to(info.device)
    apply_runtime(model, cfg.runtime, info.device, print if info.is_main else None)
    own, described = getattr(model, "preprocessing", None), task.preprocessing()
    if own is not None and described is not None and own != described and info.is_main:
        print(f"note: the config's data section describes preprocessing {_differences(described, own)}; "
              f"evaluating with the checkpoint's own")
    task.model_preprocessing = own
    metrics = evaluate(task, model, _val_loader(task, cfg, info), info.device, amp_mode)
    if info.is_main:
        out = {"checkpoint": str(checkpoint), **metrics}
        ckpt.write_text_atomic(work_dir / "test_metrics.json", json.dumps(out, indent=2))
    return metrics
