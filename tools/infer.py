"""Predict on images with a trained model (or an exported ONNX file) and write one PNG per image.

    python tools/infer.py CHECKPOINT IMAGE|FOLDER [...] [--out DIR] [--flip] [--threshold T] [--amp bf16]
    python tools/infer.py --onnx MODEL.onnx IMAGE [IMAGE ...] [--out DIR]

CHECKPOINT: best.pth / last.pth from tools/train.py, a Hugging Face model folder or a hub id; the task, the
preprocessing and the class names come from it (or from the ONNX file's metadata). The picture is the task's
own (its TaskSpec.picture): e.g. a label map blended in a palette, colour-mapped depth with a scale bar, boxes
with names and scores, the top-5 classes. --flip and --threshold go to the tasks that declare them
(TaskSpec.predict_options / picture_options). A FOLDER stands for the images in it. Images are turned as their
EXIF orientation says (phone photos come out upright). An image that cannot be read is reported and skipped;
the exit code is 1 when any image failed.
"""
import argparse
import sys

from tasks.common.amp import autocast
from tasks.common.cli import error, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict on images and write PNGs.")
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint, Hugging Face folder or hub id")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--onnx", default=None, metavar="FILE", help="run an exported ONNX file with ONNX Runtime")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--flip", action="store_true", help="average with the flipped image (dense tasks)")
    parser.add_argument("--threshold", type=float, default=None, help="the lowest score drawn (detectors; default 0.3)")
    parser.add_argument("--amp", default="none", help="none | bf16 | fp16 (CUDA): autocast for a PyTorch model")
    args = parser.parse_args(argv)
    if args.onnx is not None and args.checkpoint is not None:
        args.images.insert(0, args.checkpoint)  # with --onnx every positional argument is an image

    def infer() -> int:
        from tasks import load_pretrained
        from tasks.infer import infer_images, task_options

        if args.onnx is not None:
            from tasks.common.export import load_onnx_predictor

            predictor = load_onnx_predictor(args.onnx)
        elif args.checkpoint is None:
            raise ValueError("give a CHECKPOINT or --onnx FILE")
        else:
            predictor = load_pretrained(args.checkpoint)
        given = {"flip": True if args.flip else None, "threshold": args.threshold}
        predict, picture = task_options(predictor.task, {k: v for k, v in given.items() if v is not None})
        if args.onnx is not None and args.amp != "none":
            raise ValueError("--amp is for PyTorch checkpoints; an ONNX file runs in the precision it was exported in")
        with autocast(args.amp, predictor.device if args.onnx is None else "cpu"):
            written, failures = infer_images(predictor, args.images, args.out, predict_options=predict,
                                             picture_options=picture)
        for path in written:
            print(path)
        for failure in failures:
            error(failure)
        return 1 if failures else 0

    return run(infer)


if __name__ == "__main__":
    sys.exit(main())
