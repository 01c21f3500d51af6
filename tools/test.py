"""Evaluate a checkpoint on a config's validation set, print the metric table and write it as JSON.

    python tools/test.py CONFIG CHECKPOINT|MODEL.onnx [--work-dir DIR] [--cfg-options KEY=VALUE ...]

CHECKPOINT: best.pth / last.pth written by tools/train.py, or a Hugging Face model folder of the task's
model class; or an ONNX file written by tools/export.py, run with ONNX Runtime (the CUDA provider where
available) through the same evaluator and the file's own preprocessing. Metrics go to <work dir>/test_metrics.json (default work_dirs/<config stem>/). Evaluation uses the
checkpoint's own preprocessing; when the config's data section describes another, one line says so.

The evaluation locks the work dir as training does: into the work dir of a live training or of another
evaluation it is refused with one line naming the holder (exit code 2). A validation sample that cannot be read
is one line naming the file (exit code 1), as is a metrics file that cannot be written.
"""
import argparse
import sys

from tasks.common.checkpoint import WriteError
from tasks.common.cli import config_and_task, run, work_dir
from tasks.common.distributed import cleanup, init_distributed
from tasks.common.engine import evaluate_checkpoint
from tasks.common.samples import DataError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint or an exported ONNX file.")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = work_dir(args.config, args.work_dir)

    def test() -> int:
        cfg, task = config_and_task(args.config, args.cfg_options)
        if args.checkpoint.endswith(".onnx"):
            from tasks.common.onnx_eval import evaluate_onnx

            metrics = evaluate_onnx(task, cfg, args.checkpoint, out)
        else:
            metrics = evaluate_checkpoint(task, cfg, args.checkpoint, out)
        if init_distributed(cfg.runtime.device).is_main:
            print(task.metrics_table(metrics))
            print(f"metrics written to {out / 'test_metrics.json'}")
        return 0

    return run(test, failures=(WriteError, DataError), cleanup=cleanup)


if __name__ == "__main__":
    sys.exit(main())
