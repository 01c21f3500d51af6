"""The picture ``tools/infer.py`` writes for a classifier: the image beside its top-5 classes as probability bars."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from tasks.common.images import check_image

_PANEL_WIDTH = 360
_ROW = 44
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def render_classification(image: np.ndarray, probs, class_names: Sequence[str] | None, top: int = 5) -> np.ndarray:
    """``uint8 [H', W', 3]`` RGB: ``image[H, W, 3]`` (uint8 RGB, scaled to a height of at least ``top`` rows) with a
    panel listing the ``top`` most probable classes, their probabilities as numbers and bars.

    ``probs``: ``[K]`` probabilities (``ImageClassifier.predict``); ``class_names``: K names or None
    (then ``class <k>``). Only the first synonym of a name is drawn (ImageNet's ``"tench, Tinca tinca"``)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    check_image(image)
    if class_names is not None and len(class_names) != len(probs):
        raise ValueError(f"{len(class_names)} class names for {len(probs)} probabilities")
    order = np.argsort(-probs, kind="stable")[:top]
    height = max(image.shape[0], 16 + _ROW * len(order))
    scale = height / image.shape[0]
    picture = cv2.resize(image, (round(image.shape[1] * scale), height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    panel = np.full((height, _PANEL_WIDTH, 3), 255, np.uint8)
    for row, k in enumerate(order):
        name = class_names[k].split(",")[0] if class_names is not None else f"class {k}"
        y = 12 + row * _ROW
        cv2.putText(panel, f"{_ascii(name)[:30]}  {100 * probs[k]:.1f}%", (10, y + 14), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(panel, (10, y + 22), (10 + round((_PANEL_WIDTH - 20) * float(probs[k])), y + 34), (31, 119, 180), -1)
        cv2.rectangle(panel, (10, y + 22), (_PANEL_WIDTH - 10, y + 34), (160, 160, 160), 1)
    return np.concatenate([picture, panel], axis=1)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def save_prediction_png(path: str | Path, image: np.ndarray, prediction: np.ndarray, *, class_names=None, top: int = 5) -> None:
    """The classification task's picture of ``model.predict(image)`` (``tools/infer.py``): ``render_classification``."""
    picture = render_classification(image, prediction, class_names, top=top)
    ok, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    Path(path).write_bytes(data.tobytes())
