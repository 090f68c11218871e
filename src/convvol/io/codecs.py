"""JPEG pixels decoded straight into a NumPy array, when imagecodecs is installed.

Pillow decodes a JPEG into its own image memory (four bytes a pixel for RGB), and
``np.asarray`` then copies the pixels out through ``Image.tobytes``: for a photo that copy
takes about as long as the decode itself. imagecodecs' libjpeg-turbo decoder writes the
H×W×3 array directly (and releases the GIL while it does), with the same pixels as
Pillow's (the same library and settings: ``tests/test_codecs.py`` compares them).

Optional: without imagecodecs, or for any JPEG it does not cover (CMYK, MPO, a draft
mode), :func:`decode_jpeg` returns None and Pillow decodes as before. The readers call it
before ``Image.load``; what the file says about itself is read from Pillow's header as
always.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from PIL import Image

JPEG_MODES = ("L", "RGB")  # greyscale and YCbCr (or RGB) JPEGs; CMYK is left to Pillow


def decode_jpeg(image: Image.Image, stream: BinaryIO) -> np.ndarray | None:
    """The pixels of the JPEG that ``image`` (opened, not loaded, from ``stream``) holds,
    as H×W×C uint8, or None where Pillow must decode it."""
    if image.format != "JPEG" or image.mode not in JPEG_MODES or _drafted(image):
        return None
    try:
        from imagecodecs import jpeg8_decode
    except ImportError:
        return None
    stream.seek(0)
    data = stream.read()
    # libjpeg-turbo fills a truncated scan with grey where Pillow refuses the file: only
    # a file whose last scan is followed by its end marker is decoded here. (An EXIF
    # thumbnail's end marker comes before the image's scans.)
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return None
    try:
        pixels = np.asarray(jpeg8_decode(data))
    except Exception:  # imagecodecs' own errors: let Pillow decode it and say what is wrong
        return None
    expected = (image.size[1], image.size[0])
    if pixels.dtype != np.uint8 or pixels.shape[:2] != expected:
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    channels = 1 if image.mode == "L" else 3
    return pixels if pixels.shape[2] == channels else None


def _drafted(image: Image.Image) -> bool:
    """Whether Image.draft asked for a reduced decode (the pixels would differ)."""
    return bool(getattr(image, "decoderconfig", ()) and image.decoderconfig[0] > 1)  # type: ignore[attr-defined]
