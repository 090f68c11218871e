"""Encoding a volume into one file's bytes: Pillow for most formats, our own PNG encoder
(parallel deflate), and tifffile for TIFF (any samples, types, codecs, georeferencing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

import numpy as np
from PIL import Image

from convvol.errors import ParameterError
from convvol.io.formats import DEFAULT_COMPRESS_LEVEL, Format, check_encodable
from convvol.io.metadata import NO_INFO, ImageInfo
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
) -> None:
    """Write ``volume`` to ``stream`` in ``fmt``: scaled to pixels, or raw float32 for npy
    (and for TIFF with ``depth="float"``).

    ``depth`` is 8, 16, ``"float"`` or (TIFF) an integer type of
    :data:`~convvol.scaling.SAMPLE_TYPES`; ``values`` says what the volume's numbers are
    (``unit``: [0, 1] is the type's range; ``native``: the samples' own numbers).
    ``target`` names the destination in error messages. ``quantized`` says ``volume``
    holds pixels already (``to_pixels``'s, of ``depth``'s type): they are written as they
    are. ``info`` describes the input, for what the format can carry (a TIFF takes its
    georeferencing, ``nodata`` in the output's units, and ``names`` as band names);
    ``compress`` is TIFF's codec, at ``compress_level`` where it has levels.
    """
    volume = as_volume(volume)
    if fmt.name == "npy":
        if quantized:
            raise ParameterError(f"{target}: quantized pixels cannot be written as .npy")
        np.save(stream, volume.astype(np.float32, copy=False), allow_pickle=False)
        return
    check_encodable(fmt, volume.shape[2], depth, target)
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
    if fmt.name == "png":
        write_png(stream, pixels, compress_level)
        return
    _pillow_image(pixels).save(stream, format=fmt.pillow_name, **dict(fmt.options))


def _pillow_image(pixels: np.ndarray) -> Image.Image:
    """uint8 H×W×3 → RGB; uint8 H×W×1 → L; uint16 H×W×1 → I;16 (Pillow infers the mode)."""
    return Image.fromarray(
        np.ascontiguousarray(pixels if pixels.shape[2] == 3 else pixels[:, :, 0])
    )
