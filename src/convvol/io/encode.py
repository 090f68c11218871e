"""Encoding a volume into one file's bytes: Pillow for most formats (JPEGs encoded by
imagecodecs straight from the array, byte for byte as Pillow writes them), our own PNG
encoder (parallel deflate), and tifffile for TIFF (any samples, types, codecs,
georeferencing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

import numpy as np
from PIL import Image

from convvol.errors import ParameterError
from convvol.io.codecs import encode_jpeg
from convvol.io.formats import DEFAULT_COMPRESS_LEVEL, Format, check_encodable
from convvol.io.metadata import NO_INFO, ImageInfo
from convvol.io.photo import pillow_options, png_chunks
from convvol.io.png import write_png
from convvol.io.tiff import DEFAULT_COMPRESSION, write_tiff
from convvol.scaling import as_volume, sample_type, to_pixels


def encode_volume(
    stream: IO[bytes],
    volume: np.ndarray,
    fmt: Format,
    *,
    scale: str = "clip",
    depth: int | str = 8,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    target: str = "output",
    quantized: bool = False,
    info: ImageInfo = NO_INFO,
    values: str = "unit",
    compress: str = DEFAULT_COMPRESSION,
    names: Sequence[str] = (),
    nodata: float | None = None,
    quality: int | None = None,
    lossless: bool = False,
) -> None:
    """Write ``volume`` to ``stream`` in ``fmt``: scaled to pixels, or raw float32 for npy
    (and for TIFF with ``depth="float"``).

    ``depth`` is 8, 16, ``"float"`` or (TIFF) an integer type of
    :data:`~convvol.scaling.SAMPLE_TYPES`; ``values`` says what the volume's numbers are
    (``unit``: [0, 1] is the type's range; ``native``: the samples' own numbers).
    ``target`` names the destination in error messages. ``quantized`` says ``volume``
    holds pixels already (``to_pixels``'s, of ``depth``'s type): they are written as they
    are. ``info`` describes the input, for what the format can carry (a TIFF takes its
    georeferencing, ``nodata`` in the output's units, and ``names`` as band names; the
    colour profile, EXIF, XMP, resolution and text go as :mod:`convvol.io.photo` says);
    ``compress`` is TIFF's codec, at ``compress_level`` where it has levels.
    ``quality`` (1–100) is JPEG's and WebP's (default ``DEFAULT_QUALITY``); ``lossless``
    makes a WebP lossless.
    """
    volume = as_volume(volume)
    if fmt.name == "npy":
        if quantized:
            raise ParameterError(f"{target}: quantized pixels cannot be written as .npy")
        np.save(stream, volume.astype(np.float32, copy=False), allow_pickle=False)
        return
    check_encodable(fmt, volume.shape[2], depth, target, with_alpha=carries_alpha(info, volume))
    kind = sample_type(depth)
    if quantized and volume.dtype != kind:
        raise ParameterError(
            f"{target}: quantized pixels must be {kind.name} for an image format; "
            f"got {volume.dtype} for {fmt.name}"
        )
    if kind.kind == "f":
        pixels = volume.astype(np.float32, copy=False)
    else:
        pixels = volume if quantized else to_pixels(volume, scale, kind.name, values=values)
    if fmt.name == "tiff":
        write_tiff(stream, pixels, compress=compress, compress_level=compress_level,
                   names=names, info=info, nodata=nodata)  # fmt: skip
        return
    channels = pixels.shape[2]
    if fmt.name == "png":
        write_png(stream, pixels, compress_level, chunks=png_chunks(info, channels))
        return
    options = {**fmt.options, **quality_options(fmt, quality, lossless)}
    options.update(pillow_options(fmt.name, info, channels))
    if fmt.name == "jpeg":  # Pillow's file, without copying the pixels into Pillow first
        pieces = encode_jpeg(pixels, options)
        if pieces is not None:
            for piece in pieces:
                stream.write(piece)
            return
    image = _pillow_image(pixels)
    if fmt.name == "gif":
        image = gif_frame(image)
    image.save(stream, format=fmt.pillow_name, **options)


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
