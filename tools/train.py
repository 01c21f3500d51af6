"""Train a model from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--restart] [--cfg-options KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train.py CONFIG ...      # DistributedDataParallel

The work dir (default work_dirs/<config stem>/) receives config.json, log.jsonl, curves.png, last.pth,
best.pth and metrics.json. --resume without a path continues from <work dir>/last.pth.

A run never destroys another: if the work dir already holds a run (last.pth, best.pth or log.jsonl), a new
run is refused with one line that says what to do. --resume continues it (appending to its log);
--restart starts over after moving the earlier run's files to <work dir>/previous/<YYYYmmdd_HHMMSS>/
(nothing is deleted); or pass another --work-dir. Every failure is one `error:` line (exit code 2 for a
bad config or checkpoint, 1 when training itself fails: a non-finite loss, a full disk).
"""
import argparse
import sys
from pathlib import Path

from tasks.common.checkpoint import WriteError
from tasks.common.cli import config_and_task, run, work_dir
from tasks.common.config import ConfigError
from tasks.common.distributed import cleanup
from tasks.common.engine import NonFiniteLoss, fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train a model from a config.")
    parser.add_argument("config")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT")
    parser.add_argument("--restart", action="store_true", help="start over; the work dir's earlier run moves to previous/")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.resume is not None and args.restart:
        parser.error("--resume continues a run and --restart starts a new one; give one of them")
    out = work_dir(args.config, args.work_dir)

    def train() -> int:
        cfg, task = config_and_task(args.config, args.cfg_options)
        resume = None
        if args.resume is not None:
            resume = out / "last.pth" if args.resume == "last" else Path(args.resume)
            if not resume.is_file():
                raise ConfigError(f"--resume: no checkpoint at {resume}")
        result = fit(task, cfg, out, resume=resume, restart=args.restart)
        if result["stopped"]:
            print(f"stopped at iteration {result['iteration']}; checkpoint saved. Continue with --resume.")
            return 130
        if result["metrics"] is not None:
            print(task.metrics_table(result["metrics"]))
        print(f"done: {result['iteration']} iterations; outputs in {out}")
        return 0

    return run(train, mistakes=(ConfigError, FileNotFoundError), failures=(NonFiniteLoss, WriteError), cleanup=cleanup)


if __name__ == "__main__":
    sys.exit(main())
