"""Configs: plain Python files that define ``config = Config(...)`` from typed dataclasses.

A config reads top to bottom; reuse goes through preset functions (``adamw(...)``, ``poly(...)``,
``ade20k(...)``), never file inheritance. ``--cfg-options a.b=value`` sets any field by dotted path;
the value is parsed as a Python literal (a bare word stays a string), an unknown key is an error that
lists the valid keys at its level, and the value must fit the field's type.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import runpy
import traceback
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


LOGGERS = ("tensorboard",)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


class ConfigError(ValueError):
    """A config that cannot be loaded or an option that does not fit it; the message says why."""


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9  # sgd only
    # Learning-rate multipliers by submodule path, e.g. {"head": 10.0} or {"backbone": 0.1}; the longest
    # matching path wins. Parameters are assigned by module identity, never by name substrings.
    lr_mults: dict[str, float] = field(default_factory=dict)
    decay_norm_and_bias: bool = False  # False: no weight decay on normalisation layers and biases


@dataclass
class ScheduleConfig:
    # Set exactly one of max_iters and epochs. Epoch-based recipes: max_iters = epochs x (training samples //
    # total batch), computed from the real dataset size when training starts, and epoch_milestones become step
    # milestones the same way. Setting both is an error (never a silent overwrite).
    max_iters: int | None = None
    epochs: int | None = None
    epoch_milestones: tuple[int, ...] = ()
    policy: str = "poly"  # poly | step | cosine | onecycle | constant
    power: float = 1.0  # poly / onecycle annealing exponent
    min_lr_ratio: float = 0.0  # the final lr as a fraction of the base lr (poly, cosine)
    warmup_iters: int = 0  # linear warm-up (all policies but onecycle)
    warmup_ratio: float = 1e-6  # the warm-up's starting lr as a fraction
    milestones: tuple[int, ...] = ()  # step: iterations where the lr is multiplied by gamma
    gamma: float = 0.1
    onecycle_start_ratio: float = 0.3  # onecycle: lr rises from ratio·lr to lr, then falls back to it
    onecycle_peak: float = 0.5  # onecycle: fraction of max_iters where the peak is reached
    grad_accum: int = 1  # micro-batches per optimizer step
    total_batch: int | None = None  # the recipe's total batch; a run with another total warns
    clip_grad: float | None = None  # max global gradient norm
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    log_interval: int = 20


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 | fp16 (fp16 on CUDA only, with a gradient scaler)
    # Experiment trackers besides log.jsonl and curves.png: ("tensorboard",) writes <work dir>/tensorboard/
    # (pip install "densepred[tensorboard]").
    loggers: tuple[str, ...] = ()
    # torch.compile of the task model (tasks/common/compile.py): None (eager) or a torch.compile mode; eager
    # stays the default because compiling pays only where the step is long enough (BENCHMARKS.md).
    compile: str | None = None
    # Recompute activations in the backward instead of keeping them (backbone blocks, the heads' heavy parts):
    # less memory, about one more forward's time, the same gradients.
    activation_checkpointing: bool = False


@dataclass
class Config:
    task: str  # segmentation | depth | detection
    model: Any
    data: Any
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def adamw(lr: float, weight_decay: float = 0.01, **kwargs) -> OptimizerConfig:
    return OptimizerConfig(name="adamw", lr=lr, weight_decay=weight_decay, **kwargs)


def poly(max_iters: int, warmup_iters: int = 0, power: float = 1.0, **kwargs) -> ScheduleConfig:
    return ScheduleConfig(max_iters=max_iters, policy="poly", warmup_iters=warmup_iters, power=power, **kwargs)


def load_config(path: str | Path) -> Config:
    """Execute a config file and return its ``config``; every failure is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        namespace = runpy.run_path(str(p))
    except SyntaxError as e:
        raise ConfigError(f"{p}, line {e.lineno}: {e.msg}") from e
    except Exception as e:  # a bad import, a typo in a name or argument: say where in the config file
        raise ConfigError(f"{_where(p, e)}: {type(e).__name__}: {e}{_valid_fields(p, e)}") from e
    cfg = namespace.get("config")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{p} must define `config = Config(...)`, found {type(cfg).__name__}")
    return cfg


def _where(path: Path, error: BaseException) -> str:
    """``path, line N`` for the innermost line of the config file in ``error``'s traceback."""
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if Path(frame.f_code.co_filename).resolve() == path.resolve():
            line = lineno
    return f"{path}, line {line}" if line else str(path)


def _valid_fields(path: Path, error: BaseException) -> str:
    """``; valid: a, b, ...`` when ``error`` is a dataclass called with an unknown keyword in the config file."""
    match = re.match(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(error))
    if not isinstance(error, TypeError) or match is None:
        return ""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if Path(frame.f_code.co_filename).resolve() == path.resolve():
            cls = frame.f_globals.get(match.group(1))
            if dataclasses.is_dataclass(cls):
                return f"; valid: {', '.join(f.name for f in dataclasses.fields(cls))}"
    return ""


def source_line(path: str | Path, value: str) -> str:
    """``path, line N`` for the first line of a config file that holds the string literal ``value`` (e.g. a
    misspelt task name), or ``path`` alone."""
    p = Path(path)
    if p.is_file():
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if f'"{value}"' in line or f"'{value}'" in line:
                return f"{p}, line {n}"
    return str(p)


def apply_options(cfg: Config, options: list[str]) -> Config:
    """Apply ``KEY=VALUE`` strings (``--cfg-options``) in place; returns ``cfg``."""
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"--cfg-options expects KEY=VALUE, got {option!r}")
        set_option(cfg, key, _parse(raw))
    return cfg


def _parse(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word or a path: keep the string


def set_option(cfg: Config, key: str, value) -> None:
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        last = i == len(parts) - 1
        if isinstance(obj, dict):
            if not last:
                raise ConfigError(f"{key}: {where} is a dict of values, not a section")
            obj[part] = value
            return
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"{key}: {where} is a value, not a section")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise ConfigError(f"unknown key {'.'.join(parts[: i + 1])!r}; valid keys at {where}: {', '.join(names)}")
        if last:
            hint = typing.get_type_hints(type(obj)).get(part, Any)
            setattr(obj, part, _coerce(key, value, hint, getattr(obj, part)))
        else:
            obj = getattr(obj, part)


def _coerce(key: str, value, hint, current):
    """Check ``value`` against a field's type hint (int → float and list → tuple are converted)."""
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{key} is a section; set its keys instead ({key}.<name>=...)")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    expected = origin or hint
    if expected is Any:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple and isinstance(value, list):
        value = tuple(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{key} expects {getattr(expected, '__name__', expected)}, got {value!r}")
    return value


def validate(cfg: Config) -> None:
    """Check the values every config shares, so a bad one fails before any work with its dotted name."""
    _check_length(cfg.schedule)
    positive = {
        "schedule.max_iters": cfg.schedule.max_iters if cfg.schedule.epochs is None else 1,
        "schedule.eval_interval": cfg.schedule.eval_interval,
        "schedule.checkpoint_interval": cfg.schedule.checkpoint_interval,
        "schedule.log_interval": cfg.schedule.log_interval,
        "schedule.grad_accum": cfg.schedule.grad_accum,
        "data.batch_size": getattr(cfg.data, "batch_size", None),
    }
    for key, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be an int >= 1, got {value!r}")
    workers = getattr(cfg.data, "num_workers", None)
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"data.num_workers must be an int >= 0, got {workers!r}")
    if cfg.optimizer.lr <= 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    unknown = [name for name in cfg.runtime.loggers if name not in LOGGERS]
    if not isinstance(cfg.runtime.loggers, tuple) or unknown:
        raise ConfigError(f"runtime.loggers must be a tuple of {', '.join(map(repr, LOGGERS))}, got {cfg.runtime.loggers!r}")
    if cfg.runtime.compile is not None and cfg.runtime.compile not in COMPILE_MODES:
        raise ConfigError(f"runtime.compile must be None (eager) or one of {', '.join(map(repr, COMPILE_MODES))}, "
                          f"got {cfg.runtime.compile!r}")
    if not isinstance(cfg.runtime.activation_checkpointing, bool):
        raise ConfigError(f"runtime.activation_checkpointing must be True or False, got {cfg.runtime.activation_checkpointing!r}")


def _check_length(sched: ScheduleConfig) -> None:
    """Exactly one of ``max_iters`` and ``epochs``; epoch milestones only with epochs."""
    if sched.max_iters is not None and sched.epochs is not None:
        also = " schedule.epoch_milestones=()" if sched.epoch_milestones else ""
        raise ConfigError(
            f"schedule.max_iters={sched.max_iters} and schedule.epochs={sched.epochs} are both set; set one "
            f"(for iterations: --cfg-options schedule.epochs=None{also} schedule.max_iters={sched.max_iters})"
        )
    if sched.max_iters is None and sched.epochs is None:
        raise ConfigError("set schedule.max_iters (iterations) or schedule.epochs (passes over the training set)")
    if sched.epochs is not None and (isinstance(sched.epochs, bool) or not isinstance(sched.epochs, int) or sched.epochs < 1):
        raise ConfigError(f"schedule.epochs must be an int >= 1, got {sched.epochs!r}")
    if sched.epochs is None and sched.epoch_milestones:
        raise ConfigError(
            f"schedule.epoch_milestones={tuple(sched.epoch_milestones)} needs schedule.epochs; with schedule.max_iters "
            "give iteration milestones instead (schedule.milestones=(...) schedule.epoch_milestones=())"
        )


def to_dict(cfg) -> dict:
    """The resolved config as JSON-friendly data (tuples become lists)."""
    return dataclasses.asdict(cfg)
