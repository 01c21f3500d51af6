"""Export a model to ONNX with dynamic batch, height and width, and check the file with ONNX Runtime.

    python tools/export.py CHECKPOINT OUTPUT.onnx [--height H --width W] [--opset N] [--no-grid-sample]
    python tools/export.py BACKBONE_WEIGHTS OUTPUT.onnx --backbone pvt_v2_b2
    python tools/export.py CHECKPOINT OUT_DIR --to transformers [--backbone NAME]

CHECKPOINT: anything ``from_pretrained`` takes (best.pth / last.pth, a Hugging Face folder, a hub id); the
task comes from it. With ``--backbone NAME``, CHECKPOINT is a backbone weights file and the four stages
are exported. After writing, ONNX Runtime runs the file at two other sizes (batch 1 and 2) and a file that
disagrees with PyTorch is deleted (exit code 2). ``--no-grid-sample``: Deformable-DETR's sampling as
gathers and arithmetic only (for TensorRT and other runtimes that get GridSample wrong).
See ``tasks/common/export.py`` for the exporter choice and the graph's inputs and outputs.
``--to transformers`` writes a Hugging Face transformers model folder instead (``tasks/common/to_transformers.py``):
config.json, model.safetensors, preprocessor_config.json and a model card, checked before it is renamed into place.
"""
import argparse
import sys

from tasks.common.cli import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a model to ONNX and check it with ONNX Runtime.")
    parser.add_argument("checkpoint", help="a checkpoint, Hugging Face folder or hub id (or backbone weights)")
    parser.add_argument("output", help="the .onnx file to write (a folder with --to transformers)")
    parser.add_argument("--to", choices=("onnx", "transformers"), default="onnx", help="the format written")
    parser.add_argument("--height", type=int, default=None, help="example height (default: the recipe's size)")
    parser.add_argument("--width", type=int, default=None, help="example width")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--no-grid-sample", action="store_true", help="deformable attention without GridSample")
    parser.add_argument("--backbone", default=None, metavar="NAME", help="export a bare backbone of this name")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest ONNX vs PyTorch difference")
    args = parser.parse_args(argv)

    def export() -> int:
        if args.to == "transformers":
            from tasks.common.to_transformers import check_out_dir, save_backbone_transformers, save_transformers

            check_out_dir(args.output)  # before anything is loaded
            model = _load(args.checkpoint, args.backbone)
            if args.backbone is not None:
                print(save_backbone_transformers(model, args.output))
            else:  # the card takes the training config and metrics.json from the checkpoint's run
                print(save_transformers(model, args.output, source=args.checkpoint))
            return 0
        from tasks.common.export import export_onnx, require

        require("onnx", "onnxruntime", "onnxscript")
        model = _load(args.checkpoint, args.backbone)
        height, width = _size(model, args.height, args.width)
        sampler = "gather" if args.no_grid_sample else None
        exported = export_onnx(model, args.output, height=height, width=width, opset=args.opset, sampler=sampler,
                               tolerance=args.tolerance)
        print(exported)
        return 0

    return run(export)


def _load(checkpoint: str, backbone: str | None):
    if backbone is not None:
        from backbones import build_backbone

        return build_backbone(backbone, out_indices=(0, 1, 2, 3), weights=checkpoint).eval()
    from tasks import load_pretrained

    return load_pretrained(checkpoint)


def _size(model, height, width) -> tuple[int, int]:
    """The given size, else one the model's preprocessing produces (capped at 640: any size serves)."""
    if (height is None) != (width is None):
        raise ValueError("give both --height and --width, or neither")
    if height is not None:
        return height, width
    pre = getattr(model, "preprocessing", None)
    if pre is None or pre.resize == "none":
        return 480, 640
    h, w = pre.output_size(480, 640)
    if pre.resize == "short_side_crop":
        h = w = pre.size[1]
    scale = min(1.0, 640 / max(h, w))
    return max(65, round(h * scale)), max(65, round(w * scale))


if __name__ == "__main__":
    sys.exit(main())
