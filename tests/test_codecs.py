"""JPEGs straight into and out of arrays (io/codecs.py): Pillow's pixels and Pillow's files,
byte for byte, or None to fall back."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from convvol.io.codecs import decode_jpeg, encode_jpeg

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


def pillow_file(pixels: np.ndarray, options: dict) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(
        stream, "JPEG", **options
    )
    return stream.getvalue()


def sample_icc(size: int) -> bytes:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return icc if size <= len(icc) else icc + bytes(size - len(icc))  # padded: 2 chunks


def sample_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0132] = "maker", "2026:12:06 12:00:00"
    return exif.tobytes()  # with JPEG's "Exif\0\0", as pillow_options passes it


METADATA = [
    {},
    {"exif": sample_exif()},
    {"xmp": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"},
    {"icc_profile": sample_icc(0)},
    {"icc_profile": sample_icc(150_000)},  # three APP2 chunks
    {"dpi": (72.0, 72.0)},
    {"dpi": (300.4, 299.5)},  # Pillow rounds each
    {"dpi": (0.0, 96.0)},  # not both positive: no resolution written
    {"exif": sample_exif(), "xmp": b"<x/>", "icc_profile": sample_icc(0), "dpi": (240, 240)},
]


@pytest.mark.parametrize("metadata", METADATA, ids=range(len(METADATA)))
@pytest.mark.parametrize("quality", [1, 50, 92, 100])
@pytest.mark.parametrize("subsampling", [None, 0, 1, 2])
def test_colour_jpegs_encode_to_pillows_bytes(metadata, quality, subsampling):
    pixels = photo()
    options = {"quality": quality, **metadata}
    if subsampling is not None:
        options["subsampling"] = subsampling
    pieces = encode_jpeg(pixels, options)
    assert pieces is not None
    assert b"".join(pieces) == pillow_file(pixels, options)


@pytest.mark.parametrize("metadata", METADATA[:4], ids=range(4))
@pytest.mark.parametrize("quality", [1, 92, 100])
def test_greyscale_jpegs_encode_to_pillows_bytes(metadata, quality):
    pixels = photo(37, 16)[:, :, 1:2]
    options = {"quality": quality, **metadata}
    pieces = encode_jpeg(pixels, options)
    assert pieces is not None
    assert b"".join(pieces) == pillow_file(pixels, options)


def test_a_strided_array_encodes_as_its_copy():
    pixels = photo(40, 60)
    strided = np.concatenate([pixels, pixels], axis=1)[:, ::2]
    pieces = encode_jpeg(strided, {"quality": 90})
    assert pieces is not None
    assert b"".join(pieces) == pillow_file(np.ascontiguousarray(strided), {"quality": 90})


@pytest.mark.parametrize("options", [
    {"quality": 92, "optimize": True},  # a keyword encode_jpeg does not reproduce
    {"quality": 0},
    {"quality": "keep"},
    {"subsampling": 2},  # no quality: Pillow's own default
    {"quality": 92, "subsampling": "4:2:0"},
    {"quality": 92, "exif": b"Exif\x00\x00" + bytes(70_000)},  # too long: Pillow says so
    {"quality": 92, "xmp": bytes(65_510)},
    {"quality": 92, "dpi": (70_000, 70_000)},
    {"quality": 92, "exif": b""},
])  # fmt: skip
def test_what_encode_jpeg_cannot_promise_is_left_to_pillow(options):
    assert encode_jpeg(photo(), options) is None


def test_greyscale_with_subsampling_and_other_pixels_are_left_to_pillow():
    assert encode_jpeg(photo()[:, :, :1], {"quality": 92, "subsampling": 2}) is None
    assert encode_jpeg(photo().astype(np.uint16), {"quality": 92}) is None
    assert encode_jpeg(np.dstack([photo(), photo()[:, :, :1]]), {"quality": 92}) is None


def test_without_imagecodecs_pillow_encodes(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    assert encode_jpeg(photo(), {"quality": 92}) is None
