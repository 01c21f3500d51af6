"""tasks.common.images: RGB decoding, EXIF orientation ignored, and one clear error per kind of bad file."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from tasks.common.images import (
    IMAGENET_MEAN,
    IMAGENET_MEAN_255,
    IMAGENET_STD,
    IMAGENET_STD_255,
    read_image,
    read_image_unchanged,
)


def picture(height=48, width=64) -> np.ndarray:
    """A smooth RGB gradient (JPEG keeps it close) with a distinct colour per corner."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([255 * x // (width - 1), 255 * y // (height - 1), 255 - 255 * x // (width - 1)], -1).astype(np.uint8)


def encoded(array: np.ndarray, suffix: str, **params) -> bytes:
    bgr = array[..., ::-1] if array.ndim == 3 else array
    ok, data = cv2.imencode(suffix, bgr, [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else [])
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_reads_rgb_uint8(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    path.write_bytes(encoded(picture(), suffix))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    assert np.abs(image.astype(int) - picture()).max() <= (0 if suffix != ".jpg" else 24)
    assert image[0, -1].argmax() == 0 and image[0, 0].argmax() == 2  # red right, blue left: RGB, not BGR
    assert np.array_equal(read_image(str(path)), image)  # str paths too


def test_grey_is_repeated_and_alpha_dropped(tmp_path):
    grey = picture()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.concatenate([picture(), np.full((48, 64, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), picture())


def test_exif_orientation_is_ignored(tmp_path):
    """A camera JPEG tagged "rotate 90" keeps its stored pixel grid, like the masks and annotations made for it."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(picture()).save(buffer, format="JPEG", quality=95, exif=exif)
    (tmp_path / "rotated.jpg").write_bytes(buffer.getvalue())
    assert read_image(tmp_path / "rotated.jpg").shape == (48, 64, 3)


def test_unchanged_keeps_16_bits(tmp_path):
    depth = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 13)
    (tmp_path / "d.png").write_bytes(encoded(depth, ".png"))
    array = read_image_unchanged(tmp_path / "d.png")
    assert array.dtype == np.uint16 and np.array_equal(array, depth)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file .*nope\.jpg does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path)  # a folder is not an image file


@pytest.mark.parametrize("suffix, keep", [(".jpg", 0.6), (".jpg", 0.98), (".png", 0.5), (".png", 0.999)])
def test_truncated_files_are_refused(tmp_path, capfd, suffix, keep):
    data = encoded(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), suffix)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=rf"image file .*cut\{suffix} is truncated"):
        read_image(path)
    with pytest.raises(ValueError, match="is truncated"):
        read_image_unchanged(path)
    assert "Premature end" not in capfd.readouterr().err  # refused before libjpeg sees it


def test_jpeg_cut_inside_its_headers_is_truncated(tmp_path):
    data = encoded(picture(), ".jpg")
    (tmp_path / "head.jpg").write_bytes(data[: data.find(b"\xff\xda")])  # everything before the first scan
    with pytest.raises(ValueError, match="head.jpg is truncated"):
        read_image(tmp_path / "head.jpg")


def test_trailing_bytes_after_a_complete_file_are_fine(tmp_path):
    """Some cameras append data after the end-of-image marker; the image itself is complete."""
    (tmp_path / "tail.jpg").write_bytes(encoded(picture(), ".jpg") + b"\x00" * 100 + b"vendor trailer")
    assert read_image(tmp_path / "tail.jpg").shape == (48, 64, 3)


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"\x00garbage, not an image" * 10, "not an image"),
    (b"%PDF-1.4 a document", "not an image"),
])
def test_empty_and_foreign_files_are_named(tmp_path, content, words):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"cannot read image file .*bad\.jpg: .*{words}"):
        read_image(path)


def test_imagenet_statistics_in_both_units():
    assert np.allclose(np.array(IMAGENET_MEAN) * 255, IMAGENET_MEAN_255, rtol=0, atol=1e-9)
    assert np.allclose(np.array(IMAGENET_STD) * 255, IMAGENET_STD_255, rtol=0, atol=1e-9)
    assert IMAGENET_MEAN_255 == (123.675, 116.28, 103.53) and IMAGENET_STD_255 == (58.395, 57.12, 57.375)
