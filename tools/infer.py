"""Predict on images with a trained model and write one PNG per image.

    python tools/infer.py CHECKPOINT IMAGE [IMAGE ...] [--out DIR] [options]

CHECKPOINT: best.pth / last.pth from tools/train.py or a Hugging Face model folder; the task comes from it.
- segmentation: the input beside the prediction blended in the ADE20K palette (a generated one for other
  class counts) with a legend of the classes present; keep-ratio resize to --scale LONG SHORT, --flip.
- depth: the input beside the colour-mapped depth with a scale bar in metres; --flip averages flips.
- detection: boxes with class names (--ann, a COCO json) and scores >= --threshold; short side --size.
"""
import argparse
import json
import sys

from tasks import checkpoint_task


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Predict on images and write PNGs.")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--scale", nargs=2, type=int, default=(2048, 512), metavar=("LONG", "SHORT"))
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--size", type=int, default=800, help="detection: the short side of the network input")
    parser.add_argument("--threshold", type=float, default=0.3, help="detection: the lowest score drawn")
    parser.add_argument("--ann", default=None, help="detection: a COCO json whose categories name the labels")
    args = parser.parse_args(argv)
    try:
        task = checkpoint_task(args.checkpoint)
        if task == "segmentation":
            from tasks.segmentation import SegFormer
            from tasks.common.images import IMAGENET_MEAN_255, IMAGENET_STD_255
            from tasks.segmentation.visualize import infer_images

            model = SegFormer.from_pretrained(args.checkpoint)
            written = infer_images(model, args.images, args.out, mean=IMAGENET_MEAN_255, std=IMAGENET_STD_255,
                                   scale=tuple(args.scale), flip=args.flip)
        elif task == "depth":
            from tasks.depth import GLPN
            from tasks.depth.visualize import infer_images

            written = infer_images(GLPN.from_pretrained(args.checkpoint), args.images, args.out, flip=args.flip)
        else:
            from tasks.detection import DeformableDETR
            from tasks.detection.visualize import infer_images

            names = None
            if args.ann:
                names = {c["id"]: c["name"] for c in json.loads(open(args.ann).read())["categories"]}
            written = infer_images(DeformableDETR.from_pretrained(args.checkpoint), args.images, args.out,
                                   size=args.size, threshold=args.threshold, names=names)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
