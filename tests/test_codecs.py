"""JPEG pixels straight into arrays (io/codecs.py): Pillow's pixels, or None to fall back."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from convvol.io.codecs import decode_jpeg

pytest.importorskip("imagecodecs")


def photo(height: int = 61, width: int = 83) -> np.ndarray:
    """Smooth colours with noise: what JPEG sees in photos, sizes not multiples of 8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [128 + 100 * np.sin(xx / (7 + c) + yy / (11 - c)) for c in range(3)]
    noisy = np.stack(planes, axis=2) + rng.normal(0, 12, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, mode: str | None = None, **options: object) -> io.BytesIO:
    stream = io.BytesIO()
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(stream, "JPEG", **options)
    stream.seek(0)
    return stream


def pillow_pixels(stream: io.BytesIO) -> np.ndarray:
    stream.seek(0)
    with Image.open(stream) as image:
        pixels = np.asarray(image)
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


@pytest.mark.parametrize("options", [
    {"quality": 95}, {"quality": 95, "subsampling": 0}, {"quality": 75, "subsampling": 1},
    {"quality": 90, "progressive": True}, {"quality": 90, "restart_marker_blocks": 2},
    {"quality": 90, "optimize": True},
])  # fmt: skip
def test_colour_jpegs_decode_to_pillows_pixels(options):
    stream = jpeg(photo(), **options)
    with Image.open(stream) as image:
        decoded = decode_jpeg(image, stream)
    assert decoded is not None
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pillow_pixels(stream))


def test_greyscale_jpegs_decode_to_one_channel():
    stream = jpeg(photo()[:, :, 1])
    with Image.open(stream) as image:
        decoded = decode_jpeg(image, stream)
    assert decoded is not None
    assert decoded.shape == (61, 83, 1)
    np.testing.assert_array_equal(decoded, pillow_pixels(stream))


def test_icc_and_exif_do_not_change_the_pixels():
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "maker"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    stream = jpeg(photo(), exif=exif, icc_profile=icc)
    with Image.open(stream) as image:
        decoded = decode_jpeg(image, stream)
    assert decoded is not None
    np.testing.assert_array_equal(decoded, pillow_pixels(stream))


def test_cmyk_pngs_and_damaged_files_are_left_to_pillow():
    cmyk = jpeg(photo(), mode="CMYK")
    with Image.open(cmyk) as image:
        assert decode_jpeg(image, cmyk) is None
    png = io.BytesIO()
    Image.fromarray(photo()).save(png, "PNG")
    with Image.open(png) as image:
        assert decode_jpeg(image, png) is None
    whole = jpeg(photo()).getvalue()
    truncated = io.BytesIO(whole[: len(whole) // 3])
    with Image.open(truncated) as image:
        assert decode_jpeg(image, truncated) is None


def test_without_imagecodecs_pillow_decodes(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import fails
    stream = jpeg(photo())
    with Image.open(stream) as image:
        assert decode_jpeg(image, stream) is None
