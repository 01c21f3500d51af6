"""Predict on image files and write one picture and one machine-readable result per image: what
``tools/infer.py`` runs, for any task, in one process or sharded over many (``torchrun``).

Images are read with their EXIF orientation applied (a phone photo is predicted and drawn upright); a folder
given as an image stands for the image files in it (not its subfolders), a ``.txt`` file for the paths it lists.
Results (``tasks.infer_results``: label / depth / panoptic PNGs in the datasets' formats, COCO detection
entries, top-5 classes) go to ``results/``, one ``.json`` line per image written last: an image whose line
exists is skipped, so a killed run continues where it stopped. ``write_index`` gathers the lines into
``index.jsonl`` (and ``detections.jsonl``). Images larger than ``max_pixels`` are predicted scaled down and their
prediction scaled back up (``tasks.infer_results.predict_bounded``).

A predictor is a task model (``model.predict``) or an exported ONNX file (``tasks.common.export``'s predictor):
anything with ``task``, ``class_names`` and ``predict(image)``; the picture is the task's ``TaskSpec.picture``.
One unreadable image is reported and skipped; the others are still done. Output names are unique: ``<stem>.png``, or, where stems collide (``a/x.jpg`` and
``b/x.jpg``, ``x.png`` and ``x.jpg``), the path below the inputs' common folder with ``__`` for ``/``.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from .common.images import read_image
from .common.registry import get_task_spec, list_tasks, task_specs
from .infer_results import MAX_PIXELS, Result, predict_bounded, result_of


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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """``paths`` with each folder replaced by its image files (sorted) and each ``.txt`` list by the paths it holds
    (one a line; relative ones from the list's folder; blank lines and ``#`` comments skipped); a folder without
    images is a ValueError."""
    out = []
    for p in map(Path, paths):
        if p.suffix.lower() == ".txt" and p.is_file():
            listed = [line.strip() for line in p.read_text().splitlines()]
            out += [p.parent / line for line in listed if line and not line.startswith("#")]
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"the folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


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


def validation_pictures(model, dataset, count: int = 4) -> list[tuple[str, np.ndarray]]:
    """``[(name, uint8 [H, W, 3])]``: ``tools/infer.py``'s picture of ``model.predict`` on ``count`` images spread
    over ``dataset`` (read untransformed, with ``dataset.read``), for TensorBoard; none for a model or dataset
    without ``predict`` / ``read``."""
    task = getattr(model, "task", None)
    save = get_task_spec(task).picture if task in list_tasks() else None
    if save is None or not hasattr(model, "predict") or not hasattr(dataset, "read") or len(dataset) == 0:
        return []
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for index in sorted({round(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))}):
            image = dataset.read(index)["image"]
            path = Path(folder) / f"{index}.png"
            save(path, image, model.predict(image), class_names=_class_names(model))
            out.append((str(index), read_image(path)))
    return out


def _class_names(predictor):
    count = getattr(predictor, "num_classes", None)
    if predictor.class_names is None and count:  # a model trained without names: number them
        return tuple(f"class {i}" for i in range(count))
    return predictor.class_names


def infer_images(predictor, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 predict_options: dict | None = None, picture_options: dict | None = None, results: bool = True,
                 max_pixels: int = MAX_PIXELS, rank: int = 0, world_size: int = 1,
                 on_failure=None) -> tuple[list[Path], list[str]]:
    """``(written PNGs, failures)`` for this process's share of ``paths`` (every ``world_size``-th image from
    ``rank``): each failure is one line naming the image and what went wrong (any exception: an unreadable
    file, an image the model refuses, memory), passed to ``on_failure`` as it happens; the other images go on.

    With ``results``, each image also gets its machine-readable result (``tasks.infer_results``) under
    ``<out_dir>/results/``: ``<name>.png`` where the result is a map, and ``<name>.json`` (its index line),
    written last, so an image whose ``.json`` exists is done and skipped by a run that continues a killed one.
    ``write_index`` gathers the lines."""
    save = get_task_spec(predictor.task).picture
    if save is None:
        raise ValueError(f"task {predictor.task!r} declares no picture (TaskSpec.picture)")
    paths = expand_images(paths)
    names = output_names(paths)
    out_dir = Path(out_dir)
    (out_dir / "results" if results else out_dir).mkdir(parents=True, exist_ok=True)
    class_names = _class_names(predictor)
    mine = [(p, n) for p, n in list(zip(paths, names))[rank::world_size]
            if not (results and (out_dir / "results" / f"{Path(n).stem}.json").is_file())]
    written, failures = [], []
    for path, name in tqdm(mine, desc="predict", unit="image", disable=len(mine) < 2 or rank != 0):
        try:
            written.append(_infer_one(predictor, path, out_dir, name, save, class_names, predict_options or {},
                                      picture_options or {}, results, max_pixels))
        except Exception as e:  # noqa: BLE001  one image, whatever went wrong, is one line; the rest go on
            failures.append(_failure_line(path, e))
            if on_failure is not None:
                on_failure(failures[-1])
    return written, failures


def _infer_one(predictor, path: Path, out_dir: Path, name: str, save, class_names, predict_options: dict,
               picture_options: dict, results: bool, max_pixels: int) -> Path:
    image = read_image(path, exif=True)
    prediction = predict_bounded(predictor, image, predict_options, max_pixels)
    target = out_dir / name
    _write_atomic(target, lambda tmp: save(tmp, image, prediction, class_names=class_names, **picture_options))
    if results:
        stem = Path(name).stem
        result = result_of(prediction, Path(path).stem, class_names) or Result()
        record = {"image": str(path), "picture": name, "height": image.shape[0], "width": image.shape[1]}
        if result.png is not None:
            record["result"] = f"results/{stem}.png"
            _write_atomic(out_dir / record["result"], lambda tmp: _write_png(tmp, result.png))
        record.update(result.record)
        if result.coco:
            record["coco"] = result.coco
        line = json.dumps(record)
        _write_atomic(out_dir / "results" / f"{stem}.json", lambda tmp: tmp.write_text(line + "\n"))
    return target


def _failure_line(path: Path, error: BaseException) -> str:
    text = " ".join(str(error).split())[:500] or type(error).__name__
    if not isinstance(error, (ValueError, OSError)):  # not a message of ours: say what kind of failure it was
        text = f"{type(error).__name__}: {text}"
    return text if str(path) in text else f"{path}: {text}"


def _write_png(path: Path, array: np.ndarray) -> None:
    bgr = array[:, :, ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(bgr)):
        raise OSError(f"cannot write {path}")


def _write_atomic(target: Path, write) -> None:
    """``write(tmp)`` a temporary name beside ``target``, then rename it; on failure nothing is left."""
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(f"cannot write {target}: {e.strerror or e}") from e
        raise


def gather_failures(failures: Sequence[str]) -> list[str]:
    """Every process's failure lines once all have finished (their own lines in a single process). The wait has
    no practical limit: the processes' shares can take very different times (a collective's default is 30 min)."""
    from datetime import timedelta

    import torch.distributed as dist

    from .common.distributed import all_gather_objects, is_distributed

    if is_distributed():
        dist.monitored_barrier(timeout=timedelta(days=7))
    return [line for part in all_gather_objects(list(failures)) for line in part]


def write_index(out_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], failures: Sequence[str] = ()) -> dict:
    """Gather the per-image results of ``paths`` (all processes') into ``<out_dir>/index.jsonl`` (one line per
    finished image, in input order), ``detections.jsonl`` (COCO result entries, where there are any) and
    ``failures.txt`` (``failures``, one line each, where there are any). Returns the counts."""
    out_dir = Path(out_dir)
    paths = expand_images(paths)
    lines, coco, missing = [], [], 0
    for name in output_names(paths):
        record_path = out_dir / "results" / f"{Path(name).stem}.json"
        if not record_path.is_file():
            missing += 1
            continue
        record = json.loads(record_path.read_text())
        coco += record.pop("coco", [])
        lines.append(json.dumps(record))
    _write_atomic(out_dir / "index.jsonl", lambda tmp: tmp.write_text("".join(f"{x}\n" for x in lines)))
    if coco:
        _write_atomic(out_dir / "detections.jsonl",
                      lambda tmp: tmp.write_text("".join(json.dumps(c) + "\n" for c in coco)))
    if failures:
        _write_atomic(out_dir / "failures.txt", lambda tmp: tmp.write_text("".join(f"{f}\n" for f in failures)))
    return {"images": len(paths), "done": len(lines), "missing": missing, "detections": len(coco)}
