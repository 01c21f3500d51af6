"""Predict on images with a trained model (or an exported ONNX file): one picture and one result per image.

    python tools/infer.py CHECKPOINT IMAGE|FOLDER|LIST.txt [...] [--out DIR] [--flip] [--threshold T] [--amp bf16]
    python tools/infer.py --onnx MODEL.onnx IMAGE [IMAGE ...] [--out DIR]
    torchrun --nproc_per_node=N tools/infer.py CHECKPOINT FOLDER|LIST.txt --out DIR     # sharded, resumable

CHECKPOINT: best.pth / last.pth from tools/train.py, a Hugging Face model folder or a hub id; the task, the
preprocessing and the class names come from it (or from the ONNX file's metadata). The picture is the task's
own (its TaskSpec.picture): e.g. a label map blended in a palette, colour-mapped depth with a scale bar, boxes
with names and scores, the top-5 classes. --flip and --threshold go to the tasks that declare them
(TaskSpec.predict_options / picture_options). A FOLDER stands for the images in it. Images are turned as their
EXIF orientation says (phone photos come out upright). Beside the pictures, DIR/results/ holds each image's
machine-readable result (tasks/infer_results.py) and DIR/index.jsonl lists them (DIR/detections.jsonl: COCO
result lines). Images whose result exists are skipped (a killed run continues). Under torchrun the images are
shared out over the processes (and nodes). Images over --max-pixels are predicted scaled down and the prediction
scaled back up. An image that fails (unreadable, refused, out of memory) is one error line and the rest go on;
the exit code is then 1 (under torchrun 0, as torchrun reports any other code as a crash; DIR/failures.txt
lists them).
"""
import argparse
import sys

from tasks.common.amp import autocast
from tasks.common.cli import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict on images and write PNGs.")
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint, Hugging Face folder or hub id")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--onnx", default=None, metavar="FILE", help="run an exported ONNX file with ONNX Runtime")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--flip", action="store_true", help="average with the flipped image (dense tasks)")
    parser.add_argument("--threshold", type=float, default=None, help="the lowest score drawn (detectors; default 0.3)")
    parser.add_argument("--amp", default="none", help="none | bf16 | fp16 (CUDA): autocast for a PyTorch model")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (under torchrun: each process's local GPU)")
    parser.add_argument("--max-pixels", type=int, default=None, help="larger images are predicted scaled down "
                        "(default 4194304, i.e. 2048x2048)")
    args = parser.parse_args(argv)
    if args.onnx is not None and args.checkpoint is not None:
        args.images.insert(0, args.checkpoint)  # with --onnx every positional argument is an image

    def infer() -> int:
        from tasks import load_pretrained
        from tasks.common.distributed import cleanup, init_distributed
        from tasks.infer import gather_failures, infer_images, task_options, write_index
        from tasks.infer_results import MAX_PIXELS

        if args.checkpoint is None and args.onnx is None:
            raise ValueError("give a CHECKPOINT or --onnx FILE")
        if args.onnx is not None and args.amp != "none":
            raise ValueError("--amp is for PyTorch checkpoints; an ONNX file runs in the precision it was exported in")
        dist = init_distributed(args.device if args.onnx is None else "cpu")
        try:
            if args.onnx is not None:
                from tasks.common.export import load_onnx_predictor

                predictor = load_onnx_predictor(args.onnx)
            else:
                predictor = load_pretrained(args.checkpoint).to(dist.device)
            given = {"flip": True if args.flip else None, "threshold": args.threshold}
            predict, picture = task_options(predictor.task, {k: v for k, v in given.items() if v is not None})
            with autocast(args.amp, predictor.device if args.onnx is None else "cpu"):
                written, failures = infer_images(
                    predictor, args.images, args.out, predict_options=predict, picture_options=picture,
                    max_pixels=args.max_pixels or MAX_PIXELS, rank=dist.rank, world_size=dist.world_size,
                    on_failure=lambda line: _error_line(line, dist.world_size > 1))
            for path in written:
                print(path)
            failures = gather_failures(failures)
            if dist.is_main:
                counts = write_index(args.out, args.images, failures)
                print(f"{counts['done']} of {counts['images']} images have results in {args.out}/index.jsonl; "
                      f"{len(failures)} failed this run", file=sys.stderr)
            return 1 if failures and dist.world_size == 1 else 0
        finally:
            cleanup()

    return run(infer)


def _error_line(line: str, shared: bool) -> None:
    """One ``error:`` line above this process's progress bar; where processes share the terminal (``shared``), it
    starts on a new line, as another process's bar may be half drawn."""
    from tqdm import tqdm

    tqdm.write(f"{chr(10) if shared else ''}error: {' '.join(line.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
