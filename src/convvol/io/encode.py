"""Encoding a volume into one file's bytes: Pillow for most formats, our own PNG encoder
(parallel deflate) and 16-bit RGB TIFF writer where Pillow falls short.
"""

from __future__ import annotations

import struct
from typing import IO

import numpy as np
from PIL import Image

from convvol.errors import ParameterError
from convvol.io.formats import DEFAULT_COMPRESS_LEVEL, Format, check_encodable
from convvol.io.metadata import NO_INFO, ImageInfo
from convvol.io.photo import pillow_options, png_chunks
from convvol.io.png import write_png
from convvol.scaling import DEPTHS, as_volume, to_pixels


def encode_volume(
    stream: IO[bytes],
    volume: np.ndarray,
    fmt: Format,
    *,
    scale: str = "clip",
    depth: int = 8,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    target: str = "output",
    quantized: bool = False,
    info: ImageInfo = NO_INFO,
    quality: int | None = None,
    lossless: bool = False,
) -> None:
    """Write ``volume`` to ``stream`` in ``fmt``: scaled to pixels, or raw float32 for npy.

    ``target`` names the destination in error messages. ``quantized`` says ``volume``
    holds pixels already (``to_pixels``'s uint8 or uint16 for ``depth``): they are
    written as they are. ``info`` describes the input, for what the format can carry
    (colour profile, EXIF, XMP, resolution, text: see :mod:`convvol.io.photo`).
    ``quality`` (1–100) is JPEG's and WebP's (default ``DEFAULT_QUALITY``); ``lossless``
    makes a WebP lossless.
    """
    volume = as_volume(volume)
    if quantized and (fmt.name == "npy" or volume.dtype != DEPTHS.get(depth)):
        raise ParameterError(
            f"{target}: quantized pixels must be {np.dtype(DEPTHS.get(depth, np.uint8)).name} "
            f"for an image format; got {volume.dtype} for {fmt.name}"
        )
    if fmt.name == "npy":
        np.save(stream, volume.astype(np.float32, copy=False), allow_pickle=False)
        return
    check_encodable(fmt, volume.shape[2], depth, target, with_alpha=carries_alpha(info, volume))
    pixels = volume if quantized else to_pixels(volume, scale, depth)
    channels = pixels.shape[2]
    if fmt.name == "png":
        write_png(stream, pixels, compress_level, chunks=png_chunks(info, channels))
        return
    if fmt.name == "tiff" and depth == 16 and channels == 3:
        _write_tiff_16bit_rgb(stream, pixels)
        return
    options = {**fmt.options, **quality_options(fmt, quality, lossless)}
    if channels == 1 or (channels == 3 and depth == 8):
        options.update(pillow_options(fmt.name, info, channels))
        image = _pillow_image(pixels)
        if fmt.name == "gif":
            image = gif_frame(image)
        image.save(stream, format=fmt.pillow_name, **options)
        return
    # TIFF with any other depth: one greyscale page per channel.
    pages = [_pillow_image(pixels[:, :, [c]]) for c in range(channels)]
    pages[0].save(stream, format="TIFF", save_all=True, append_images=pages[1:], **options)


def quality_options(fmt: Format, quality: int | None, lossless: bool) -> dict[str, object]:
    """Pillow's keywords for --quality and --lossless where ``fmt`` takes them."""
    options: dict[str, object] = {}
    if quality is not None and fmt.name in ("jpeg", "webp"):
        if not 1 <= quality <= 100:
            raise ParameterError(f"quality must be 1 to 100; got {quality}")
        options["quality"] = quality
    if lossless and fmt.name == "webp":
        options["lossless"] = True
    return options


def gif_frame(image: Image.Image) -> Image.Image:
    """An image as GIF stores it: greyscale as it is; colour with a palette of its own:
    its exact colours when it has at most 256, else 256 found by Pillow's fast octree,
    each pixel its nearest colour (no dithering, so areas that do not change between
    frames do not shimmer). Median cut is 2 dB closer but 60-100× slower (figures in
    docs/photographs.md), too slow for animations of many frames."""
    if image.mode == "L":
        return image
    pixels = np.asarray(image).reshape(-1, 3)
    packed = (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8)
    packed |= pixels[:, 2]
    colours, indices = np.unique(packed, return_inverse=True)
    if len(colours) > 256:
        return image.quantize(256, method=Image.Quantize.FASTOCTREE)
    exact = Image.frombytes("P", image.size, indices.astype(np.uint8).tobytes())
    palette = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    exact.putpalette(palette.astype(np.uint8).tobytes())
    return exact


def carries_alpha(info: ImageInfo, volume: np.ndarray) -> bool:
    """Whether the last channel of a result is its input's alpha: an LA or RGBA input
    (read with ``channels="keep"``) whose result has as many channels."""
    channels = np.shape(volume)[-1] if np.ndim(volume) == 3 else 1
    return info.alpha_channel is not None and channels == info.alpha_channel + 1


def _pillow_image(pixels: np.ndarray) -> Image.Image:
    """uint8 H×W×3 → RGB; uint8 H×W×1 → L; uint16 H×W×1 → I;16 (Pillow infers the mode)."""
    return Image.fromarray(
        np.ascontiguousarray(pixels if pixels.shape[2] == 3 else pixels[:, :, 0])
    )


def _write_tiff_16bit_rgb(stream: IO[bytes], pixels: np.ndarray) -> None:
    """A 48-bit RGB baseline TIFF, which Pillow cannot write: one uncompressed strip."""
    height, width, _ = pixels.shape
    strip = pixels.astype("<u2").tobytes()
    bits_at, strip_at = 8, 16
    ifd_at = strip_at + len(strip) + len(strip) % 2
    short, long = 3, 4
    fields = [  # (tag, type, count, value or offset), in ascending tag order
        (256, long, 1, width), (257, long, 1, height), (258, short, 3, bits_at),
        (259, short, 1, 1), (262, short, 1, 2), (273, long, 1, strip_at),
        (277, short, 1, 3), (278, long, 1, height), (279, long, 1, len(strip)),
        (284, short, 1, 1),
    ]  # fmt: skip
    stream.write(b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<4H", 16, 16, 16, 0))
    stream.write(strip + b"\x00" * (len(strip) % 2))
    stream.write(struct.pack("<H", len(fields)))
    for tag, kind, count, value in fields:
        packed = (
            struct.pack("<I", value) if kind == long or count > 1 else struct.pack("<HH", value, 0)
        )
        stream.write(struct.pack("<HHI", tag, kind, count) + packed)
    stream.write(struct.pack("<I", 0))  # no further pages
