"""Predict on image files and write one picture per image: what ``tools/infer.py`` runs, for any task.

A predictor is a task model (``model.predict``) or an exported ONNX file (``tasks.common.export``'s predictor):
anything with ``task``, ``class_names`` and ``predict(image)``; the picture is the task's ``TaskSpec.picture``. One unreadable image is reported and skipped;
the others are still done. Output names are unique: ``<stem>.png``, or, where stems collide (``a/x.jpg`` and
``b/x.jpg``, ``x.png`` and ``x.jpg``), the path below the inputs' common folder with ``__`` for ``/``.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from .common.images import read_image
from .common.registry import get_task_spec, task_specs


def task_options(task: str, options: dict) -> tuple[dict, dict]:
    """``(predict options, picture options)`` for the command-line ``options`` given (``{"flip": True}``), routed
    by the task's ``TaskSpec.predict_options`` / ``picture_options``; one the task does not take is a ValueError
    naming the tasks that do."""
    spec = get_task_spec(task)
    predict = {k: v for k, v in options.items() if k in spec.predict_options}
    picture = {k: v for k, v in options.items() if k in spec.picture_options}
    for key in sorted(set(options) - set(predict) - set(picture)):
        takers = [s.name for s in task_specs() if key in s.predict_options + s.picture_options]
        raise ValueError(f"--{key} is for {' and '.join(takers) or 'no'} models, not {task}")
    return predict, picture


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A unique PNG file name for each input path (see the module docstring)."""
    paths = [Path(p).resolve() for p in paths]
    stems = Counter(p.stem for p in paths)
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()
    names = []
    for p in paths:
        if stems[p.stem] == 1:
            names.append(f"{p.stem}.png")
        else:
            names.append("__".join(p.relative_to(root).parts).replace(".", "_") + ".png")
    if len(set(names)) != len(names):
        repeated = sorted(n for n, c in Counter(names).items() if c > 1)
        raise ValueError(f"the same image is given more than once: {', '.join(repeated)}")
    return names


def infer_images(predictor, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 predict_options: dict | None = None, picture_options: dict | None = None) -> tuple[list[Path], list[str]]:
    """``(written PNGs, failures)``: each failure is one line naming the image and what went wrong."""
    save = get_task_spec(predictor.task).picture
    if save is None:
        raise ValueError(f"task {predictor.task!r} declares no picture (TaskSpec.picture)")
    names = output_names(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = predictor.class_names
    count = getattr(predictor, "num_classes", None)
    if class_names is None and count:  # a model trained without names: number them
        class_names = tuple(f"class {i}" for i in range(count))
    written, failures = [], []
    for path, name in zip(tqdm(paths, desc="predict", unit="image", disable=len(paths) < 2), names):
        try:
            image = read_image(path)
            prediction = predictor.predict(image, **(predict_options or {}))
        except (FileNotFoundError, ValueError) as e:  # unreadable, or e.g. smaller than the model's minimum
            failures.append(f"{path}: {e}" if str(path) not in str(e) else str(e))
            continue
        target = out_dir / name
        tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}.png")
        try:
            save(tmp, image, prediction, class_names=class_names, **(picture_options or {}))
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            failures.append(f"cannot write {target}: {e.strerror or e}")
            continue
        written.append(target)
    return written, failures
