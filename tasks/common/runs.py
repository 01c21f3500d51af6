"""What a work dir may hold, and what a run may do to it.

The rule: a new run never destroys another. ``fit`` refuses to start a new run in a work dir that already
holds one (``last.pth``, ``best.pth`` or ``log.jsonl``) and says how to go on: continue it (``resume``),
or start over (``restart``), which first moves the earlier run's files into
``<work dir>/previous/<time of its last write>/`` — nothing is deleted — or use another work dir. A resumed
run appends to the same log; the curves drop the iterations it does again (``logs.current_run``).

One run at a time: ``claim_work_dir`` takes an exclusive lock on ``<work dir>/.lock`` before the run reads or
writes anything there (a training — new, ``--resume`` and ``--restart`` alike — or an evaluation by
``tools/test.py``) and holds it until the run ends; a second one is refused with one line naming the holder
(pid, host and what it does, which the holder writes into the file).
The lock is the kernel's (``flock``): it goes away with its process, however that process ends, so a lock left
by a dead run never blocks, and no check-then-create race exists (``flock`` is atomic). On NFS, Linux maps
``flock`` onto the server's byte-range locks, so runs on several machines sharing the work dir exclude each
other too.

Resuming checks the checkpoint before loading anything: an unreadable file, a weights-only ``best.pth`` and
a model that no longer matches the config are each one ``ConfigError`` that names the file and what differs;
for an unreadable one it also says how to go on (``--restart``, from ``best.pth``'s weights or from scratch).
"""
from __future__ import annotations

import datetime
import fcntl
import os
import socket
import time
from pathlib import Path

from . import checkpoint as ckpt
from .config import ConfigError

RUN_MARKERS = ("last.pth", "best.pth", "log.jsonl")  # any of these: the folder holds a run
RUN_FILES = (*RUN_MARKERS, "config.json", "metrics.json", "curves.png", "test_metrics.json")
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "iteration", "rng")
_SHOWN = 4  # differences listed in a message; the rest are counted


LOCK_FILE = ".lock"


class RunExistsError(ConfigError):
    """The work dir holds a run and the caller asked for neither resume nor restart."""


class WorkDirBusy(ConfigError):
    """Another live process holds the work dir's lock."""


class WorkDirLock:
    """The held lock of a work dir (``claim_work_dir``); ``release()`` (or the end of the process) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Delete the lock file, then unlock: a process that opened the file meanwhile finds its lock on a deleted
        file and tries again (``claim_work_dir``), so the folder is left as the run found it."""
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # the lock itself still goes with the descriptor
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def claim_work_dir(work_dir: str | Path, purpose: str = "training") -> WorkDirLock:
    """Create ``work_dir`` if needed and lock it for this process (``purpose``: what it does there, shown to
    the runs it refuses). ``WorkDirBusy`` (naming the holder's pid, host and purpose) when a live run holds it;
    a ``checkpoint.WriteError`` naming the path and the reason when the folder
    cannot be created or written (a path that is a file, a read-only file system, ``/sys``). The other run's
    files, including the lock file's content, are left as they are."""
    work_dir = Path(work_dir)
    path = work_dir / LOCK_FILE
    while True:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ckpt.WriteError(e.filename or work_dir, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, {purpose}\n".encode(), 0)
                return WorkDirLock(path, fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkDirBusy(
                f"{work_dir} is in use by another run ({holder}); wait for it to end, stop it, or choose another "
                "--work-dir"
            ) from None
        except OSError as e:
            os.close(fd)
            raise ckpt.WriteError(path, e) from e
        os.close(fd)  # the holder deleted the file between our open and our lock: lock the new one


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int, wait: float = 1.0) -> str:
    """The holder's ``pid N on host H``; it writes that just after locking, so wait a moment for it."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if text or time.monotonic() > deadline:
            return text or "a process that has not written its pid yet"
        time.sleep(0.02)


def check_new_run(work_dir: str | Path, restart: bool) -> None:
    """Raise RunExistsError if ``work_dir`` holds a run that a new run would overwrite (unless ``restart``)."""
    work_dir = Path(work_dir)
    found = [name for name in RUN_MARKERS if (work_dir / name).is_file()]
    if not found or restart:
        return
    how = "continue it with --resume, " if "last.pth" in found else ""
    raise RunExistsError(
        f"{work_dir} already holds a run ({', '.join(found)}); {how}start over with --restart (the old files move "
        f"to {work_dir / 'previous'}/), or choose another --work-dir"
    )


def archive_run(work_dir: str | Path) -> Path | None:
    """Move the run files of ``work_dir`` into ``previous/<YYYYmmdd_HHMMSS>/`` (the time of the newest one);
    returns that folder, or None when there was nothing to move."""
    work_dir = Path(work_dir)
    files = [work_dir / name for name in RUN_FILES if (work_dir / name).is_file()]
    if not files:
        return None
    stamp = datetime.datetime.fromtimestamp(max(f.stat().st_mtime for f in files)).strftime("%Y%m%d_%H%M%S")
    target, n = work_dir / "previous" / stamp, 1
    while target.exists():
        target, n = work_dir / "previous" / f"{stamp}_{n}", n + 1
    try:
        target.mkdir(parents=True)
        for f in files:
            os.replace(f, target / f.name)  # same file system: a rename, nothing is copied
    except OSError as e:
        raise ckpt.WriteError(e.filename or target, e) from e
    return target


def load_resume_state(path: str | Path, config_now: dict, model) -> dict:
    """The checkpoint at ``path`` for resuming ``model`` (built from ``config_now``, ``config.to_dict``), checked:
    readable, a full training state (not weights only), and the same model keys and shapes."""
    path = Path(path)
    try:
        state = ckpt.load(path)
    except FileNotFoundError as e:
        raise ConfigError(f"cannot resume: {e}") from e
    except ValueError as e:
        raise ConfigError(f"cannot resume: {e}; {_ways_on(path)}") from e
    missing = [k for k in RESUME_KEYS if k not in state]
    if "model" not in state or missing:
        raise ConfigError(
            f"cannot resume from {path}: it holds model weights only (no {', '.join(missing) or 'model'}), like best.pth; "
            "resume from a last.pth, or start a new run from these weights with --cfg-options model.weights=<path>"
        )
    changes = config_changes(state.get("meta", {}).get("config"), config_now)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state["model"].items()}
    if ours != theirs:
        model_changes = [c for c in changes if c.startswith("model.")] or changes
        raise ConfigError(
            f"cannot resume from {path}: the model differs from the checkpoint's ("
            + "; ".join(filter(None, [listed("config", model_changes), listed("weights", _weight_changes(theirs, ours))]))
            + ")"
        )
    return state


def _ways_on(path: Path) -> str:
    """How to go on when ``path`` cannot be read, in the CLI's options: start over, or from ``best.pth``'s weights
    (in another work dir, since ``--restart`` moves that file to ``previous/``)."""
    best = path.with_name("best.pth")
    restart = f"start over with --restart (the old files move to {path.parent / 'previous'}/)"
    if not best.is_file() or best == path:
        return restart
    return f"{restart}, or start from its best weights with --work-dir <new dir> --cfg-options model.weights={best}"


def resume_run(path: Path, config_now: dict, rank: int, model, optimizer, scheduler, scaler) -> tuple[int, dict | None, bool]:
    """Load a full training state into the run, after checking it fits. Returns ``(iteration, best,
    evaluate_first)``: the last says the evaluation of that iteration was stopped (a validation sample could not
    be read) and is to run before the next iteration."""
    state = load_resume_state(path, config_now, model)
    changes = config_changes(state.get("meta", {}).get("config"), config_now)
    for obj, key in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        try:
            obj.load_state_dict(state[key])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise resume_mismatch(path, key, e, changes) from e
    if changes and rank == 0:
        print(f"note: resuming {path} with a config that differs from the checkpoint's; {listed('changes', changes)}")
    rng = state["rng"]
    ckpt.set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    return state["iteration"], state.get("best"), bool(state.get("evaluate_first", False))


def resume_mismatch(path: str | Path, what: str, error: Exception, changes: list[str]) -> ConfigError:
    """The error for a training state (``what``: optimizer, scheduler, ...) that does not fit this run."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    config = listed("config changes", changes)
    return ConfigError(f"cannot resume from {path}: its {what} state does not fit this run ({reason})" + (f"; {config}" if config else ""))


def config_changes(before: dict | None, now: dict) -> list[str]:
    """``key: old -> new`` for every leaf of the config that differs (dotted keys)."""
    if not isinstance(before, dict):
        return []
    a, b = _flatten(before), _flatten(now)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _weight_changes(theirs: dict, ours: dict) -> list[str]:
    out = [f"{k} {list(theirs[k])} in the checkpoint, {list(ours[k])} now" for k in theirs if k in ours and theirs[k] != ours[k]]
    out += [f"{k} only in the checkpoint" for k in theirs if k not in ours]
    return out + [f"{k} not in the checkpoint" for k in ours if k not in theirs]


def listed(label: str, items: list[str]) -> str:
    """``label: a, b, c, d and N more`` (empty when there are no items)."""
    if not items:
        return ""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{label}: " + ", ".join(items[:_SHOWN]) + more


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix.count(".") < 1:  # sections; dict-valued options stay whole
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out
