"""Predict on images with a trained model (or an exported ONNX file) and write one PNG per image.

    python tools/infer.py CHECKPOINT IMAGE [IMAGE ...] [--out DIR] [--flip] [--threshold T] [--amp bf16]
    python tools/infer.py --onnx MODEL.onnx IMAGE [IMAGE ...] [--out DIR]

CHECKPOINT: best.pth / last.pth from tools/train.py, a Hugging Face model folder or a hub id; the task, the
preprocessing and the class names come from it (or from the ONNX file's metadata).
- segmentation: the input beside the prediction blended in a palette, with a legend of the classes present;
- depth: the input beside the colour-mapped depth with a scale bar in metres;
- detection: boxes with class names and scores >= --threshold;
- classification: the image beside its top-5 classes and probabilities.
An image that cannot be read is reported and skipped; the exit code is 1 when any image failed.
"""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict on images and write PNGs.")
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint, Hugging Face folder or hub id")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--onnx", default=None, metavar="FILE", help="run an exported ONNX file with ONNX Runtime")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--flip", action="store_true", help="segmentation/depth: average with the flipped image")
    parser.add_argument("--threshold", type=float, default=0.3, help="detection: the lowest score drawn")
    parser.add_argument("--amp", default="none", help="none | bf16 | fp16 (CUDA): autocast for a PyTorch model")
    args = parser.parse_args(argv)
    if args.onnx is not None and args.checkpoint is not None:
        args.images.insert(0, args.checkpoint)  # with --onnx every positional argument is an image
    try:
        from tasks import load_pretrained
        from tasks.infer import infer_images

        if args.onnx is not None:
            from tasks.common.export import load_onnx_predictor

            predictor = load_onnx_predictor(args.onnx)
        elif args.checkpoint is None:
            raise ValueError("give a CHECKPOINT or --onnx FILE")
        else:
            predictor = load_pretrained(args.checkpoint)
        if args.flip and predictor.task not in ("segmentation", "depth"):
            raise ValueError(f"--flip is for segmentation and depth models, not {predictor.task}")
        predict = {"flip": True} if args.flip else {}
        picture = {"threshold": args.threshold} if predictor.task == "detection" else {}
        from tasks.common.amp import autocast

        if args.onnx is not None and args.amp != "none":
            raise ValueError("--amp is for PyTorch checkpoints; an ONNX file runs in the precision it was exported in")
        with autocast(args.amp, predictor.device if args.onnx is None else "cpu"):
            written, failures = infer_images(predictor, args.images, args.out, predict_options=predict,
                                             picture_options=picture)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
