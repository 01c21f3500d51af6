"""What every command-line tool shares: loading a config and its task, the work dir, and one ``error:`` line.

A tool is a thin script: parse its arguments, call ``config_and_task`` (or load a checkpoint), run one library
function, and let ``run`` turn a user's mistake into one ``error:`` line and an exit code, never a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from .config import ConfigError, apply_options, load_config, source_line
from .registry import build_task

# What a user's mistake raises (a bad config, file, argument or checkpoint): exit code 2.
USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, TypeError, ImportError)


def config_and_task(path: str, options: list[str]):
    """``(cfg, task)`` for a config file and its ``--cfg-options``; an unknown task or a bad model section is a
    ConfigError that points at the config line naming the task."""
    cfg = apply_options(load_config(path), options)
    try:
        task = build_task(cfg)
    except (ValueError, TypeError) as e:  # e.g. a misspelt task name: point at its line
        where = source_line(path, str(cfg.task)) if repr(cfg.task) in str(e) else path
        raise ConfigError(f"{where}: {e}") from e
    return cfg, task


def work_dir(config: str, given: str | None) -> Path:
    """``--work-dir``, else ``work_dirs/<config file stem>/``."""
    return Path(given or Path("work_dirs") / Path(config).stem)


def error(message: object) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever the message


def run(body: Callable[[], int], *, mistakes: tuple[type[BaseException], ...] = USER_ERRORS,
        failures: tuple[type[BaseException], ...] = (), cleanup: Callable[[], None] | None = None) -> int:
    """``body()``'s exit code; one of ``mistakes`` (a user's) is one ``error:`` line and exit code 2, one of
    ``failures`` (the run itself failed: a non-finite loss, a full disk) one line and exit code 1."""
    try:
        return body()
    except failures as e:
        error(e)
        return 1
    except mistakes as e:
        error(e)
        return 2
    finally:
        if cleanup is not None:
            cleanup()
