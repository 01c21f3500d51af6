"""Predict on images with a trained model and write one PNG per image.

    python tools/infer.py CHECKPOINT IMAGE [IMAGE ...] [--out DIR] [--scale LONG SHORT] [--flip]

CHECKPOINT: best.pth / last.pth from tools/train.py or a Hugging Face model folder. Segmentation: the
input beside the prediction blended in the ADE20K palette (a generated one for other class counts), with
a legend of the classes present; the image is evaluated at its own size (short side --scale SHORT).
"""
import argparse
import sys

from tasks.common.config import ConfigError
from tasks.segmentation.model import SegFormer
from tasks.segmentation.presets import IMAGENET_MEAN, IMAGENET_STD
from tasks.segmentation.visualize import infer_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict on images and write PNGs.")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--scale", nargs=2, type=int, default=(2048, 512), metavar=("LONG", "SHORT"))
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    args = parser.parse_args(argv)
    try:
        model = SegFormer.from_pretrained(args.checkpoint)
        written = infer_images(
            model, args.images, args.out, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=tuple(args.scale), flip=args.flip
        )
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
