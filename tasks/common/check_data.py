"""Check a config's dataset on disk before a long run (``tools/check_data.py CONFIG`` and the training pre-flight).

Two levels, both through the task's own datasets (built exactly as training builds them):

- layout (cheap, no decoding; ``tools/train.py`` runs it before the first step): building the datasets pairs
  images with masks or depth maps and reads the list and annotation files; then the counts are compared with the
  official release (the task's ``TaskSpec.releases``), and what a dataset would only find out when it reads a
  sample is looked up now (its ``layout_problems()``, e.g. COCO images named in the json but missing on disk;
  class folders that differ between the splits).
- samples (``tools/check_data.py``): a spread of samples per split is decoded with the dataset's own reader,
  through the guard every reader of the engine uses (``samples.read_guarded``), which refuses truncated images,
  depth PNGs in metres instead of millimetres, masks with labels outside the classes and images whose size
  differs from their target's; the table shows the sizes and the targets' range.

A task adds its own checks through its ``TaskSpec.checks`` (a ``DataChecks``): ``layout`` and ``compare`` run
with the layout level (so at training start-up too), ``sample`` on each decoded sample (e.g. panoptic's PNG ids
against the json's segments).

A layout problem or an unreadable sample makes the data "broken"; a count that differs from the official
release is a warning (a subset may be deliberate).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import ConfigError
from .registry import build_task, get_task_spec, list_tasks
from .samples import BadSample, read_guarded

_SHOW = 3  # problems listed per kind before "... and N more"


@dataclass(frozen=True)
class Release:
    """An official dataset a task declares (``TaskSpec.releases``): the config's data section class that reads it,
    images per split (train, val), what the files should contain, ``applies(data_section)`` when the class also
    reads a user's own data (default: always the release), and the class count it has (None: not checked)."""

    data: type
    name: str
    counts: tuple[int, int]
    contents: str
    applies: Callable[[object], bool] | None = None
    classes: int | None = None


@dataclass(frozen=True)
class DataChecks:
    """The checks a task declares for its data (``TaskSpec.checks``), each returning problems (one line each):
    ``layout(dataset)`` for one split without decoding, ``compare(cfg, train, val)`` between the splits and
    against the config (reported on val), ``sample(sample)`` for one decoded, untransformed sample (``read``)."""

    layout: Callable[[object], list[str]] | None = None
    compare: Callable[[object, object, object], list[str]] | None = None
    sample: Callable[[dict], list[str]] | None = None


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
    wrong: list[str] = field(default_factory=list)  # the task's sample check on samples that could be read
    summary: str = ""


@dataclass
class DataCheck:
    dataset: str
    contents: str
    splits: list[SplitCheck]
    location: str = ""

    @property
    def ok(self) -> bool:
        return not any(s.problems or s.failed or s.wrong for s in self.splits)

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
            lines += [f"wrong ({s.split}): {w}" for w in _capped(s.wrong)]
            lines += [f"warning ({s.split}): {w}" for w in s.warnings]
        broken = sum(len(s.problems) + len(s.failed) + len(s.wrong) for s in self.splits)
        lines.append("result: OK" if self.ok else f"result: BROKEN ({broken} problem{'s' * (broken != 1)})")
        return "\n".join(lines)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _capped(items: list[str]) -> list[str]:
    return items[:_SHOW] + ([f"... and {len(items) - _SHOW} more"] if len(items) > _SHOW else [])


def release_of(cfg) -> Release | None:
    """The official release a config's data section describes (its task's ``TaskSpec.releases``), or None for a
    user's folder or synthetic data."""
    releases = get_task_spec(cfg.task).releases if cfg.task in list_tasks() else ()  # the engine also runs bare Tasks
    for release in releases:
        if type(cfg.data) is release.data and (release.applies is None or release.applies(cfg.data)):
            return release
    return None


def task_checks(cfg) -> DataChecks:
    """The checks ``cfg``'s task declares (none for a task the registry does not know, as the engine's tests use)."""
    checks = get_task_spec(cfg.task).checks if cfg.task in list_tasks() else None
    return checks if checks is not None else DataChecks()


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
    """Counts against the official release, the pairing checks that need no decoding and the task's own
    ``layout`` / ``compare`` checks."""
    release, checks = release_of(cfg), task_checks(cfg)
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
        s.problems += ds.layout_problems(_SHOW) if hasattr(ds, "layout_problems") else []
        s.problems += checks.layout(ds) if checks.layout is not None else []
    _compare_classes(cfg, datasets, check)
    built = [d for d in datasets.values() if not isinstance(d, Exception)]
    if checks.compare is not None and len(built) == 2:
        check.splits[1].problems += checks.compare(cfg, *built)
    return check


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
    release = release_of(cfg)
    if release is not None and release.classes is not None and len(train) != release.classes:
        check.splits[0].warnings.append(f"{len(train)} class folders, the official release has {release.classes:,}")


def check_samples(check: DataCheck, datasets: dict[str, object], samples: int | None, spec, workers: int = 8) -> None:
    """Decode ``samples`` evenly spread samples per split (None: all) with the dataset's own ``read``; ``spec``
    (the task's ``TaskSpec``) checks them (``checks.sample``) and summarises what they hold."""
    sample_check = spec.checks.sample if spec.checks is not None else None
    for s in check.splits:
        ds = datasets[s.split]
        if isinstance(ds, Exception) or not s.found:
            continue
        n = s.found if samples is None else min(samples, s.found)
        indices = np.unique(np.linspace(0, s.found - 1, n).round().astype(int)) if n else []
        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoders release the GIL
            results = list(pool.map(lambda i: read_guarded(ds.read, int(i)), indices))
        good = [r for r in results if not isinstance(r, BadSample)]
        s.failed = [r.message for r in results if isinstance(r, BadSample)]
        s.wrong = [p for r in good for p in sample_check(r)] if sample_check is not None else []
        s.read = len(results)
        s.summary = summarize(good, ds, spec.summarize)


def summarize(samples: list[dict], ds, targets=None) -> str:
    """Image sizes over ``samples`` (untransformed samples of one dataset), then ``targets(samples, ds)``: the
    task's own lines about what the targets hold (``TaskSpec.summarize``)."""
    if not samples:
        return ""
    hs, ws = zip(*(s["image"].shape[:2] for s in samples))
    parts = [f"{min(hs)}-{max(hs)} x {min(ws)}-{max(ws)} px" if (min(hs), min(ws)) != (max(hs), max(ws))
             else f"{hs[0]} x {ws[0]} px"]
    if targets is not None:
        parts += targets(samples, ds)
    return "; ".join(parts)


def check_data(cfg, samples: int | None = 100, task=None) -> DataCheck:
    """The whole check for a config: layout, then ``samples`` decoded samples per split (0: layout only)."""
    spec = get_task_spec(cfg.task)
    datasets = build_datasets(task if task is not None else build_task(cfg))
    check = check_layout(cfg, datasets)
    if samples != 0:
        check_samples(check, datasets, samples, spec)
    return check


def preflight(cfg, train, val) -> list[str]:
    """The training pre-flight on the datasets training just built: a ValueError naming the first layout problem,
    else the warnings (one line each) for the caller to print."""
    check = check_layout(cfg, {"train": train, "val": val})
    for s in check.splits:
        if s.problems:
            raise ValueError(f"{check.dataset} {s.split}: {s.problems[0]} (see python tools/check_data.py CONFIG)")
    return [f"{check.dataset} {s.split}: {w}" for s in check.splits for w in s.warnings]
