"""Checkpoints that survive being killed at any moment: write to a temporary file, fsync, rename.

Every file the engine and the tools write (checkpoints, metrics JSON, the curves picture, the resolved config)
goes through ``_write_atomic``; a write that fails is one ``WriteError`` naming the file, the cause and what was
kept, whether the file system's error arrives as an ``OSError`` or inside the ``RuntimeError`` that
``torch.save`` wraps it in ("unexpected pos ...", "PytorchStreamWriter failed writing file ...").
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from backbones.weights import torch_load_reason


class WriteError(OSError):
    """A file could not be written (disk full, read-only, quota ...); the previous version is unchanged.
    ``kept`` says what the reader still has (default: the previous file, or that nothing was written)."""

    def __init__(self, path: str | Path, cause: OSError, kept: str | None = None):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        if kept is None:
            kept = "nothing was written"
            if Path(path).is_file():
                kept = f"the previous {Path(path).name} is kept unchanged"
        self.kept = kept

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror} ({self.kept})"

    def adding(self, kept: str) -> "WriteError":
        """The same error, with ``kept`` added to what it says was kept (e.g. the last good checkpoint)."""
        error = WriteError(self.filename, self, f"{self.kept}; {kept}")
        error.__cause__ = self.__cause__
        return error


_TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed writing", "file write failed", "unexpected pos")


def write_failure(error: BaseException) -> OSError | None:
    """The file system's error behind ``error``: itself if an OSError; for the RuntimeError ``torch.save`` raises,
    the OSError it wraps (its context), else an OSError with torch's message when that says a write failed.
    None for anything else (a bug keeps its traceback)."""
    if isinstance(error, OSError):
        return error
    if not isinstance(error, RuntimeError):
        return None
    inner = error.__cause__ or error.__context__
    while inner is not None:
        if isinstance(inner, OSError):
            return inner
        inner = inner.__cause__ or inner.__context__
    text = " ".join(str(error).split())
    return OSError(text) if any(f in text for f in _TORCH_WRITE_FAILURES) else None


def os_error_line(error: OSError) -> str:
    """``<path>: <reason>`` for an OSError, on one line."""
    reason = error.strerror or str(error)
    where = error.filename if error.filename is not None else ""
    return " ".join(f"{where}: {reason}".split()) if where else " ".join(reason.split())


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def _write_atomic(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``:
    readers only ever see the old or the complete new file, even if the process is killed mid-write.
    On any failure the temporary file is removed; a write failure (``write_failure``) becomes a ``WriteError``
    naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)  # a half-written file would keep a full disk full
        except OSError:
            pass  # e.g. a read-only folder: the write's own error below is the one to report
        cause = write_failure(e)
        if cause is not None and not isinstance(e, WriteError):
            raise WriteError(path, cause) from e
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise WriteError(path, e, f"{path.name} is complete, but its folder could not be synced") from e


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp<pid>``) that processes which no longer run left in
    ``folder`` (killed mid-write); a live process's file is kept. Returns the removed paths."""
    removed = []
    for p in Path(folder).glob(".*.tmp*") if Path(folder).is_dir() else ():
        match = _TEMP.match(p.name)
        if match and p.is_file() and not _alive(int(match["pid"])):
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                raise WriteError(p, e) from e
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def save_atomic(obj, path: str | Path) -> None:
    _write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))


def load(path: str | Path) -> dict:
    """A checkpoint as a dict (``torch.load`` with ``weights_only=True``). A missing file is a
    FileNotFoundError, an unreadable one (truncated, not a checkpoint) a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        reason = torch_load_reason(e)
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not written by torch.save): {reason}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def rng_state() -> dict:
    """Every random generator training touches, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
