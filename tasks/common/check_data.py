"""Check a config's dataset on disk before a long run (``tools/check_data.py CONFIG`` and the training pre-flight).

Two levels, both through the task's own datasets (built exactly as training builds them):

- layout (cheap, no decoding; ``tools/train.py`` runs it before the first step): building the datasets pairs
  images with masks or depth maps and reads the list and annotation files; then the counts are compared with the
  official release, and what a dataset would only find out when it reads a sample is looked up now (COCO
  images named in the json but missing on disk; class folders that differ between the splits).
- samples (``tools/check_data.py``): a spread of samples per split is decoded with the dataset's own reader,
  which refuses truncated images, depth PNGs in metres instead of millimetres, masks with labels outside the
  classes and images whose size differs from their target's; the table shows the sizes and the targets' range.

A layout problem or an unreadable sample makes the data "broken"; a count that differs from the official
release is a warning (a subset may be deliberate).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .config import ConfigError


@dataclass(frozen=True)
class Release:
    """What the official release holds: images per split (train, val) and what the files should contain."""

    name: str
    counts: tuple[int, int]
    contents: str


RELEASES: dict[tuple[str, str], Release] = {  # (config task, data config class)
    ("segmentation", "ADE20KData"): Release("ADE20K (SceneParse150)", (20_210, 2_000), "masks hold 0-150, 0 = other"),
    ("depth", "NYUData"): Release(
        "NYU Depth v2 (GLPDepth lists)", (24_231, 654), "uint16 depth PNGs in millimetres"
    ),
    ("detection", "CocoData"): Release("COCO 2017", (118_287, 5_000), "instances_{train,val}2017.json"),
    ("classification", "ImageNetData"): Release("ImageNet-1K (ILSVRC-2012)", (1_281_167, 50_000), "1,000 classes"),
}
IMAGENET_CLASSES = 1000
_COCO_ANNOTATIONS = ("annotations/instances_train2017.json", "annotations/instances_val2017.json")
_SHOW = 3  # problems listed per kind before "... and N more"


@dataclass
class SplitCheck:
    """One split: counts, layout problems (broken), warnings, and what the sample check read."""

    split: str
    found: int | None = None
    official: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    read: int = 0
    failed: list[str] = field(default_factory=list)
    summary: str = ""


@dataclass
class DataCheck:
    dataset: str
    contents: str
    splits: list[SplitCheck]
    location: str = ""

    @property
    def ok(self) -> bool:
        return not any(s.problems or s.failed for s in self.splits)

    def table(self) -> str:
        """The report: one row per split, then every problem and warning, then the verdict."""
        rows = [("split", "found", "official", "samples read", "failed", "sizes and targets")]
        for s in self.splits:
            rows.append((
                s.split, _count(s.found), _count(s.official), str(s.read) if s.read or s.failed else "-",
                str(len(s.failed)) if s.read or s.failed else "-", s.summary or "-",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"dataset: {self.dataset}" + (f" at {self.location}" if self.location else "")
                 + (f" (official release: {self.contents})" if self.contents else "")]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        for s in self.splits:
            lines += [f"problem ({s.split}): {p}" for p in s.problems]
            lines += [f"unreadable ({s.split}): {f}" for f in _capped(s.failed)]
            lines += [f"warning ({s.split}): {w}" for w in s.warnings]
        broken = sum(len(s.problems) + len(s.failed) for s in self.splits)
        lines.append("result: OK" if self.ok else f"result: BROKEN ({broken} problem{'s' * (broken != 1)})")
        return "\n".join(lines)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _capped(items: list[str]) -> list[str]:
    return items[:_SHOW] + ([f"... and {len(items) - _SHOW} more"] if len(items) > _SHOW else [])


def release_of(cfg) -> Release | None:
    """The official release a config's data section describes, or None for a user's folder / synthetic data."""
    release = RELEASES.get((cfg.task, type(cfg.data).__name__))
    if release is not None and cfg.task == "detection":  # CocoData also reads a user's own COCO-format json
        anns = (getattr(cfg.data, "train_ann", ""), getattr(cfg.data, "val_ann", ""))
        if tuple(a.replace("\\", "/") for a in anns) != _COCO_ANNOTATIONS:
            return None
    return release


def build_datasets(task) -> dict[str, object]:
    """``{"train": dataset or the exception building it raised, "val": ...}``, built as training builds them."""
    out: dict[str, object] = {}
    for split, build in (("train", task.train_dataset), ("val", task.val_dataset)):
        try:
            out[split] = build()
        except ConfigError:  # the config does not fit the data (e.g. model.num_classes): one line, not a table
            raise
        except (FileNotFoundError, ValueError, OSError) as e:
            out[split] = e
    return out


def check_layout(cfg, datasets: dict[str, object]) -> DataCheck:
    """Counts against the official release and the pairing checks that need no decoding."""
    release = release_of(cfg)
    check = DataCheck(release.name if release else f"{type(cfg.data).__name__} ({cfg.task})",
                      release.contents if release else "", [], str(getattr(cfg.data, "root", "")))
    for i, (split, ds) in enumerate(datasets.items()):
        s = SplitCheck(split, official=release.counts[i] if release else None)
        check.splits.append(s)
        if isinstance(ds, Exception):
            s.problems.append(str(ds))
            continue
        s.found = len(ds)
        if s.found == 0:
            s.problems.append("no samples")
        elif s.official is not None and s.found != s.official:
            s.warnings.append(f"{s.found:,} samples, the official release has {s.official:,} (incomplete download?)")
        s.problems += _missing_coco_images(ds)
    _compare_classes(cfg, datasets, check)
    return check


def _missing_coco_images(ds) -> list[str]:
    """CocoDetection reads an image only when the sample is read: find the json's images absent from disk."""
    if not (hasattr(ds, "coco") and hasattr(ds, "images_dir")):
        return []
    names = [info["file_name"] for info in ds.coco.imgs.values()]
    on_disk = set(os.listdir(ds.images_dir))
    missing = [n for n in names if n not in on_disk and not (ds.images_dir / n).is_file()]
    if not missing:
        return []
    shown = ", ".join(missing[:_SHOW]) + (f", ... and {len(missing) - _SHOW} more" if len(missing) > _SHOW else "")
    where = f"{ds.ann_file.name} are missing from {ds.images_dir}"
    return [f"{len(missing):,} of the {len(names):,} images in {where}: {shown}"]


def _compare_classes(cfg, datasets: dict, check: DataCheck) -> None:
    """Folder-per-class data: both splits must have the same classes (labels are positions in that list)."""
    folders = {k: getattr(d, "folder_names", None) for k, d in datasets.items() if not isinstance(d, Exception)}
    if any(f is None for f in folders.values()) or len(folders) < 2:
        return
    train, val = folders["train"], folders["val"]
    if train != val:
        only = sorted(set(train) ^ set(val))
        check.splits[1].problems.append(
            f"the splits have different class folders ({len(train)} train, {len(val)} val; in one only: "
            f"{', '.join(only[:_SHOW])}{', ...' if len(only) > _SHOW else ''}), so the labels would not agree"
        )
    if release_of(cfg) is not None and cfg.task == "classification" and len(train) != IMAGENET_CLASSES:
        check.splits[0].warnings.append(f"{len(train)} class folders, ImageNet-1K has {IMAGENET_CLASSES:,}")


def check_samples(check: DataCheck, datasets: dict[str, object], samples: int | None, workers: int = 8) -> None:
    """Decode ``samples`` evenly spread samples per split (None: all) with the dataset's own ``read``."""
    for s in check.splits:
        ds = datasets[s.split]
        if isinstance(ds, Exception) or not s.found:
            continue
        n = s.found if samples is None else min(samples, s.found)
        indices = np.unique(np.linspace(0, s.found - 1, n).round().astype(int)) if n else []
        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoders release the GIL
            results = list(pool.map(lambda i: _read(ds, int(i)), indices))
        good = [r for r in results if isinstance(r, dict)]
        s.failed = [r for r in results if isinstance(r, str)]
        s.read = len(results)
        s.summary = summarize(good, ds)


def _read(ds, index: int) -> dict | str:
    try:
        return ds.read(index)
    except (ValueError, FileNotFoundError, OSError) as e:
        return str(e).splitlines()[0]


def summarize(samples: list[dict], ds) -> str:
    """Image sizes and the targets' range over ``samples`` (untransformed samples of one dataset)."""
    if not samples:
        return ""
    hs, ws = zip(*(s["image"].shape[:2] for s in samples))
    parts = [f"{min(hs)}-{max(hs)} x {min(ws)}-{max(ws)} px" if (min(hs), min(ws)) != (max(hs), max(ws))
             else f"{hs[0]} x {ws[0]} px"]
    first = samples[0]
    if "mask" in first:
        parts.append(_mask_summary([s["mask"] for s in samples], ds))
    if "depth" in first:
        valid = np.concatenate([s["depth"][s["depth"] > 0] for s in samples])
        total = sum(s["depth"].size for s in samples)
        parts.append(f"depth {valid.min():.2f}-{valid.max():.2f} m, {valid.size / total:.0%} of pixels valid")
    if "boxes" in first:
        boxes = [len(s["boxes"]) for s in samples]
        labels = {int(v) for s in samples for v in s["labels"]}
        parts.append(f"{np.mean(boxes):.1f} boxes per image ({boxes.count(0)} without), {len(labels)} categories seen")
    if "label" in first:
        parts.append(f"{len({s['label'] for s in samples})} of {getattr(ds, 'num_classes', '?')} classes seen")
    return "; ".join(parts)


def _mask_summary(masks: list[np.ndarray], ds) -> str:
    ignore = getattr(ds, "ignore_index", 255)
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    labels = values[values != ignore]
    ignored = sum(int((m == ignore).sum()) for m in masks) / sum(m.size for m in masks)
    text = f"labels {labels.min()}-{labels.max()}" if labels.size else "no labelled pixel"
    if getattr(ds, "reduce_zero_label", False):
        text += " after reduce_zero_label"
    return f"{masks[0].dtype} masks, {text} ({labels.size} of {ds.num_classes} classes seen), {ignored:.0%} ignored"


def check_data(cfg, samples: int | None = 100) -> DataCheck:
    """The whole check for a config: layout, then ``samples`` decoded samples per split (0: layout only)."""
    from tasks import get_task

    datasets = build_datasets(get_task(cfg))
    check = check_layout(cfg, datasets)
    if samples != 0:
        check_samples(check, datasets, samples)
    return check


def preflight(cfg, train, val) -> list[str]:
    """The training pre-flight on the datasets training just built: a ValueError naming the first layout problem,
    else the warnings (one line each) for the caller to print."""
    check = check_layout(cfg, {"train": train, "val": val})
    for s in check.splits:
        if s.problems:
            raise ValueError(f"{check.dataset} {s.split}: {s.problems[0]} (see python tools/check_data.py CONFIG)")
    return [f"{check.dataset} {s.split}: {w}" for s in check.splits for w in s.warnings]
