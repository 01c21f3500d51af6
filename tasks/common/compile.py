"""How the task model runs: ``torch.compile`` (``runtime.compile``) and activation checkpointing
(``runtime.activation_checkpointing``).

``compile_model`` compiles the model in place (``nn.Module.compile``: the module, its parameters, its state-dict
keys, ``predict`` and DDP wrapping stay as they are); the loss and the matcher stay eager. Shapes start static and
a dimension that changes between calls (detection's and panoptic's multi-scale sizes, the last smaller batch) is
made dynamic at its first change (``torch.compile``'s automatic dynamic shapes), so a multi-scale run compiles a
few graphs, not one per size. Train and eval mode are separate graphs. If a graph with dynamic sizes fails to
compile where static ones did, one warning line says so and each new size gets its own static graph (up to
Dynamo's recompile limit, then eager for new sizes); if compiling fails otherwise, one warning line is printed
and the model runs eager from then on. An error of the model itself (a bad input) is raised as in eager.
``CompileStats`` counts the graphs compiled and the seconds spent in calls that compiled, for the log.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .amp import slow_bf16_warning
from .config import COMPILE_MODES, RuntimeConfig


@dataclass
class CompileStats:
    """What compiling cost so far: ``graphs`` compiled (a recompile adds one) and the ``seconds`` of the calls
    that compiled (the compilation dominates them)."""

    graphs: int = 0
    seconds: float = 0.0
    static: bool = False  # dynamic sizes failed to compile: one graph per input size
    fell_back: bool = False


def compile_log(stats: CompileStats | None) -> dict:
    """The train log's compile entries (none for an eager run)."""
    return {} if stats is None else {"compiled_graphs": stats.graphs, "compile_s": round(stats.seconds, 1)}


def _graph_count() -> int:
    """Graphs Dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def compile_model(model: nn.Module, mode: str | None, warn=print, backend="inductor") -> CompileStats | None:
    """Compile ``model`` in place with ``torch.compile(mode=mode)``; ``None`` leaves it eager (returns None).
    Returns the ``CompileStats`` that the compiled calls update; ``warn`` (None: silent) gets the fallback line."""
    if mode is None:
        return None
    if mode not in COMPILE_MODES:
        raise ValueError(f"runtime.compile must be None (eager) or one of {', '.join(map(repr, COMPILE_MODES))}, got {mode!r}")
    stats = CompileStats()
    # What nn.Module.compile sets: Module.__call__ runs this instead of the eager _call_impl.
    model._compiled_call_impl = _CompiledCall(model, mode, backend, stats, warn)
    return stats


class _CompiledCall:
    """The compiled ``model._call_impl`` with its fallbacks. A deep copy of the model (``for_export``) drops it,
    so the copy runs eager instead of calling the original's graphs."""

    def __init__(self, model: nn.Module, mode: str, backend, stats: CompileStats, warn):
        self.model, self.mode, self.backend, self.stats, self.warn = model, mode, backend, stats, warn
        self.compiled = self._make(None)  # None: static first, dynamic at the first change of a size

    def __deepcopy__(self, memo):
        return None

    def _make(self, dynamic):  # a backend other than inductor takes no mode (the tests pass ones that fail)
        options = {"mode": self.mode} if self.backend == "inductor" else {"backend": self.backend}
        return torch.compile(self.model._call_impl, dynamic=dynamic, **options)

    def __call__(self, *args, **kwargs):
        stats = self.stats
        before, start = _graph_count(), time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except _compiler_errors() as e:  # the compiler's failure, not the model's (that is raised as in eager)
            if stats.static or stats.graphs == 0:
                _fall_back(self.model, stats, e, self.warn)
                return self.model._call_impl(*args, **kwargs)
            # A graph with dynamic sizes failed where static ones compiled (inductor cannot always order
            # symbolic strides): from now on one static graph per input size.
            stats.static = True
            self.compiled = self._make(False)
            _warn(self.warn, e, "compiling one graph per input size instead of dynamic sizes")
            return self(*args, **kwargs)
        if _graph_count() > before:
            stats.graphs += _graph_count() - before
            stats.seconds += time.perf_counter() - start
        return out


def _compiler_errors() -> tuple[type[Exception], ...]:
    from torch._dynamo import exc  # imported on first use: an eager run never loads Dynamo

    return exc.BackendCompilerFailed, exc.InternalTorchDynamoError


def _fall_back(model: nn.Module, stats: CompileStats, error: Exception, warn) -> None:
    stats.fell_back = True
    model._compiled_call_impl = None
    _warn(warn, error, "training and evaluating eager instead")


def _warn(warn, error: Exception, consequence: str) -> None:
    cause = getattr(error, "inner_exception", None) or error.__cause__ or error  # the compiler's own error
    text = " ".join(str(cause).split())[:200]
    if warn is not None:
        warn(f"WARNING: torch.compile failed ({type(cause).__name__}: {text}); {consequence}")


def set_activation_checkpointing(model: nn.Module, enable: bool) -> int:
    """Turn recomputation on or off in every submodule that offers it (a ``grad_checkpointing`` attribute:
    the backbones' stages, the heads' heavy parts). Returns how many modules offer it."""
    found = 0
    for module in model.modules():
        if isinstance(getattr(module, "grad_checkpointing", None), bool):
            module.grad_checkpointing = enable
            found += 1
    return found


def apply_runtime(model: nn.Module, runtime: RuntimeConfig, device: torch.device, warn=print) -> CompileStats | None:
    """What ``runtime`` asks of the model, once per run before the first step: the bf16 warning (``amp``),
    activation checkpointing, then ``torch.compile``. Returns the compile statistics (None: eager); ``warn``
    prints the warning lines (None on the processes other than the main one)."""
    line = slow_bf16_warning(runtime.amp, device)
    if line is not None and warn is not None:
        warn(line)
    if runtime.activation_checkpointing:  # False leaves what the model was built with (backbone_args)
        set_activation_checkpointing(model, True)
    return compile_model(model, runtime.compile, warn)
