"""Train a model from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--cfg-options KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train.py CONFIG ...      # DistributedDataParallel

The work dir (default work_dirs/<config stem>/) receives config.json, log.jsonl, curves.png, last.pth,
best.pth and metrics.json. --resume without a path continues from <work dir>/last.pth.
"""
import argparse
import sys
from pathlib import Path

from tasks import get_task
from tasks.common.config import ConfigError, apply_options, load_config
from tasks.common.distributed import cleanup
from tasks.common.engine import NonFiniteLoss, fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train a model from a config.")
    parser.add_argument("config")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    try:
        cfg = apply_options(load_config(args.config), args.cfg_options)
        task = get_task(cfg)
        resume = None
        if args.resume is not None:
            resume = work_dir / "last.pth" if args.resume == "last" else Path(args.resume)
            if not resume.is_file():
                raise ConfigError(f"--resume: no checkpoint at {resume}")
        result = fit(task, cfg, work_dir, resume=resume)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}; the last good checkpoint is {work_dir / 'last.pth'}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if result["stopped"]:
        print(f"stopped at iteration {result['iteration']}; checkpoint saved. Continue with --resume.")
        return 130
    if result["metrics"] is not None:
        print(task.metrics_table(result["metrics"]))
    print(f"done: {result['iteration']} iterations; outputs in {work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
