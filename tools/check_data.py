"""Check a config's dataset on disk before a long run.

    python tools/check_data.py CONFIG [--samples N | --samples all] [--cfg-options KEY=VALUE ...]

Prints a table: images found per split against the official release (ADE20K, NYU Depth v2, COCO 2017,
ImageNet-1K, COCO panoptic 2017) or, for your own folders, their counts and pairing, and the checks the task
declares (panoptic: images without an annotation entry, the splits' categories); then N samples per split
(default 100, evenly spread; 0 = layout only) are decoded as training reads them, which catches truncated
images, depth PNGs in metres instead of millimetres, masks with labels outside the classes and what the task
checks per sample (panoptic: the PNG's ids against the json's segments, both ways). Exit code 0: usable
(warnings allowed), 1: the data is broken, 2: the config or an argument is wrong.
"""
import argparse
import sys

from tasks.common.check_data import check_data
from tasks.common.cli import config_and_task, run


def _samples(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}")
    return int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check a config's dataset on disk before a long run.")
    parser.add_argument("config")
    parser.add_argument("--samples", type=_samples, default=100, metavar="N",
                        help="samples decoded per split, evenly spread (0: layout only; 'all': every file)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    def check() -> int:
        cfg, task = config_and_task(args.config, args.cfg_options)  # the same start-up as every tool
        report = check_data(cfg, args.samples, task)
        print(report.table())
        return 0 if report.ok else 1

    return run(check)


if __name__ == "__main__":
    sys.exit(main())
