"""A photograph's metadata, read from Pillow's image and written back by each format.

What is carried (unless ``--strip``): the ICC colour profile, EXIF (its orientation tag
reset to 1, since the reader turns the pixels upright, and its embedded thumbnail
dropped, since it would show the unfiltered picture), XMP, the resolution (DPI) and PNG
text chunks. A profile or EXIF block that cannot be parsed is dropped with a one-line
warning, never a failure. Which outputs get what is decided in :func:`for_output`; how
each format stores it in :func:`pillow_options` and :func:`png_chunks`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from typing import Any

from PIL import Image

from convvol.io.metadata import NO_INFO, ImageInfo

EXIF_ORIENTATION = 0x0112
# EXIF's sub-directories: loaded before writing, or their pointers would dangle.
_EXIF_IFDS = (0x8769, 0x8825, 0xA005)  # Exif, GPS, Interoperability
_XMP_KEY = "XML:com.adobe.xmp"  # the PNG iTXt keyword XMP travels under
_JPEG_EXIF_PREFIX = b"Exif\x00\x00"
_PROFILE_CHANNELS = {"RGB": 3, "GRAY": 1}  # an ICC colour space and the channels it fits


def read_photo_info(image: Image.Image, label: str) -> dict[str, Any]:
    """The metadata fields of :class:`ImageInfo` for a Pillow image, with a warning for
    each block dropped as unreadable."""
    warnings: list[str] = []
    fields: dict[str, Any] = {}
    icc = image.info.get("icc_profile")
    if icc:
        problem = profile_problem(icc)
        if problem is None:
            fields["icc_profile"] = bytes(icc)
        else:
            warnings.append(f"{label}: the ICC profile is damaged ({problem}); dropped")
    raw_exif = image.info.get("exif")
    if raw_exif:
        try:
            fields["exif"] = clean_exif(raw_exif)
        except Exception as error:  # Pillow's parser raises many kinds on damaged EXIF
            warnings.append(f"{label}: the EXIF block is damaged ({error}); dropped")
    xmp = image.info.get("xmp") or image.info.get(_XMP_KEY)
    if xmp:
        fields["xmp"] = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    dpi = image.info.get("dpi")
    if isinstance(dpi, tuple) and _valid_dpi(dpi):
        fields["dpi"] = (float(dpi[0]), float(dpi[1]))
    text = getattr(image, "text", None) if image.format == "PNG" else None
    if text:
        fields["text"] = tuple(
            (str(key), str(value)) for key, value in text.items() if key != _XMP_KEY
        )
    if image.format == "JPEG":
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(image)
        if sampling >= 0:
            fields["jpeg_subsampling"] = sampling
    if warnings:
        fields["warnings"] = tuple(warnings)
    return fields


def _valid_dpi(dpi: object) -> bool:
    if not isinstance(dpi, tuple) or len(dpi) != 2:
        return False
    try:
        return all(0 < float(value) < 1e6 for value in dpi)
    except (TypeError, ValueError):
        return False


def profile_problem(icc: bytes) -> str | None:
    """Why an ICC profile cannot be used (None: it parses)."""
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow without LittleCMS: carried unchecked
        return None
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError) as error:
        return str(error) or type(error).__name__
    return None


def profile_space(icc: bytes) -> str | None:
    """The profile's colour space (``"RGB"``, ``"GRAY"``, ``"CMYK"``, ...), None if unknown."""
    if len(icc) >= 20:
        return icc[16:20].decode("ascii", "replace").strip() or None
    return None


def profile_name(icc: bytes) -> str:
    """The profile's description, as viewers show it."""
    try:
        from PIL import ImageCms

        return str(ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.profile_description)
    except Exception:  # a name only for messages
        return "unnamed"


def is_srgb(info: ImageInfo) -> bool:
    """Whether the input's colour values are sRGB: untagged, or tagged with an sRGB profile
    (its description names sRGB, as every sRGB profile's does)."""
    return info.icc_profile is None or "srgb" in profile_name(info.icc_profile).lower()


def clean_exif(raw: bytes) -> bytes:
    """EXIF ready for the outputs: orientation 1, no thumbnail (Pillow writes IFD0 and
    its sub-directories only), as raw TIFF bytes without JPEG's ``Exif\\0\\0``."""
    exif = Image.Exif()
    exif.load(bytes(raw))
    if not len(exif):
        raise ValueError("no tags")
    for pointer in _EXIF_IFDS[:2]:
        if pointer in exif:
            exif.get_ifd(pointer)  # loads it, so tobytes writes it
    if _EXIF_IFDS[0] in exif and _EXIF_IFDS[2] in exif.get_ifd(_EXIF_IFDS[0]):
        exif.get_ifd(_EXIF_IFDS[2])
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1
    return exif.tobytes().removeprefix(_JPEG_EXIF_PREFIX)


def stripped(info: ImageInfo) -> ImageInfo:
    """The input's description without its metadata (``--strip``)."""
    return replace(
        NO_INFO, format=info.format, sample_type=info.sample_type, animation=info.animation
    )


def for_output(info: ImageInfo, channels: int, *, colour: bool) -> ImageInfo:
    """What an output of ``channels`` channels carries: everything but the colour profile,
    which only describes outputs whose channels are the input's colours (``colour``: every
    bank a single depthwise filter, as blur and sharpen) in the profile's own colour space
    (3 channels for an RGB profile, 1 for a greyscale one)."""
    if info.icc_profile is None:
        return info
    fits = _PROFILE_CHANNELS.get(profile_space(info.icc_profile) or "") == channels
    return info if colour and fits else replace(info, icc_profile=None)


def pillow_options(fmt_name: str, info: ImageInfo, channels: int) -> dict[str, Any]:
    """The keywords Pillow's writer for ``fmt_name`` takes for ``info``'s metadata."""
    options: dict[str, Any] = {}
    icc = info.icc_profile
    if icc is not None and _PROFILE_CHANNELS.get(profile_space(icc) or "") != channels:
        icc = None  # a profile must match the image's colour space
    if fmt_name in ("jpeg", "webp", "png", "tiff") and icc:
        options["icc_profile"] = icc
    if fmt_name in ("jpeg", "webp", "png") and info.exif:
        options["exif"] = (_JPEG_EXIF_PREFIX if fmt_name == "jpeg" else b"") + info.exif
    if fmt_name in ("jpeg", "webp") and info.xmp:
        options["xmp"] = info.xmp
    if fmt_name in ("jpeg", "png", "tiff") and info.dpi:
        options["dpi"] = info.dpi
    if fmt_name == "tiff" and info.xmp:
        options["tiffinfo"] = {700: info.xmp}  # XMLPacket
    if fmt_name == "png" and (info.text or info.xmp):
        from PIL import PngImagePlugin

        text = PngImagePlugin.PngInfo()
        for key, value in info.text:
            text.add_itxt(key, value)
        if info.xmp:
            text.add_itxt(_XMP_KEY, info.xmp.decode("utf-8", "replace"))
        options["pnginfo"] = text
    if fmt_name == "jpeg" and info.jpeg_subsampling is not None and channels == 3:
        options["subsampling"] = info.jpeg_subsampling
    return options


Chunk = tuple[bytes, bytes]  # a PNG chunk's kind and payload


def png_chunks(info: ImageInfo, channels: int) -> tuple[list[Chunk], list[Chunk]]:
    """The chunks convvol's PNG encoder writes for ``info``: (before the image data:
    iCCP, pHYs, eXIf; after it: iTXt/tEXt, XMP included)."""
    before: list[Chunk] = []
    icc = info.icc_profile
    if icc is not None and _PROFILE_CHANNELS.get(profile_space(icc) or "") == channels:
        before.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if info.dpi:
        per_metre = [max(1, round(value / 0.0254)) for value in info.dpi]
        before.append((b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    if info.exif:
        before.append((b"eXIf", info.exif))
    after = [_text_chunk(key, value) for key, value in info.text]
    if info.xmp:
        after.append(_text_chunk(_XMP_KEY, info.xmp.decode("utf-8", "replace"), itxt=True))
    return before, [chunk for chunk in after if chunk is not None]


def _text_chunk(key: str, value: str, *, itxt: bool = False) -> Chunk | None:
    """tEXt where Latin-1 holds the text, else iTXt (UTF-8); None for a keyword PNG
    cannot store (1–79 Latin-1 characters)."""
    try:
        keyword = key.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if not 1 <= len(keyword) <= 79 or b"\x00" in keyword:
        return None
    if not itxt:
        try:
            return b"tEXt", keyword + b"\x00" + value.encode("latin-1")
        except UnicodeEncodeError:
            pass
    return b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8")
