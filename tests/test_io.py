"""Tests for convvol.io: reading images and .npy files as volumes, writing them back.

Images are small and synthetic (numpy + Pillow, in tmp_path), plus the bundled samples.
16-bit colour PNGs are also built byte by byte here (zlib, every PNG filter type, Adam7
interlacing), because Pillow itself only decodes them to 8 bits per sample.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

import convvol
import convvol.io.png
import convvol.io.writers
from convvol import read_volume, write_volume
from convvol.io import OutputSet, pixels_to_volume, read_pixels

REPO = Path(__file__).parents[1]
SAMPLES = REPO / "sample_images"
PART_GLOB = ".*.convvol-part"
EXIF_ORIENTATION = 0x0112


# --- helpers ------------------------------------------------------------------------------


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_u8(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, tuple(shape), dtype=np.uint8)


def random_u16(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 65536, tuple(shape), dtype=np.uint16)


def smooth_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth float image in [0.1, 0.9], which lossy codecs keep close."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack(
        [0.1 + 0.8 * x / (width - 1), 0.1 + 0.8 * y / (height - 1), np.full_like(x, 0.5)],
        axis=2,
    )


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save(path: Path, image: Image.Image, **options: Any) -> Path:
    image.save(path, **options)
    return path


def to_u8(volume: np.ndarray) -> np.ndarray:
    return np.rint(volume * 255).astype(np.uint8)


def to_u16(volume: np.ndarray) -> np.ndarray:
    return np.rint(volume.astype(np.float64) * 65535).astype(np.uint16)


def pillow_view(data: bytes, mode: str = "RGB") -> np.ndarray:
    """What Pillow shows for ``data``: EXIF-transposed, converted, as float in [0, 1]."""
    with Image.open(io.BytesIO(data)) as image:
        shown = ImageOps.exif_transpose(image).convert(mode)
    return np.asarray(shown).astype(np.float32) / np.float32(255)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(PART_GLOB))


def assert_volume(volume: np.ndarray, shape: tuple[int, ...]) -> None:
    assert isinstance(volume, np.ndarray)
    assert volume.dtype == np.float32
    assert volume.shape == shape


# --- a PNG encoder of our own: 16-bit samples, all five filters, Adam7 --------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (first row, first column, row step, column step) of the seven Adam7 passes.
ADAM7 = [
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
]
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels → colour type (grey, grey+alpha, RGB, RGBA)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def paeth_predictor(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_scanlines(rows: list[bytes], bpp: int, filters: Sequence[int]) -> bytes:
    """Filter each row with the PNG filter type filters[row % len(filters)] (0–4)."""
    out = bytearray()
    prior = bytes(len(rows[0]))
    for index, row in enumerate(rows):
        kind = filters[index % len(filters)]
        out.append(kind)
        for i, raw in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            predicted = (0, a, b, (a + b) // 2, paeth_predictor(a, b, c))[kind]
            out.append((raw - predicted) % 256)
        prior = row
    return bytes(out)


def png16(pixels: np.ndarray, *, filters: Sequence[int] = (4,), interlace: bool = False) -> bytes:
    """A 16-bit-per-sample PNG of H×W×C uint16 ``pixels``, filtered and maybe interlaced."""
    height, width, channels = pixels.shape
    big_endian = pixels.astype(">u2")
    bpp = 2 * channels
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    data = b""
    for top, left, row_step, column_step in passes:
        sub = big_endian[top::row_step, left::column_step]
        if sub.size == 0:
            continue
        data += filter_scanlines([r.tobytes() for r in sub], bpp, filters)
    header = struct.pack(
        ">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, int(interlace)
    )
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(data, 9))
        + png_chunk(b"IEND", b"")
    )


def png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height, bits, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, bits, colour, interlace


def test_own_png_encoder_agrees_with_pillow_on_the_high_bytes() -> None:
    """Sanity check of the helper: Pillow decodes it (to 8 bits: the high bytes)."""
    pixels = random_u16((9, 11, 3), seed=3)
    for interlace in (False, True):
        data = png16(pixels, filters=(0, 1, 2, 3, 4), interlace=interlace)
        with Image.open(io.BytesIO(data)) as image:
            assert image.mode == "RGB"
            assert image.size == (11, 9)
            np.testing.assert_array_equal(np.asarray(image), (pixels >> 8).astype(np.uint8))


# --- reading: formats and channel modes ---------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "options"),
    [
        ("PNG", ".png", {}),
        ("TIFF", ".tif", {}),
        ("BMP", ".bmp", {}),
        ("WEBP", ".webp", {"lossless": True}),
    ],
)
def test_read_lossless_8_bit_rgb_exactly(
    tmp_path: Path, fmt: str, suffix: str, options: dict[str, Any]
) -> None:
    pixels = random_u8((7, 9, 3), seed=1)
    path = save(tmp_path / f"image{suffix}", Image.fromarray(pixels), format=fmt, **options)
    volume = read_volume(path)
    assert_volume(volume, (7, 9, 3))
    np.testing.assert_array_equal(volume, pixels.astype(np.float32) / np.float32(255))


def test_read_jpeg_matches_pillows_decoding(tmp_path: Path) -> None:
    image = Image.fromarray(to_u8(smooth_rgb()))
    path = save(tmp_path / "photo.jpg", image, quality=90)
    volume = read_volume(path)
    assert_volume(volume, (24, 32, 3))
    np.testing.assert_allclose(volume, pillow_view(path.read_bytes()), atol=1e-6)
    np.testing.assert_allclose(volume, smooth_rgb(), atol=0.05)


def test_values_are_divided_by_255(tmp_path: Path) -> None:
    pixels = np.array([[[0, 1, 2], [127, 128, 254], [255, 255, 255]]], np.uint8)
    volume = read_volume(save(tmp_path / "v.png", Image.fromarray(pixels)))
    assert volume[0, 0].tolist() == [0.0, np.float32(1 / 255), np.float32(2 / 255)]
    assert volume[0, 2].tolist() == [1.0, 1.0, 1.0]
    assert volume.min() >= 0.0
    assert volume.max() <= 1.0


@pytest.mark.parametrize(
    ("mode", "shape", "kept"),
    [("L", (5, 6), 1), ("LA", (5, 6, 2), 2), ("RGB", (5, 6, 3), 3), ("RGBA", (5, 6, 4), 4)],
)
def test_channels_keep_and_default_rgb(
    tmp_path: Path, mode: str, shape: tuple[int, ...], kept: int
) -> None:
    pixels = random_u8(shape, seed=2)
    path = save(tmp_path / f"{mode}.png", Image.fromarray(pixels, mode))
    with Image.open(path) as image:
        assert image.mode == mode

    keep = read_volume(path, channels="keep")
    assert_volume(keep, (5, 6, kept))
    np.testing.assert_array_equal(to_u8(keep), pixels.reshape(5, 6, kept))

    rgb = read_volume(path)
    assert_volume(rgb, (5, 6, 3))
    np.testing.assert_array_equal(rgb, read_volume(path, channels="rgb"))
    if kept <= 2:  # grey → three equal channels, alpha dropped
        for channel in range(3):
            np.testing.assert_array_equal(rgb[:, :, channel], keep[:, :, 0])
    else:  # alpha dropped
        np.testing.assert_array_equal(rgb, keep[:, :, :3])


def test_unknown_channels_mode_is_a_parameter_error(tmp_path: Path) -> None:
    path = save(tmp_path / "x.png", Image.fromarray(random_u8((2, 2, 3))))
    with pytest.raises(convvol.ParameterError, match="channels"):
        read_volume(path, channels="bgr")


def test_one_bit_image(tmp_path: Path) -> None:
    bits = (np.arange(12).reshape(3, 4) % 3 == 0).astype(np.uint8) * 255
    path = save(tmp_path / "bits.png", Image.fromarray(bits).convert("1"))
    with Image.open(path) as image:
        assert image.mode == "1"
    volume = read_volume(path, channels="keep")
    assert_volume(volume, (3, 4, 1))
    np.testing.assert_array_equal(volume[:, :, 0], bits / 255)


def palette_image(seed: int = 0) -> Image.Image:
    image = Image.fromarray(rng(seed).integers(0, 4, (4, 5), dtype=np.uint8), "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    return image


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_image_becomes_rgb(fmt: str) -> None:
    image = palette_image()
    data = encode(image, fmt)
    expected = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    for channels in ("rgb", "keep"):
        volume = read_volume(io.BytesIO(data), channels=channels)
        assert_volume(volume, (4, 5, 3))
        np.testing.assert_array_equal(volume, expected)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_image_with_transparency_becomes_rgba_under_keep(fmt: str) -> None:
    image = palette_image()
    data = encode(image, fmt, transparency=3)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "P"
        assert opened.info.get("transparency") == 3
    indices = np.asarray(image)
    keep = read_volume(io.BytesIO(data), channels="keep")
    assert_volume(keep, (4, 5, 4))
    np.testing.assert_array_equal(keep[:, :, 3], np.where(indices == 3, 0.0, 1.0))
    colours = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    opaque = indices != 3
    np.testing.assert_array_equal(keep[:, :, :3][opaque], colours[opaque])
    rgb = read_volume(io.BytesIO(data))
    assert_volume(rgb, (4, 5, 3))
    np.testing.assert_array_equal(rgb, keep[:, :, :3])


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_becomes_rgb(fmt: str) -> None:
    data = encode(Image.fromarray(random_u8((4, 5, 4), seed=4), "CMYK"), fmt)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "CMYK"
        expected = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    for channels in ("rgb", "keep"):
        volume = read_volume(io.BytesIO(data), channels=channels)
        assert_volume(volume, (4, 5, 3))
        np.testing.assert_allclose(volume, expected, atol=1e-6)


# --- reading: 16-bit images ---------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("TIFF", ".tif")])
def test_16_bit_greyscale_is_divided_by_65535(tmp_path: Path, fmt: str, suffix: str) -> None:
    pixels = random_u16((6, 7), seed=5)
    pixels[0, :3] = [0, 1, 65535]
    path = save(tmp_path / f"grey16{suffix}", Image.fromarray(pixels), format=fmt)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    keep = read_volume(path, channels="keep")
    assert_volume(keep, (6, 7, 1))
    np.testing.assert_array_equal(to_u16(keep[:, :, 0]), pixels)
    assert keep[0, 2, 0] == 1.0
    assert keep[0, 1, 0] == np.float32(1 / 65535)
    rgb = read_volume(path)
    assert_volume(rgb, (6, 7, 3))
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], keep[:, :, 0])


def test_16_bit_greyscale_png_by_hand() -> None:
    pixels = random_u16((6, 9, 1), seed=6)
    keep = read_volume(io.BytesIO(png16(pixels, filters=(4, 1, 3))), channels="keep")
    assert_volume(keep, (6, 9, 1))
    np.testing.assert_array_equal(to_u16(keep), pixels)


@pytest.mark.parametrize(
    "filters",
    [(0,), (1,), (2,), (3,), (4,), (4, 1, 3, 0, 2)],
    ids=["none", "sub", "up", "average", "paeth", "mixed"],
)
def test_48_bit_png_by_hand_keeps_all_16_bits(filters: tuple[int, ...]) -> None:
    pixels = random_u16((13, 11, 3), seed=7)
    pixels[0, 0] = [0x1234, 0x00FF, 0xFF00]  # low bytes that differ from high bytes
    data = png16(pixels, filters=filters)
    volume = read_volume(io.BytesIO(data))
    assert_volume(volume, (13, 11, 3))
    np.testing.assert_array_equal(to_u16(volume), pixels)
    np.testing.assert_allclose(volume * 65535, pixels.astype(np.float32), rtol=0, atol=0.01)
    assert volume[0, 0, 0] == np.float32(0x1234 / 65535)
    assert volume[0, 0, 0] != np.float32(0x12 / 255)  # not Pillow's 8-bit reading


@pytest.mark.parametrize("filters", [(0,), (4,), (1, 3, 4, 2, 0)], ids=["none", "paeth", "mixed"])
def test_interlaced_48_bit_png_keeps_all_16_bits(filters: tuple[int, ...]) -> None:
    pixels = random_u16((19, 17, 3), seed=8)  # not multiples of 8: partial Adam7 blocks
    data = png16(pixels, filters=filters, interlace=True)
    assert png_header(data)[4] == 1
    volume = read_volume(io.BytesIO(data))
    assert_volume(volume, (19, 17, 3))
    np.testing.assert_array_equal(to_u16(volume), pixels)


@pytest.mark.parametrize("interlace", [False, True])
def test_64_bit_rgba_png_keeps_all_16_bits(interlace: bool) -> None:
    pixels = random_u16((10, 12, 4), seed=9)
    data = png16(pixels, filters=(4, 3, 1), interlace=interlace)
    keep = read_volume(io.BytesIO(data), channels="keep")
    assert_volume(keep, (10, 12, 4))
    np.testing.assert_array_equal(to_u16(keep), pixels)
    rgb = read_volume(io.BytesIO(data))
    np.testing.assert_array_equal(to_u16(rgb), pixels[:, :, :3])


def test_48_bit_png_one_pixel() -> None:
    pixels = np.array([[[1, 256, 65534]]], np.uint16)
    volume = read_volume(io.BytesIO(png16(pixels)))
    np.testing.assert_array_equal(to_u16(volume), pixels)


def test_48_bit_png_written_by_convvol_round_trips(tmp_path: Path) -> None:
    pixels = random_u16((14, 10, 3), seed=10)
    volume = pixels.astype(np.float64) / 65535
    path = tmp_path / "deep.png"
    write_volume(path, volume, depth=16)
    np.testing.assert_array_equal(to_u16(read_volume(path)), pixels)


# --- reading: EXIF orientation ------------------------------------------------------------


def with_orientation(pixels: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    options: dict[str, Any] = {"exif": exif}
    if fmt == "JPEG":
        options["quality"] = 95
    if fmt == "WEBP":
        options["lossless"] = True
    return encode(Image.fromarray(pixels), fmt, **options)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_matches_pillows_exif_transpose(fmt: str, orientation: int) -> None:
    pixels = to_u8(smooth_rgb(6, 10))
    pixels[0, 0] = [255, 255, 255]  # a marked corner
    data = with_orientation(pixels, fmt, orientation)
    expected = pillow_view(data)
    volume = read_volume(io.BytesIO(data))
    rotated = orientation >= 5
    assert volume.shape == ((10, 6, 3) if rotated else (6, 10, 3))
    assert volume.shape == expected.shape
    np.testing.assert_allclose(volume, expected, atol=1e-6)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_in_tiff_matches_pillow(orientation: int) -> None:
    pixels = random_u8((6, 10, 3), seed=11)
    data = encode(Image.fromarray(pixels), "TIFF", tiffinfo={EXIF_ORIENTATION: orientation})
    expected = pillow_view(data)
    volume = read_volume(io.BytesIO(data))
    assert volume.shape == expected.shape
    np.testing.assert_array_equal(volume, expected)


def test_orientation_6_comes_back_rotated_clockwise(tmp_path: Path) -> None:
    pixels = random_u8((4, 7, 3), seed=12)
    path = tmp_path / "rotated.png"
    path.write_bytes(with_orientation(pixels, "PNG", 6))
    volume = read_volume(path)
    assert_volume(volume, (7, 4, 3))
    np.testing.assert_array_equal(to_u8(volume), np.rot90(pixels, -1))  # 90° clockwise
    keep = read_volume(path, channels="keep")
    assert keep.shape == (7, 4, 3)


def test_orientation_applies_to_48_bit_png() -> None:
    pixels = random_u16((4, 7, 3), seed=42)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    payload = exif.tobytes()
    assert payload.startswith(b"Exif\x00\x00")
    data = png16(pixels)
    idat = data.index(b"IDAT") - 4
    data = data[:idat] + png_chunk(b"eXIf", payload[6:]) + data[idat:]
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif().get(EXIF_ORIENTATION) == 6
    volume = read_volume(io.BytesIO(data))
    assert_volume(volume, (7, 4, 3))
    np.testing.assert_array_equal(to_u16(volume), np.rot90(pixels, -1))


def test_orientation_applies_to_greyscale_jpeg_under_keep() -> None:
    grey = to_u8(smooth_rgb(6, 10)[:, :, 0])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    data = encode(Image.fromarray(grey), "JPEG", exif=exif, quality=95)
    volume = read_volume(io.BytesIO(data), channels="keep")
    assert_volume(volume, (10, 6, 1))
    np.testing.assert_allclose(volume[:, :, 0], pillow_view(data, "L"), atol=1e-6)


# --- reading: multi-page TIFF -------------------------------------------------------------


def multipage_tiff(pages: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


@pytest.mark.parametrize("count", [2, 3, 5])
def test_multipage_tiff_of_grey_pages_is_a_stack(count: int) -> None:
    pages = random_u8((count, 5, 6), seed=13)
    data = multipage_tiff([Image.fromarray(page) for page in pages])
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == count
    for channels in ("rgb", "keep"):
        volume = read_volume(io.BytesIO(data), channels=channels)
        assert_volume(volume, (5, 6, count))
        np.testing.assert_array_equal(to_u8(volume), pages.transpose(1, 2, 0))


def test_multipage_tiff_of_16_bit_pages_is_a_stack() -> None:
    pages = random_u16((4, 3, 5), seed=14)
    data = multipage_tiff([Image.fromarray(page) for page in pages])
    volume = read_volume(io.BytesIO(data), channels="keep")
    assert_volume(volume, (3, 5, 4))
    np.testing.assert_array_equal(to_u16(volume), pages.transpose(1, 2, 0))


def test_multipage_tiff_of_different_sizes_is_not_stacked() -> None:
    first, second = random_u8((5, 6), seed=15), random_u8((4, 6), seed=16)
    data = multipage_tiff([Image.fromarray(first), Image.fromarray(second)])
    volume = read_volume(io.BytesIO(data), channels="keep")
    assert_volume(volume, (5, 6, 1))
    np.testing.assert_array_equal(to_u8(volume[:, :, 0]), first)


def test_multipage_tiff_of_rgb_pages_reads_the_first_page() -> None:
    first, second = random_u8((5, 6, 3), seed=17), random_u8((5, 6, 3), seed=18)
    data = multipage_tiff([Image.fromarray(first), Image.fromarray(second)])
    volume = read_volume(io.BytesIO(data))
    assert_volume(volume, (5, 6, 3))
    np.testing.assert_array_equal(to_u8(volume), first)


# --- reading: .npy ------------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", ["rgb", "keep"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 7])
def test_npy_loads_unscaled_whatever_channels_says(
    tmp_path: Path, depth: int, channels: str
) -> None:
    array = (rng(19).standard_normal((4, 5, depth)) * 300).astype(np.float32)
    path = tmp_path / "volume.npy"
    np.save(path, array)
    volume = read_volume(path, channels=channels)
    assert_volume(volume, (4, 5, depth))
    np.testing.assert_array_equal(volume, array)


def test_npy_two_dimensional_is_one_channel(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    path = tmp_path / "flat.npy"
    np.save(path, array)
    volume = read_volume(path)
    assert_volume(volume, (3, 4, 1))
    np.testing.assert_array_equal(volume[:, :, 0], array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 1.5e3,
        np.arange(24, dtype=np.int16).reshape(2, 3, 4) * -1000,
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10,
        np.arange(24, dtype=np.float16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
        (np.arange(24).reshape(2, 3, 4) % 2).astype(np.bool_),
    ],
    ids=["float64", "int16", "uint8", "float16", "fortran", "bool"],
)
def test_npy_of_other_real_dtypes_becomes_float32(array: np.ndarray) -> None:
    volume = read_volume(io.BytesIO(npy_bytes(array)))
    assert_volume(volume, array.shape)
    np.testing.assert_array_equal(volume, array.astype(np.float32))


def test_npy_detected_by_magic_not_extension(tmp_path: Path) -> None:
    array = np.full((2, 3, 5), 7.5, np.float32)
    disguised = tmp_path / "x.png"
    disguised.write_bytes(npy_bytes(array))
    np.testing.assert_array_equal(read_volume(disguised), array)
    bare = tmp_path / "no_extension"
    bare.write_bytes(npy_bytes(array))
    np.testing.assert_array_equal(read_volume(bare), array)


def test_png_detected_by_magic_not_extension(tmp_path: Path) -> None:
    pixels = random_u8((3, 4, 3), seed=20)
    disguised = tmp_path / "x.npy"
    disguised.write_bytes(encode(Image.fromarray(pixels), "PNG"))
    volume = read_volume(disguised)
    assert_volume(volume, (3, 4, 3))
    np.testing.assert_array_equal(to_u8(volume), pixels)
    jpeg_as_tif = tmp_path / "photo.tif"
    jpeg_as_tif.write_bytes(encode(Image.fromarray(pixels), "JPEG"))
    assert read_volume(jpeg_as_tif).shape == (3, 4, 3)


# --- reading: sources ---------------------------------------------------------------------


def test_read_from_str_and_pathlike(tmp_path: Path) -> None:
    pixels = random_u8((3, 4, 3), seed=21)
    path = save(tmp_path / "p.png", Image.fromarray(pixels))
    np.testing.assert_array_equal(read_volume(str(path)), read_volume(path))


def test_read_from_bytesio_leaves_it_open() -> None:
    pixels = random_u8((3, 4, 3), seed=22)
    stream = io.BytesIO(encode(Image.fromarray(pixels), "PNG"))
    volume = read_volume(stream)
    np.testing.assert_array_equal(to_u8(volume), pixels)
    assert not stream.closed


def test_read_from_open_binary_file(tmp_path: Path) -> None:
    pixels = random_u8((3, 4, 3), seed=23)
    path = save(tmp_path / "f.png", Image.fromarray(pixels))
    with path.open("rb") as handle:
        np.testing.assert_array_equal(to_u8(read_volume(handle)), pixels)


class OneWayStream(io.RawIOBase):
    """A readable stream that cannot seek, like a pipe."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_read_from_unseekable_stream() -> None:
    pixels = random_u8((3, 4, 3), seed=24)
    with OneWayStream(encode(Image.fromarray(pixels), "PNG")) as stream:
        np.testing.assert_array_equal(to_u8(read_volume(stream)), pixels)


@pytest.mark.parametrize("kind", ["png", "npy", "png16"])
def test_dash_reads_stdin_buffer(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "png":
        pixels = random_u8((3, 4, 3), seed=25)
        data, expected = encode(Image.fromarray(pixels), "PNG"), pixels / 255
    elif kind == "png16":
        pixels16 = random_u16((3, 4, 3), seed=25)
        data, expected = png16(pixels16), pixels16 / 65535
    else:
        expected = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
        data = npy_bytes(expected)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    volume = read_volume("-")
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume, expected, rtol=0, atol=1e-6)


# --- reading: errors ----------------------------------------------------------------------


def assert_volume_error(source: Any, *fragments: str) -> convvol.VolumeError:
    with pytest.raises(convvol.VolumeError) as caught:
        read_volume(source)
    error = caught.value
    assert error.exit_code == 2
    assert isinstance(error, convvol.ConvvolError)
    message = str(error)
    if isinstance(source, str | os.PathLike) and str(source) != "-":
        assert str(source) in message
    for fragment in fragments:
        assert fragment in message.lower()
    return error


def test_missing_file(tmp_path: Path) -> None:
    assert_volume_error(tmp_path / "nowhere.png", "no such file")
    assert_volume_error(str(tmp_path / "nowhere.npy"))


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    assert_volume_error(tmp_path / "folder.png", "directory")
    assert_volume_error(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert_volume_error(path, "empty")
    assert_volume_error(io.BytesIO(b""))


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert_volume_error(path)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_png(tmp_path: Path, fraction: float) -> None:
    data = encode(Image.fromarray(random_u8((40, 40, 3), seed=26)), "PNG", compress_level=0)
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_volume_error(path)


def test_truncated_48_bit_png(tmp_path: Path) -> None:
    data = png16(random_u16((30, 30, 3), seed=27), filters=(0,))
    path = tmp_path / "cut16.png"
    path.write_bytes(data[: len(data) // 2])
    assert_volume_error(path)


def test_png_cut_inside_its_header(tmp_path: Path) -> None:
    path = tmp_path / "stub.png"
    path.write_bytes(encode(Image.fromarray(random_u8((4, 4, 3))), "PNG")[:20])
    assert_volume_error(path)


def test_damaged_tiff_page_chain(tmp_path: Path) -> None:
    """A TIFF whose next-IFD pointer leads to garbage is a damaged image, not a crash."""
    data = bytearray(encode(Image.fromarray(np.zeros((12, 9, 3), np.uint8)), "TIFF"))
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    strip = next(
        struct.unpack_from("<I", data, ifd + 2 + 12 * i + 8)[0]
        for i in range(entries)
        if struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0] == 273  # StripOffsets
    )
    # The next IFD "starts" in the (all-zero) pixel data: an IFD with no entries.
    struct.pack_into("<I", data, ifd + 2 + 12 * entries, strip)
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes(data))
    assert_volume_error(path)


triggered: list[str] = []


def _tripwire() -> str:
    triggered.append("unpickled!")
    return "boom"


class Tripwire:
    """Records it if it is ever unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_tripwire, ())


def test_object_npy_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    array = np.empty((1, 1, 1), dtype=object)
    array[0, 0, 0] = Tripwire()
    np.save(path, array, allow_pickle=True)
    triggered.clear()
    assert_volume_error(path)
    assert triggered == []


def test_npy_with_four_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "four.npy"
    np.save(path, np.zeros((2, 3, 4, 5), np.float32))
    error = assert_volume_error(path)
    assert "(2, 3, 4, 5)" in str(error)


@pytest.mark.parametrize("shape", [(5,), (), (1, 1, 1, 1, 1)])
def test_npy_with_other_dimensions(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    assert_volume_error(path)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_npy(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((2, 2, 2), dtype))
    assert_volume_error(path)


@pytest.mark.parametrize("dtype", ["U3", "S2", "datetime64[s]", [("a", "f4"), ("b", "i4")]])
def test_non_numeric_npy(tmp_path: Path, dtype: Any) -> None:
    path = tmp_path / "strange.npy"
    np.save(path, np.zeros((2, 2, 2), dtype))
    assert_volume_error(path)


def test_empty_npy(tmp_path: Path) -> None:
    path = tmp_path / "nothing.npy"
    np.save(path, np.zeros((0, 3, 3), np.float32))
    assert_volume_error(path)


@pytest.mark.parametrize("cut", [10, 40, -4])
def test_truncated_npy(tmp_path: Path, cut: int) -> None:
    data = npy_bytes(np.ones((4, 4, 2), np.float32))
    path = tmp_path / "cut.npy"
    path.write_bytes(data[:cut])
    assert_volume_error(path)


def test_stream_errors_name_the_stream() -> None:
    stream = io.BytesIO(b"plain text, no image")
    stream.name = "upload.png"  # type: ignore[attr-defined]
    error = assert_volume_error(stream)
    assert "upload.png" in str(error)


def test_stdin_errors_name_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"")))
    error = assert_volume_error("-")
    assert "stdin" in str(error)


# --- writing: formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pillow_format"),
    [
        ("out.png", "PNG"),
        ("out.jpg", "JPEG"),
        ("out.jpeg", "JPEG"),
        ("out.tif", "TIFF"),
        ("out.tiff", "TIFF"),
        ("out.bmp", "BMP"),
        ("out.webp", "WEBP"),
        ("OUT.PNG", "PNG"),
        ("Out.Jpg", "JPEG"),
    ],
)
def test_format_from_extension(tmp_path: Path, name: str, pillow_format: str) -> None:
    path = tmp_path / name
    write_volume(path, smooth_rgb(8, 10))
    with Image.open(path) as image:
        assert image.format == pillow_format
        assert image.size == (10, 8)
        assert image.mode == "RGB"


def test_npy_extension_writes_npy(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    write_volume(path, smooth_rgb(4, 5))
    assert path.read_bytes()[:6] == b"\x93NUMPY"
    np.testing.assert_array_equal(np.load(path), smooth_rgb(4, 5))


@pytest.mark.parametrize(
    ("format_name", "pillow_format"),
    [
        ("png", "PNG"),
        ("jpg", "JPEG"),
        ("jpeg", "JPEG"),
        ("tif", "TIFF"),
        ("TIFF", "TIFF"),
        ("bmp", "BMP"),
        ("webp", "WEBP"),
    ],
)
def test_format_argument_wins_over_extension(
    tmp_path: Path, format_name: str, pillow_format: str
) -> None:
    path = tmp_path / "result.dat"
    write_volume(path, smooth_rgb(4, 5), format=format_name)
    with Image.open(path) as image:
        assert image.format == pillow_format
    other = tmp_path / "mislabelled.png"
    write_volume(other, smooth_rgb(4, 5), format=format_name)
    with Image.open(other) as image:
        assert image.format == pillow_format


@pytest.mark.parametrize("name", ["out.txt", "out", "out.png.bak", "out.jp2"])
def test_unknown_extension_is_a_parameter_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(convvol.ParameterError) as caught:
        write_volume(tmp_path / name, smooth_rgb(2, 2))
    assert caught.value.exit_code == 2
    assert name in str(caught.value)
    assert not (tmp_path / name).exists()
    assert leftovers(tmp_path) == []


def test_unknown_format_name_is_a_parameter_error_with_hint(tmp_path: Path) -> None:
    with pytest.raises(convvol.ParameterError) as caught:
        write_volume(tmp_path / "x.png", smooth_rgb(2, 2), format="pgn")
    assert caught.value.hint is not None
    assert "png" in caught.value.hint
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(("suffix", "tolerance"), [(".png", 0.5), (".tif", 0.5), (".bmp", 0.5)])
def test_rgb_8_bit_round_trip(tmp_path: Path, suffix: str, tolerance: float) -> None:
    volume = rng(28).random((9, 7, 3)).astype(np.float32)
    path = tmp_path / f"rgb{suffix}"
    write_volume(path, volume)
    back = read_volume(path)
    assert_volume(back, (9, 7, 3))
    assert np.abs(back - volume).max() <= tolerance / 255 + 1e-7


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_round_trip_is_close(tmp_path: Path, suffix: str) -> None:
    volume = smooth_rgb()
    path = tmp_path / f"lossy{suffix}"
    write_volume(path, volume)
    back = read_volume(path)
    assert_volume(back, volume.shape)
    assert np.abs(back - volume).mean() < 0.02
    assert np.abs(back - volume).max() < 0.1


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "L"), (".tif", "L"), (".bmp", "L"),
                                              (".jpg", "L")])  # fmt: skip
def test_one_channel_is_greyscale(tmp_path: Path, suffix: str, mode: str) -> None:
    volume = smooth_rgb()[:, :, :1]
    path = tmp_path / f"grey{suffix}"
    write_volume(path, volume)
    with Image.open(path) as image:
        assert image.mode == mode
    back = read_volume(path, channels="keep")
    assert_volume(back, volume.shape)
    assert np.abs(back - volume).max() <= (0.05 if suffix == ".jpg" else 0.5 / 255 + 1e-7)


def test_two_dimensional_volume_is_one_channel(tmp_path: Path) -> None:
    volume = smooth_rgb()[:, :, 1]
    path = tmp_path / "flat.png"
    write_volume(path, volume)
    with Image.open(path) as image:
        assert image.mode == "L"
    back = read_volume(path, channels="keep")
    assert back.shape == (*volume.shape, 1)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_one_channel_16_bit(tmp_path: Path, suffix: str) -> None:
    pixels = random_u16((6, 5), seed=29)
    volume = pixels.astype(np.float64)[:, :, np.newaxis] / 65535
    path = tmp_path / f"grey16{suffix}"
    write_volume(path, volume, depth=16)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
        assert image.size == (5, 6)
        np.testing.assert_array_equal(np.asarray(image), pixels)
    np.testing.assert_array_equal(to_u16(read_volume(path, channels="keep")), pixels[..., None])


def test_16_bit_rgb_png_by_convvol_opens_in_pillow(tmp_path: Path) -> None:
    pixels = random_u16((11, 13, 3), seed=30)
    volume = pixels.astype(np.float64) / 65535
    path = tmp_path / "deep.png"
    write_volume(path, volume, depth=16)
    data = path.read_bytes()
    assert png_header(data) == (13, 11, 16, 2, 0)  # 16-bit truecolour, not interlaced
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.size == (13, 11)
        image.load()
        np.testing.assert_array_equal(np.asarray(image), (pixels >> 8).astype(np.uint8))
    back = read_volume(path)
    assert_volume(back, (11, 13, 3))
    assert np.abs(back - volume).max() <= 1 / 65535
    np.testing.assert_array_equal(to_u16(back), pixels)


def test_16_bit_rgb_png_round_trip_of_arbitrary_floats(tmp_path: Path) -> None:
    volume = rng(31).random((8, 9, 3)).astype(np.float32)
    path = tmp_path / "floats16.png"
    write_volume(path, volume, depth=16)
    back = read_volume(path)
    assert np.abs(back.astype(np.float64) - volume).max() <= 0.5 / 65535 + 1e-7


def test_16_bit_rgb_png_to_a_stream() -> None:
    volume = rng(32).random((5, 4, 3))
    buffer = io.BytesIO()
    write_volume(buffer, volume, format="png", depth=16)
    assert png_header(buffer.getvalue())[2:4] == (16, 2)
    buffer.seek(0)
    assert np.abs(read_volume(buffer) - volume).max() <= 1 / 65535


def test_compress_level(tmp_path: Path) -> None:
    volume = smooth_rgb(64, 64)
    sizes = {}
    for level in (0, 9):
        for depth in (8, 16):
            path = tmp_path / f"level{level}-{depth}.png"
            write_volume(path, volume, depth=depth, compress_level=level)
            sizes[level, depth] = path.stat().st_size
            tolerance = 0.5 / (255 if depth == 8 else 65535) + 1e-7
            assert np.abs(read_volume(path) - volume).max() <= tolerance
    assert sizes[0, 8] > sizes[9, 8]
    assert sizes[0, 16] > sizes[9, 16]


def png_stream(data: bytes) -> bytes:
    """The zlib stream of a PNG's IDAT chunks, every chunk's CRC checked on the way."""
    position, stream = 8, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        if kind == b"IDAT":
            stream += payload
        position += 12 + length
    return stream


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib-fallback"])
@pytest.mark.parametrize("level", [0, 1, 6])
def test_png_writer_streams_decode_with_zlib(
    monkeypatch: pytest.MonkeyPatch, isal: bool, level: int
) -> None:
    """Level 1 deflates with ISA-L (or zlib without it), the others with zlib; the pieces
    join into one valid zlib stream (zlib checks its Adler-32) of the 'Up'-filtered rows."""
    if not isal:
        monkeypatch.setitem(sys.modules, "isal", None)  # import isal now fails
    pixels = random_u8((700, 1700, 3), seed=44)  # several parallel pieces
    buffer = io.BytesIO()
    write_volume(buffer, pixels.astype(np.float32) / 255, format="png", compress_level=level)
    raw = np.frombuffer(zlib.decompress(png_stream(buffer.getvalue())), np.uint8)
    rows = raw.reshape(700, 1 + 1700 * 3)
    assert (rows[:, 0] == 2).all()  # every row filtered 'Up'
    np.testing.assert_array_equal(np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8),
                                  pixels.reshape(700, -1))  # fmt: skip


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 9])
def test_npy_round_trip_is_exact_and_unscaled(tmp_path: Path, depth: int) -> None:
    volume = (rng(33).standard_normal((5, 6, depth)) * 1000).astype(np.float32)
    volume[0, 0, 0] = -12345.5
    volume[0, 1, 0] = 1e30
    path = tmp_path / "raw.npy"
    write_volume(path, volume, scale="minmax", depth=16)  # both ignored for .npy
    stored = np.load(path, allow_pickle=False)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, volume)
    np.testing.assert_array_equal(read_volume(path), volume)


def test_npy_of_float64_is_stored_as_float32(tmp_path: Path) -> None:
    volume = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    path = tmp_path / "f64.npy"
    write_volume(path, volume)
    assert np.load(path).dtype == np.float32
    np.testing.assert_array_equal(read_volume(path), volume.astype(np.float32))


def test_npy_to_a_stream() -> None:
    volume = np.arange(6, dtype=np.float32).reshape(1, 2, 3) - 3
    buffer = io.BytesIO()
    write_volume(buffer, volume, format="npy")
    np.testing.assert_array_equal(read_volume(io.BytesIO(buffer.getvalue())), volume)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 8])
def test_tiff_any_depth_round_trip(tmp_path: Path, channels: int, depth: int) -> None:
    volume = rng(34 + channels).random((6, 7, channels)).astype(np.float32)
    path = tmp_path / "stack.tif"
    write_volume(path, volume, depth=depth)
    top = 255 if depth == 8 else 65535
    with tifffile.TiffFile(path) as tif:  # one image of N samples per pixel, as GDAL wants
        assert len(tif.pages) == 1
        page = tif.pages[0]
        assert (page.imagelength, page.imagewidth, page.samplesperpixel) == (6, 7, channels)
        assert page.dtype == np.dtype(f"uint{depth}")
        assert page.planarconfig == (1 if channels > 1 else page.planarconfig)  # contiguous
        assert page.photometric == (2 if channels == 3 else 1)  # RGB for 3, else grey + bands
    back = read_volume(path, channels="keep")
    assert_volume(back, (6, 7, channels))
    assert np.abs(back.astype(np.float64) - volume).max() <= 0.5 / top + 1e-7


def test_tiff_16_bit_rgb_keeps_16_bits(tmp_path: Path) -> None:
    pixels = random_u16((4, 5, 3), seed=40)
    path = tmp_path / "deep.tiff"
    write_volume(path, pixels / 65535, depth=16)
    np.testing.assert_array_equal(to_u16(read_volume(path)), pixels)


@pytest.mark.parametrize("channels", [2, 4, 5, 16])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp"])
def test_plain_formats_refuse_other_channel_counts(
    tmp_path: Path, suffix: str, channels: int
) -> None:
    path = tmp_path / f"many{suffix}"
    with pytest.raises(convvol.ParameterError) as caught:
        write_volume(path, np.zeros((3, 3, channels), np.float32))
    error = caught.value
    assert error.exit_code == 2
    assert str(channels) in str(error)
    assert error.hint is not None
    assert "--split" in error.hint
    assert ".npy" in error.hint
    assert not path.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp", ".webp"])
def test_depth_16_refused_by_8_bit_formats(tmp_path: Path, suffix: str, channels: int) -> None:
    path = tmp_path / f"deep{suffix}"
    with pytest.raises(convvol.ParameterError) as caught:
        write_volume(path, np.zeros((3, 3, channels), np.float32), depth=16)
    assert "16" in str(caught.value)
    assert not path.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("depth", [1, 4, 12, 32])
def test_unsupported_depths(tmp_path: Path, suffix: str, depth: int) -> None:
    path = tmp_path / f"odd{suffix}"
    with pytest.raises(convvol.ParameterError):
        write_volume(path, np.zeros((3, 3, 3), np.float32), depth=depth)
    assert not path.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ("clip", [0.0, 0.0, 0.5, 1.0]),
        ("abs", [1.0, 0.5, 0.5, 1.0]),
        ("signed", [0.0, 0.25, 0.75, 1.0]),
        ("minmax", [0.0, 0.25, 0.75, 1.0]),
    ],
)
def test_scale_is_applied_when_writing_images(
    tmp_path: Path, scale: str, expected: list[float]
) -> None:
    volume = np.array([-1.0, -0.5, 0.5, 1.0], np.float32).reshape(1, 4, 1)
    path = tmp_path / "scaled.png"
    write_volume(path, volume, scale=scale, depth=16)
    back = read_volume(path, channels="keep")
    np.testing.assert_allclose(back.ravel(), expected, atol=1 / 65535)


def test_nan_written_as_black(tmp_path: Path) -> None:
    volume = np.array([np.nan, 1.0], np.float32).reshape(1, 2, 1)
    path = tmp_path / "nan.png"
    write_volume(path, volume)
    assert read_volume(path, channels="keep").ravel().tolist() == [0.0, 1.0]


def test_unknown_scale_when_writing(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    with pytest.raises(convvol.ParameterError):
        write_volume(path, smooth_rgb(2, 2), scale="sigend")
    assert not path.exists()
    assert leftovers(tmp_path) == []


# --- writing: streams and stdout ----------------------------------------------------------


@pytest.mark.parametrize("format_name", ["png", "jpeg", "tiff", "bmp", "webp", "npy"])
def test_write_to_bytesio(format_name: str) -> None:
    buffer = io.BytesIO()
    write_volume(buffer, smooth_rgb(6, 8), format=format_name)
    assert buffer.getvalue()
    back = read_volume(io.BytesIO(buffer.getvalue()))
    assert back.shape == (6, 8, 3)


def test_write_to_bytesio_needs_a_format() -> None:
    buffer = io.BytesIO()
    with pytest.raises(convvol.ParameterError, match="format"):
        write_volume(buffer, smooth_rgb(2, 2))
    assert buffer.getvalue() == b""


def test_write_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    out = SimpleNamespace(buffer=io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    write_volume("-", smooth_rgb(3, 4), format="png")
    data = out.buffer.getvalue()
    assert data.startswith(PNG_SIGNATURE)
    np.testing.assert_allclose(read_volume(io.BytesIO(data)), smooth_rgb(3, 4), atol=0.5 / 255)


def test_write_to_stdout_needs_a_format(monkeypatch: pytest.MonkeyPatch) -> None:
    out = SimpleNamespace(buffer=io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(convvol.ParameterError):
        write_volume("-", smooth_rgb(3, 4))
    assert out.buffer.getvalue() == b""


# --- writing: atomic files, parents, permissions ------------------------------------------


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "out.png"
    write_volume(path, smooth_rgb(3, 3))
    assert path.is_file()
    assert read_volume(path).shape == (3, 3, 3)
    assert leftovers(tmp_path) == []


def test_parent_is_a_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    with pytest.raises(convvol.OutputError) as caught:
        write_volume(blocker / "out.png", smooth_rgb(3, 3))
    assert caught.value.exit_code == 1
    assert "out.png" in str(caught.value)


def test_target_is_a_directory_is_an_output_error(tmp_path: Path) -> None:
    target = tmp_path / "taken.png"
    target.mkdir()
    (target / "inside").write_text("keep me")
    with pytest.raises(convvol.OutputError):
        write_volume(target, smooth_rgb(3, 3))
    assert (target / "inside").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_volume(path, np.zeros((3, 3, 3)))
    write_volume(path, np.ones((4, 5, 3)))
    back = read_volume(path)
    assert back.shape == (4, 5, 3)
    assert back.min() == 1.0
    assert leftovers(tmp_path) == []


def test_target_appears_only_when_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    seen: list[tuple[bool, list[str]]] = []
    real_encode = convvol.io.writers.encode_volume

    def watching_encode(stream: Any, *args: Any, **kwargs: Any) -> None:
        stream.write(b"partial")
        seen.append((path.exists(), leftovers(tmp_path)))
        stream.seek(0)
        stream.truncate()
        real_encode(stream, *args, **kwargs)
        seen.append((path.exists(), leftovers(tmp_path)))

    monkeypatch.setattr(convvol.io.writers, "encode_volume", watching_encode)
    write_volume(path, smooth_rgb(3, 3))
    assert len(seen) == 2
    for exists, parts in seen:
        assert not exists  # the target is not there while it is being written...
        assert len(parts) == 1  # ...a hidden temporary file beside it is
        assert parts[0].startswith(".out.png.")
    assert path.is_file()
    assert leftovers(tmp_path) == []
    assert read_volume(path).shape == (3, 3, 3)


class Midway(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Midway("encoder exploded"), OSError(28, "No space left")])
def test_failed_encode_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def failing_encode(stream: Any, *args: Any, **kwargs: Any) -> None:
        stream.write(b"\x89PNG half an image")
        stream.flush()
        raise error

    monkeypatch.setattr(convvol.io.writers, "encode_volume", failing_encode)
    path = tmp_path / "sub" / "out.png"
    with pytest.raises((Midway, OSError, convvol.ConvvolError)):
        write_volume(path, smooth_rgb(3, 3))
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_failed_encode_leaves_existing_target_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.png"
    write_volume(path, smooth_rgb(5, 5))
    before = path.read_bytes()
    os.chmod(path, 0o640)

    def failing_encode(stream: Any, *args: Any, **kwargs: Any) -> None:
        stream.write(b"garbage" * 100)
        raise Midway("midway")

    monkeypatch.setattr(convvol.io.writers, "encode_volume", failing_encode)
    with pytest.raises(Midway):
        write_volume(path, np.zeros((9, 9, 3)))
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize("depth", [8, 16, "float"])
def test_failure_inside_the_tiff_writer_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int | str
) -> None:
    path = tmp_path / "out.tif"
    path.write_bytes(b"old contents")

    def failing_write(self: Any, *args: Any, **kwargs: Any) -> None:
        self._fh.write(b"half written")
        raise OSError("encoder error midway")

    monkeypatch.setattr(tifffile.TiffWriter, "write", failing_write)
    with pytest.raises((OSError, convvol.ConvvolError)):
        write_volume(path, rng(41).random((4, 4, 5)), depth=depth)
    assert path.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(("suffix", "depth"), [(".jpg", 8), (".webp", 8)])
def test_failure_inside_pillow_save_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, depth: int
) -> None:
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"old contents")

    def failing_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"half written")
        raise OSError("encoder error midway")

    def failing_encoder(*args: Any, **kwargs: Any) -> bytes:
        raise OSError("encoder error")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    monkeypatch.setattr("imagecodecs.jpeg8_encode", failing_encoder)  # JPEG's own encoder
    with pytest.raises((OSError, convvol.ConvvolError)):
        write_volume(path, rng(41).random((4, 4, 3)), depth=depth)
    assert path.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("depth", [8, 16])
def test_failure_inside_the_png_writer_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    """convvol writes PNGs itself (deflating in parallel): a failure there is atomic too."""
    path = tmp_path / "out.png"
    path.write_bytes(b"old contents")

    def failing_compressor(*args: Any, **kwargs: Any) -> Any:
        raise zlib.error("deflate failed midway")

    monkeypatch.setattr(convvol.io.png, "_raw_deflater", failing_compressor)
    with pytest.raises((zlib.error, convvol.ConvvolError)):
        write_volume(path, rng(41).random((400, 300, 3)), depth=depth)
    assert path.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
@pytest.mark.parametrize("suffix", [".png", ".npy", ".tif"])
def test_new_file_permissions_follow_the_umask(
    tmp_path: Path, mask: int, mode: int, suffix: str
) -> None:
    path = tmp_path / f"perm{suffix}"
    with umask(mask):
        write_volume(path, smooth_rgb(3, 3))
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_stream_written_file_is_not_private(tmp_path: Path) -> None:
    path = tmp_path / "set.png"
    with umask(0o022), OutputSet() as outputs:
        outputs.write(path, smooth_rgb(3, 3))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --- writing: OutputSet -------------------------------------------------------------------


def test_output_set_commits_all_files(tmp_path: Path) -> None:
    targets = [tmp_path / "a.png", tmp_path / "deep" / "b.npy", tmp_path / "c.tif"]
    with OutputSet() as outputs:
        for index, target in enumerate(targets):
            outputs.write(target, np.full((2, 3, 1), index / 4, np.float32))
        assert not any(target.exists() for target in targets)  # nothing before commit
        assert len(leftovers(tmp_path)) == 3
    assert all(target.is_file() for target in targets)
    assert leftovers(tmp_path) == []
    for index, target in enumerate(targets):
        np.testing.assert_allclose(
            read_volume(target, channels="keep"), np.full((2, 3, 1), index / 4), atol=1 / 255
        )


def test_output_set_exception_inside_with_leaves_none(tmp_path: Path) -> None:
    existing = tmp_path / "b.png"
    existing.write_bytes(b"previous")

    def write_two_then_fail() -> None:
        with OutputSet() as outputs:
            outputs.write(tmp_path / "a.png", smooth_rgb(2, 2))
            outputs.write(existing, smooth_rgb(2, 2))
            raise Midway("third file failed")

    with pytest.raises(Midway):
        write_two_then_fail()
    assert not (tmp_path / "a.png").exists()
    assert existing.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_output_set_failing_write_leaves_none(tmp_path: Path) -> None:

    def write_two() -> None:
        with OutputSet() as outputs:
            outputs.write(tmp_path / "a.png", smooth_rgb(2, 2))
            outputs.write(tmp_path / "b.png", np.zeros((2, 2, 4)))  # 4 channels: refused

    with pytest.raises(convvol.ParameterError):
        write_two()
    assert list(tmp_path.iterdir()) == []


def test_output_set_open_streams_raw_bytes(tmp_path: Path) -> None:
    target = tmp_path / "notes.bin"
    outputs = OutputSet()
    with outputs.open(target) as stream:
        stream.write(b"hello")
    assert not target.exists()
    outputs.commit()
    assert target.read_bytes() == b"hello"
    assert leftovers(tmp_path) == []


def test_output_set_discard(tmp_path: Path) -> None:
    outputs = OutputSet()
    outputs.write(tmp_path / "a.png", smooth_rgb(2, 2))
    outputs.write(tmp_path / "b.npy", smooth_rgb(2, 2))
    assert len(leftovers(tmp_path)) == 2
    outputs.discard()
    assert list(tmp_path.iterdir()) == []
    outputs.commit()  # nothing left to commit
    assert list(tmp_path.iterdir()) == []


def test_output_set_is_all_or_nothing_when_a_rename_fails(tmp_path: Path) -> None:
    """A target that cannot be replaced must not leave the set half committed."""
    blocked = tmp_path / "b.png"
    blocked.mkdir()
    (blocked / "keep").write_text("x")

    def write_two() -> None:
        with OutputSet() as outputs:
            outputs.write(tmp_path / "a.png", smooth_rgb(2, 2))
            outputs.write(blocked, smooth_rgb(2, 2))

    with pytest.raises(convvol.ConvvolError):
        write_two()
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "a.png").exists()


# --- bundled sample images ----------------------------------------------------------------


def test_astronaut_sample() -> None:
    path = SAMPLES / "astronaut.png"
    volume = read_volume(path)
    assert_volume(volume, (512, 512, 3))
    assert volume.min() >= 0.0
    assert volume.max() <= 1.0
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_array_equal(read_volume(path, channels="keep"), volume)
    np.testing.assert_array_equal(read_volume(str(path)), volume)


@pytest.mark.parametrize(
    ("region", "colour"),
    [
        ((16, 112, 32, 64), (1.0, 0.0, 0.0)),  # red bar
        ((16, 112, 96, 128), (0.0, 1.0, 0.0)),  # green bar
        ((144, 168, 32, 224), (0.0, 0.0, 1.0)),  # blue bar
        ((32, 80, 176, 224), (1.0, 1.0, 1.0)),  # white square
    ],
)
def test_pattern_sample_regions(
    region: tuple[int, int, int, int], colour: tuple[float, ...]
) -> None:
    volume = read_volume(SAMPLES / "pattern.png")
    assert_volume(volume, (256, 256, 3))
    y0, y1, x0, x1 = region
    assert np.all(volume[y0:y1, x0:x1] == np.array(colour, np.float32))
    assert np.all(volume[:16] == 0.0)  # black border
    assert np.all(volume[y0:y1, x0 - 1] == 0.0)  # black just outside


def test_pattern_sample_is_black_outside_regions() -> None:
    volume = read_volume(SAMPLES / "pattern.png")
    mask = np.zeros((256, 256), bool)
    for y0, y1, x0, x1 in [(16, 112, 32, 64), (16, 112, 96, 128), (144, 168, 32, 224),
                           (32, 80, 176, 224)]:  # fmt: skip
        mask[y0:y1, x0:x1] = True
    assert np.all(volume[~mask] == 0.0)


@pytest.mark.parametrize(("suffix", "depth"), [(".png", 8), (".png", 16), (".tif", 16),
                                               (".npy", 8), (".bmp", 8)])  # fmt: skip
def test_astronaut_round_trips(tmp_path: Path, suffix: str, depth: int) -> None:
    volume = read_volume(SAMPLES / "astronaut.png")
    path = tmp_path / f"astronaut{suffix}"
    write_volume(path, volume, depth=depth)
    back = read_volume(path)
    np.testing.assert_allclose(back, volume, rtol=0, atol=1e-6)


@pytest.mark.parametrize("image", ["astronaut.png", "pattern.png"])
@pytest.mark.parametrize("channels", ["rgb", "keep"])
def test_read_pixels_divided_is_read_volume(image: str, channels: str) -> None:
    path = Path(__file__).parents[1] / "sample_images" / image
    stored, divisor = read_pixels(path, channels=channels)
    assert stored.dtype == np.uint8
    assert divisor == 255.0
    np.testing.assert_array_equal(
        pixels_to_volume(stored, divisor), read_volume(path, channels=channels)
    )
