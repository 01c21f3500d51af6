"""Evaluate a checkpoint on a config's validation set, print the metric table and write it as JSON.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options KEY=VALUE ...]

CHECKPOINT: best.pth / last.pth written by tools/train.py, or a Hugging Face model folder of the task's
model class. Metrics go to <work dir>/test_metrics.json (default work_dirs/<config stem>/).
"""
import argparse
import sys
from pathlib import Path

from tasks import get_task
from tasks.common.checkpoint import WriteError, os_error_line
from tasks.common.config import ConfigError, apply_options, load_config, source_line
from tasks.common.distributed import cleanup, init_distributed
from tasks.common.engine import evaluate_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint.")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    try:
        cfg = apply_options(load_config(args.config), args.cfg_options)
        try:
            task = get_task(cfg)
        except (ValueError, TypeError) as e:  # e.g. a misspelt task name: point at its line
            where = source_line(args.config, str(cfg.task)) if repr(cfg.task) in str(e) else args.config
            raise ConfigError(f"{where}: {e}") from e
        metrics = evaluate_checkpoint(task, cfg, args.checkpoint, work_dir)
        is_main = init_distributed(cfg.runtime.device).is_main
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if is_main:
        print(task.metrics_table(metrics))
        print(f"metrics written to {work_dir / 'test_metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
