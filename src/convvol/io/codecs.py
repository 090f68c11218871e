"""JPEGs decoded straight into NumPy arrays and encoded straight from them, by imagecodecs.

Pillow decodes a JPEG into its own image memory (four bytes a pixel for RGB), and
``np.asarray`` then copies the pixels out through ``Image.tobytes``: for a photo that copy
takes about as long as the decode itself. imagecodecs' libjpeg-turbo decoder writes the
H×W×3 array directly (and releases the GIL while it does), with the same pixels as
Pillow's (the same library and settings: ``tests/test_codecs.py`` compares them).

Optional: without imagecodecs, or for any JPEG it does not cover (CMYK, MPO, a draft
mode), :func:`decode_jpeg` returns None and Pillow decodes as before. The readers call it
before ``Image.load``; what the file says about itself is read from Pillow's header as
always.

Encoding is the mirror image: Pillow first copies the pixels into its own image memory
(allocated and zeroed for each image), which for a photo costs most of what the
encoding itself does. :func:`encode_jpeg` gives libjpeg-turbo the array itself and adds
the markers Pillow's writer adds (JFIF resolution, EXIF, XMP, ICC profile), in Pillow's
order: the file is byte for byte the one ``Image.save`` writes with the same keywords
(``tests/test_codecs.py`` compares them over qualities, subsamplings and metadata).
Anything else (other keywords, a marker too long, no imagecodecs) returns None, and
Pillow writes the file, raising its own errors.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

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
    data = _whole_file(stream)
    # libjpeg-turbo fills a truncated scan with grey where Pillow refuses the file: only
    # a file whose last scan is followed by its end marker is decoded here. (An EXIF
    # thumbnail's end marker comes before the image's scans.)
    end = data.rfind(b"\xff\xd9")
    if end < 0 or data.find(b"\xff\xda", end) >= 0:
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


def _whole_file(stream: BinaryIO) -> bytes:
    """Every byte of the stream: from a file in one read at offset 0 (a buffered read()
    copies it through the buffer in pieces, several times slower), else by read()."""
    try:
        descriptor = stream.fileno()
        size = os.fstat(descriptor).st_size
        data = os.pread(descriptor, size, 0) if size else b""
        if data and len(data) == size:  # (a pipe or a special file has no size to go by)
            return data
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        pass
    stream.seek(0)
    return stream.read()


def _drafted(image: Image.Image) -> bool:
    """Whether Image.draft asked for a reduced decode (the pixels would differ)."""
    return bool(getattr(image, "decoderconfig", ()) and image.decoderconfig[0] > 1)  # type: ignore[attr-defined]


# What Pillow's JPEG writer does with the keywords encode_jpeg takes (JpegImagePlugin._save).
_ENCODE_KEYWORDS = {"quality", "subsampling", "icc_profile", "exif", "xmp", "dpi"}
_SUBSAMPLINGS = {-1: "420", 0: "444", 1: "422", 2: "420"}  # -1: libjpeg's default
_MAX_MARKER = 65533  # bytes a marker's payload may hold
_XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_NAME = b"ICC_PROFILE\x00"
# libjpeg's start of image and default JFIF segment (version 1.1, no units, 1:1).
_JFIF_START = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")


def encode_jpeg(pixels: np.ndarray, options: Mapping[str, Any]) -> list[bytes | memoryview] | None:
    """The bytes (in pieces, to write in order) of the JPEG Pillow's writer would make of
    ``pixels`` (H×W×1 or H×W×3 uint8) with the keywords ``options``, or None where Pillow
    must write it."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    quality = options.get("quality")
    subsampling = options.get("subsampling", -1)
    if (
        set(options) - _ENCODE_KEYWORDS
        or pixels.dtype != np.uint8
        or channels not in (1, 3)
        or type(quality) is not int
        or not 1 <= quality <= 100
        or subsampling not in _SUBSAMPLINGS
        or (channels == 1 and "subsampling" in options)  # Pillow's factors on one channel
    ):
        return None
    markers = _pillow_markers(options)
    if markers is None:
        return None
    try:
        from imagecodecs import jpeg8_encode
    except ImportError:
        return None
    source = np.ascontiguousarray(pixels[:, :, 0] if channels == 1 else pixels)
    sampling = _SUBSAMPLINGS[subsampling] if channels == 3 else None
    encoded = jpeg8_encode(source, level=quality, subsampling=sampling)
    if encoded[: len(_JFIF_START)] != _JFIF_START:
        return None  # not the header libjpeg writes for Pillow: let Pillow write the file
    return [*markers, memoryview(encoded)[len(_JFIF_START) :]]


def _pillow_markers(options: Mapping[str, Any]) -> list[bytes] | None:
    """The start of image and the markers Pillow writes before the image's own tables,
    in its order: JFIF (with the resolution), EXIF, XMP, the ICC profile's chunks."""
    dpi = [round(value) for value in options.get("dpi", (0, 0))]
    exif, xmp, icc = (options.get(key) for key in ("exif", "xmp", "icc_profile"))
    if len(dpi) != 2 or any(value > 0xFFFF for value in dpi):
        return None
    if any(block is not None and not isinstance(block, bytes) for block in (exif, xmp, icc)):
        return None
    if exif == b"" or len(exif or b"") > _MAX_MARKER:
        return None
    if len(xmp or b"") > _MAX_MARKER - len(_XMP_NAMESPACE):
        return None
    start = _JFIF_START
    if dpi[0] > 0 and dpi[1] > 0:  # Pillow sets the density in dots per inch
        start = start[:13] + struct.pack(">BHH", 1, *dpi) + start[18:]
    markers = [start]
    if exif:
        markers.append(_marker(0xE1, exif))
    if xmp:
        markers.append(_marker(0xE1, _XMP_NAMESPACE + xmp))
    if icc:
        room = _MAX_MARKER - len(_ICC_NAME) - 2
        chunks = [icc[first : first + room] for first in range(0, len(icc), room)]
        if len(chunks) > 255:
            return None
        for number, chunk in enumerate(chunks, start=1):
            markers.append(_marker(0xE2, _ICC_NAME + bytes((number, len(chunks))) + chunk))
    return markers


def _marker(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, kind, len(payload) + 2) + payload
