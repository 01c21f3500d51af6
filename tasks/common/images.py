"""Reading image files, for every dataset and tool: a bad file is one error that names it.

``read_image`` gives ``uint8 [H, W, 3]`` RGB; ``read_image_unchanged`` gives the stored array (dtype and
channels as in the file, e.g. a uint16 depth PNG). Both decode with OpenCV, ignoring the EXIF orientation (so
the pixels line up with masks and depth maps, which carry none, and with COCO's ``height``/``width``).

Errors: a missing file is a ``FileNotFoundError``; an empty, truncated or undecodable file a ``ValueError``
naming it. libjpeg decodes a JPEG cut short without failing (it fills the rest grey and prints "Premature end
of JPEG file" with no file name), so truncation is checked on the bytes before decoding, cheaply: a JPEG must
have its end-of-image marker after its last scan, a PNG its ``IEND`` chunk.

ImageNet's statistics, the normalisation every pretrained backbone here expects, are defined once:
``IMAGENET_MEAN`` / ``IMAGENET_STD`` on pixels scaled to 0..1, and the ``_255`` pair for pipelines that
normalise 0..255 pixels (mmseg's ``123.675, ...``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on pixels scaled to 0..1
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN_255 = tuple(round(255 * m, 3) for m in IMAGENET_MEAN)  # (123.675, 116.28, 103.53)
IMAGENET_STD_255 = tuple(round(255 * s, 3) for s in IMAGENET_STD)  # (58.395, 57.12, 57.375)

_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC (always the same)
_COLOUR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION

PathLike = Union[str, Path]


def check_image(image, who: str = "image") -> np.ndarray:
    """A raw image as every ``predict``, picture and image transform takes it: ``np.ndarray`` uint8 ``[H, W, 3]``
    RGB; anything else is a TypeError naming ``who``. Returns ``image``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"{who} must be an HxWx3 uint8 RGB np.ndarray (uint8 [H, W, 3]), got {got}")
    return image


def read_image(path: PathLike) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB (grey images are repeated to three channels, alpha is dropped)."""
    image = _decode(path, _COLOUR, "image file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_unchanged(path: PathLike, what: str = "image file") -> np.ndarray:
    """The stored array: ``[H, W]`` or ``[H, W, C]`` (BGR order for colour), in the file's dtype. ``what``
    names the file in errors (e.g. "depth file")."""
    return _decode(path, cv2.IMREAD_UNCHANGED, what)


def _decode(path: PathLike, flags: int, what: str) -> np.ndarray:
    path = Path(path)
    data = read_bytes(path, what)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None:
        raise ValueError(f"cannot read {what} {path}: not an image, or a format OpenCV cannot decode")
    return array


def read_bytes(path: PathLike, what: str = "image file") -> bytes:
    """The bytes of an image file, checked to be complete: ``FileNotFoundError`` if it is missing,
    ``ValueError`` if it is empty, unreadable or a truncated JPEG or PNG."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if not data:
        raise ValueError(f"cannot read {what} {path}: it is empty (0 bytes)")
    # In a JPEG's entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so the last
    # start-of-scan marker is the last scan's, and the end-of-image marker must follow it.
    if data.startswith(_JPEG_START) and data.rfind(_JPEG_END) < max(data.rfind(_JPEG_SCAN), 0):
        raise ValueError(f"{what} {path} is truncated: the JPEG has no end-of-image marker after its last scan")
    if data.startswith(_PNG_SIGNATURE) and data.rfind(_PNG_END) < 0:
        raise ValueError(f"{what} {path} is truncated: the PNG has no IEND chunk")
    return data
