"""Convert backbone weights from any supported format into ours.

    python tools/convert_weights.py pvt_v2_b2 pvt_v2_b2.pth pvt_v2_b2.safetensors
    python tools/convert_weights.py mit_b0 path/to/nvidia-mit-b0/ mit_b0.safetensors
    python tools/convert_weights.py pvt_v2_b2 OpenGVLab/pvt_v2_b2 pvt_v2_b2.safetensors   # hub id
    python tools/convert_weights.py pvt_v2_b2 imagenet pvt_v2_b2.safetensors              # the published one

Input: an original whai362/PVT or NVlabs/SegFormer ``.pth``, a timm checkpoint, a Hugging Face model folder
or file (PvtV2*, Segformer*, GLPN*), a torchvision ResNet-50, or our own format; or a Hugging Face hub id
(``org/name[@revision]``, timm ids too; read from the hub cache, downloaded once) or ``imagenet``. The weights
are loaded strictly into the named architecture (so a wrong architecture fails here, with the keys and shapes
that differ) and written as ``.safetensors`` or ``.pth``.
"""
import argparse
import logging
import sys

from backbones import build_backbone, hub, list_backbones, load_backbone_weights, save_backbone_weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", help=f"backbone name, one of: {', '.join(list_backbones())}")
    parser.add_argument("input", help="weights file (.pth/.pt/.bin/.ckpt/.safetensors), Hugging Face model folder, hub id "
                        "(org/name[@revision]) or 'imagenet' (the published weights of ARCH)")
    parser.add_argument("output", help="output file, .safetensors or .pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = build_backbone(args.arch)
        loaded = load_backbone_weights(model, args.input)
        source = hub.imagenet_weights(args.arch) if args.input == "imagenet" else str(args.input)
        save_backbone_weights(model, args.output, source=source, source_format=loaded.format)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(v.numel() for v in model.state_dict().values())
    print(f"wrote {args.output}: {args.arch}, {len(loaded.state_dict)} tensors, {n / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
