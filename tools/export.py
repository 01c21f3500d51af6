"""Export a model to ONNX with dynamic batch, height and width, and check the file with ONNX Runtime.

    python tools/export.py CHECKPOINT OUTPUT.onnx [--height H --width W] [--opset N] [--no-grid-sample]
    python tools/export.py BACKBONE_WEIGHTS OUTPUT.onnx --backbone pvt_v2_b2
    python tools/export.py CHECKPOINT OUT_DIR --to transformers [--backbone NAME]
    python tools/export.py CHECKPOINT OUTPUT.onnx --int8 --config CONFIG [--calib-images N]

CHECKPOINT: anything ``from_pretrained`` takes (best.pth / last.pth, a Hugging Face folder, a hub id); the
task comes from it. With ``--backbone NAME``, CHECKPOINT is a backbone weights file and the four stages
are exported. After writing, ONNX Runtime runs the file at two other sizes (batch 1 and 2) and a file that
disagrees with PyTorch is deleted (exit code 2). ``--no-grid-sample``: Deformable-DETR's sampling as
gathers and arithmetic only (for TensorRT and other runtimes that get GridSample wrong). ``--int8``: static
INT8 quantization (QDQ) calibrated on N images of CONFIG's training set, checked against fp32 on its
validation images (``tasks/common/quantize.py``). The file is written under a temporary name and renamed
into place only once checked: a failed export leaves an earlier file of that name unchanged.
See ``tasks/common/export.py`` for the exporter choice and the graph's inputs and outputs.
``--to transformers`` writes a Hugging Face transformers model folder instead (``tasks/common/to_transformers.py``):
config.json, model.safetensors, preprocessor_config.json and a model card, checked before it is renamed into place.
"""
import argparse
import sys

from tasks.common.checkpoint import WriteError
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
    parser.add_argument("--int8", action="store_true", help="static INT8 quantization (needs --config)")
    parser.add_argument("--config", default=None, help="--int8: the config whose training set calibrates")
    parser.add_argument("--calib-images", type=int, default=None, metavar="N", help="--int8: images (default 64)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="--int8: config overrides")
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
        from tasks.common.export import check_output, export_onnx, require

        require("onnx", "onnxruntime", "onnxscript")
        from tasks.common.quantize import check_int8_options, export_int8_for_config

        check_int8_options(args.int8, args.config, args.calib_images, args.cfg_options, args.backbone)
        check_output(args.output)  # a read-only folder is one line before any work
        model = _load(args.checkpoint, args.backbone)
        height, width = _size(model, args.height, args.width)
        options = dict(height=height, width=width, opset=args.opset, sampler="gather" if args.no_grid_sample else None,
                       tolerance=args.tolerance)
        if args.int8:
            print(export_int8_for_config(model, args.output, args.config, args.cfg_options,
                                         calib_images=args.calib_images or 64, **options))
        else:
            print(export_onnx(model, args.output, **options))
        return 0

    return run(export, failures=(WriteError,))


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
