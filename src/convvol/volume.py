"""Reading images and ``.npy`` files as float32 H×W×C volumes, and writing volumes back.

Reading: any image Pillow opens becomes float32 in [0, 1] (8-bit ÷ 255, 16-bit ÷ 65535),
converted to RGB by default or kept as it is (``channels="keep"``: L→1, LA→2, RGB→3,
RGBA→4); ``.npy`` files load as they are. The format is told from the bytes, never from
the name, so ``-`` (standard input) works for both.

Writing: formats are rows of a table (:data:`FORMATS`). Files are written atomically: to
a temporary file beside the target, renamed into place only once complete, several files
all or nothing (:class:`OutputSet`).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
import tokenize
import warnings
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from convvol.errors import OutputError, ParameterError, VolumeError, did_you_mean
from convvol.limits import gib
from convvol.output import DEPTHS, as_volume, to_pixels

NPY_MAGIC = b"\x93NUMPY"
CHANNEL_MODES = ("rgb", "keep")
# Images of more pixels (width × height, from the header, before decoding) are refused
# unless the caller raises the limit: Pillow's own refusal threshold, 2 × 89,478,485
# (a 13,377² image: 2 GiB as float32 RGB). A .npy volume or a TIFF page stack may hold
# 4× as many values (H×W×C), as an RGBA image of that many pixels does.
DEFAULT_MAX_PIXELS = 178_956_970
VALUES_PER_PIXEL = 4
# Most bytes of a .npy per value (float64), so how much of a stream to read at most.
_MAX_BYTES_PER_VALUE = 8
# Pillow modes read directly, with the divisor that maps them to [0, 1].
_DIRECT_MODES = {
    **dict.fromkeys(("L", "LA", "RGB", "RGBA"), 255.0),
    **dict.fromkeys(("I;16", "I;16B", "I;16L", "I;16N", "I"), 65535.0),
    "F": 1.0,
}
# Other modes and what they become first.
_CONVERTED_MODES = {"1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "PA": "RGBA",
                    "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}  # fmt: skip
_SINGLE_CHANNEL_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# The first bytes of the common formats, to tell a damaged file from one of another kind.
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}  # fmt: skip
# What Pillow raises on damaged files (found by feeding it broken PNGs, TIFFs and JPEGs).
_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError,
    ZeroDivisionError, struct.error,
)  # fmt: skip
# What numpy raises on a damaged .npy header (it parses the header as a Python literal).
_NPY_HEADER_ERRORS = (
    ValueError, SyntaxError, TypeError, OverflowError, RecursionError, EOFError,
    tokenize.TokenError,
)  # fmt: skip


@dataclass(frozen=True)
class Format:
    """An output format: how it is saved, which bit depths and channel counts it takes."""

    name: str
    extensions: tuple[str, ...]
    pillow_name: str | None = None  # None: written by convvol itself (npy)
    depths: tuple[int, ...] = (8,)
    any_depth: bool = False  # stores any number of channels (one page each)
    options: dict[str, Any] = field(default_factory=dict)


FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in [
        Format("png", (".png",), "PNG", depths=(8, 16)),
        Format("jpeg", (".jpg", ".jpeg"), "JPEG", options={"quality": 95}),
        Format("tiff", (".tif", ".tiff"), "TIFF", depths=(8, 16), any_depth=True),
        Format("bmp", (".bmp",), "BMP"),
        Format("webp", (".webp",), "WEBP", options={"quality": 95}),
        Format("npy", (".npy",)),
    ]
}
FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
# zlib level 1 (run-length strategy), as OpenCV writes PNGs: a 4096² photo in 0.22 s and
# 10.1 MiB, against 1.03 s and 7.2 MiB at level 6 (measured with convvol's writer).
DEFAULT_COMPRESS_LEVEL = 1


def format_named(name: str) -> Format:
    """The format called ``name`` (``png``, ``jpg``, ...), or ParameterError."""
    key = FORMAT_ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        names = [*FORMATS, *FORMAT_ALIASES]
        raise ParameterError(
            f"unknown format {name!r}; formats are {', '.join(FORMATS)}",
            hint=did_you_mean(name, names),
        )
    return FORMATS[key]


def format_for_path(path: str | os.PathLike[str]) -> Format:
    """The format a file name's extension asks for, or ParameterError."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.extensions:
            return fmt
    known = ", ".join(ext for fmt in FORMATS.values() for ext in fmt.extensions)
    raise ParameterError(
        f"{path}: cannot tell the output format from the extension {suffix or '(none)'!r}",
        hint=f"use one of {known}, or give --format",
    )


# --- reading --------------------------------------------------------------------------


def read_volume(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    channels: str = "rgb",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an image or ``.npy`` file as a float32 H×W×C volume.

    ``source`` is a path, ``"-"`` for standard input, or a binary file object.
    ``channels="rgb"`` (default) gives 3 channels for any image; ``"keep"`` keeps the
    file's own. ``.npy`` volumes (H×W×C, or H×W as C = 1) load unscaled, whatever
    ``channels`` says, and so do multi-page TIFF stacks of single-channel pages.

    ``max_pixels`` refuses, before decoding, images of more pixels (width × height) and
    volumes of more than 4× as many values (H×W×C); 0 or None turns the check off.
    A .npy volume must hold finite values that float32 can represent.
    """
    return pixels_to_volume(*read_pixels(source, channels=channels, max_pixels=max_pixels))


def pixels_to_volume(pixels: np.ndarray, divisor: float) -> np.ndarray:
    """Stored values (as :func:`read_pixels` gives them) as a float32 volume in [0, 1]."""
    if pixels.dtype == np.float32 and divisor == 1.0:
        return pixels
    # One pass, straight to float32: the same values as converting, then dividing.
    volume = np.empty(pixels.shape, np.float32)
    np.divide(pixels, np.float32(divisor), out=volume, casting="unsafe")
    return volume


def read_pixels(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    channels: str = "rgb",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, float]:
    """The values an image stores, H×W×C, and the divisor that maps them to [0, 1].

    ``read_volume`` is these divided by the divisor in float32. The engine can take them
    as they are (``divisor=``), so a large image never needs a float copy in memory.
    ``.npy`` volumes come as float32 with divisor 1. ``max_pixels`` as for read_volume.
    """
    if channels not in CHANNEL_MODES:
        raise ParameterError(f"channels must be rgb or keep; got {channels!r}")
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, int | None)
        or (max_pixels is not None and max_pixels < 0)
    ):
        raise ParameterError(f"max_pixels must be an integer ≥ 0 or None; got {max_pixels!r}")
    limit = max_pixels or None
    label, stream = _open_source(source, limit)
    try:
        magic = stream.read(len(NPY_MAGIC))
        stream.seek(0)
        if magic == NPY_MAGIC:
            return _read_npy(stream, label, limit), 1.0
        if not magic:
            raise VolumeError(f"{label}: the file is empty")
        return _read_image(stream, label, channels, limit)
    finally:
        if stream is not source:
            stream.close()


def _open_source(
    source: str | os.PathLike[str] | IO[bytes], max_pixels: int | None
) -> tuple[str, BinaryIO]:
    if isinstance(source, str) and source == "-":
        return "<stdin>", _buffered("<stdin>", sys.stdin.buffer, max_pixels)
    if isinstance(source, str | os.PathLike):
        label = str(source)
        try:
            stream = open(source, "rb")  # noqa: SIM115 (closed by read_volume)
        except IsADirectoryError:
            raise VolumeError(f"{label}: is a directory, not an image") from None
        except FileNotFoundError:
            raise VolumeError(f"{label}: no such file") from None
        except OSError as error:
            raise VolumeError(f"{label}: cannot read: {error.strerror or error}") from None
        if stream.seekable():
            return label, stream
        with stream:  # a pipe, as from <(...)
            return label, _buffered(label, stream, max_pixels)
    label = str(getattr(source, "name", "<stream>"))
    if not source.seekable():
        return label, _buffered(label, source, max_pixels)
    return label, source  # type: ignore[return-value]


def _buffered(label: str, stream: IO[bytes], max_pixels: int | None) -> BinaryIO:
    """A stream read into memory (images need seeking), no more than the largest allowed."""
    if max_pixels is None:
        return io.BytesIO(stream.read())
    limit = max_pixels * VALUES_PER_PIXEL * _MAX_BYTES_PER_VALUE + 2**20
    buffer = io.BytesIO()
    while piece := stream.read(2**24):  # in pieces: read(limit) would reserve it all at once
        buffer.write(piece)
        if buffer.tell() > limit:
            raise VolumeError(
                f"{label}: more than {limit:,} bytes, more than any image or .npy volume "
                f"within the limit of {max_pixels:,} pixels",
                hint="raise the limit with --max-pixels N (0: no limit) if you trust the input",
            )
    buffer.seek(0)
    return buffer


def _too_large(label: str, what: str, amount: int, max_amount: int, unit: str) -> VolumeError:
    """The error for an input beyond the limit, saying how to raise it."""
    size = amount * 4 * (3 if unit == "pixels" else 1)
    return VolumeError(
        f"{label}: {what} = {amount:,} {unit}, more than the limit of {max_amount:,} "
        "(a decompression bomb?)",
        hint=f"read, it would take {gib(size)} as float32"
        + (" RGB" if unit == "pixels" else "")
        + "; if you trust this input, raise the limit with --max-pixels N (0: no limit)",
    )


def _read_npy(stream: BinaryIO, label: str, max_pixels: int | None) -> np.ndarray:
    """A .npy volume, checked against its header and the limits before anything is allocated."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's note about Python 2 headers
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not 1.0 or 2.0")
    except _NPY_HEADER_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VolumeError(f"{label}: not a readable .npy volume: {message}") from None
    if dtype.hasobject:
        raise VolumeError(
            f"{label}: the .npy holds Python objects, which would need unpickling; "
            "convvol never unpickles",
            hint="save a numeric array (e.g. float32)",
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise VolumeError(f"{label}: .npy dtype {dtype} is not real numbers")
    if len(shape) not in (2, 3) or any(side < 0 for side in shape):
        raise VolumeError(
            f"{label}: a .npy volume must be H×W×C or H×W; got shape {shape}",
            hint="save one image per file, or reshape to H×W×C",
        )
    if 0 in shape:
        raise VolumeError(f"{label}: the volume is empty (shape {shape})")
    count = int(np.prod(shape, dtype=object))
    start = stream.tell()
    follows = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    declared = count * dtype.itemsize
    if follows != declared:
        raise VolumeError(
            f"{label}: the header declares {'×'.join(map(str, shape))} {dtype} values "
            f"({declared:,} bytes) but {follows:,} bytes follow it"
            + (": the file is truncated" if follows < declared else ""),
        )
    if max_pixels is not None and count > VALUES_PER_PIXEL * max_pixels:
        raise _too_large(
            label, "×".join(map(str, shape)), count, VALUES_PER_PIXEL * max_pixels, "values"
        )
    flat = np.empty(count, dtype)
    view = flat.view(np.uint8).data
    filled = 0
    while filled < declared:  # in pieces: never a second copy of the whole volume
        piece = stream.read(min(declared - filled, 2**24))
        if not piece:
            raise VolumeError(f"{label}: the .npy file ended early (truncated)")
        view[filled : filled + len(piece)] = piece
        filled += len(piece)
    array = flat.reshape(shape, order="F" if fortran_order else "C")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return _finite_float32(array, label)


def _finite_float32(array: np.ndarray, label: str) -> np.ndarray:
    """float32 of a numeric array; NaN, ±inf and values beyond float32's range are refused."""
    if array.dtype.kind != "f":
        return array.astype(np.float32)  # integers and booleans: every one fits
    finite = np.isfinite(array)
    if array.dtype.itemsize > 4:
        finite &= np.abs(array) <= np.finfo(np.float32).max
    if not finite.all():
        y, x, c = (int(i) for i in np.argwhere(~finite)[0])
        bad = int(finite.size - np.count_nonzero(finite))
        value = array[y, x, c]
        problem = "not finite" if not np.isfinite(value) else "beyond float32's range"
        raise VolumeError(
            f"{label}: {bad:,} value{'s' if bad != 1 else ''} {problem}, the first "
            f"{float(value)!r} at row {y}, column {x}, channel {c}",
            hint="convvol needs finite float32 values; replace them first (numpy.nan_to_num)",
        )
    return array.astype(np.float32, copy=False)


# Pillow's own decompression-bomb check reads a module global; convvol applies its own
# limit instead (the caller's max_pixels), so the global is lifted while a header is read.
_PILLOW_LIMIT_LOCK = threading.Lock()


def _open_image(stream: BinaryIO) -> Image.Image:
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(stream)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_image(
    stream: BinaryIO, label: str, channels: str, max_pixels: int | None
) -> tuple[np.ndarray, float]:
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd metadata (corrupt EXIF, ...) as it reads; the pixels
            # are what matters, and a damaged image raises.
            warnings.simplefilter("ignore")
            image = _open_image(stream)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise _too_large(label, f"{width}×{height}", width * height, max_pixels, "pixels")
            stack = _page_stack(image, stream, label, max_pixels)
            if stack is None:
                pixels, divisor = _image_pixels(image, stream, label)
                if channels == "rgb":
                    pixels = _as_rgb(pixels)
            else:
                pixels, divisor = stack
    except UnidentifiedImageError:
        stream.seek(0)
        start = stream.read(8)
        kind = next((kind for magic, kind in _SIGNATURES.items() if start.startswith(magic)), None)
        if kind:
            raise VolumeError(
                f"{label}: a damaged or truncated {kind} file (its header cannot be read)"
            ) from None
        raise VolumeError(
            f"{label}: not an image or .npy volume that convvol can read",
            hint="supported: PNG, JPEG, TIFF, BMP, WebP, GIF and the rest of what Pillow "
            "reads, and .npy",
        ) from None
    except Image.DecompressionBombError as error:
        raise VolumeError(
            f"{label}: refused: {error}",
            hint="if you trust this input, raise the limit with --max-pixels N",
        ) from None
    except _DECODE_ERRORS as error:
        raise VolumeError(
            f"{label}: damaged or truncated image ({type(error).__name__}: {error})"
        ) from None
    return pixels, divisor


def _page_stack(
    image: Image.Image, stream: BinaryIO, label: str, max_pixels: int | None
) -> tuple[np.ndarray, float] | None:
    """A multi-page TIFF of same-size single-channel pages (as convvol writes) as one volume."""
    if image.format != "TIFF":  # other formats' n_frames can mean reading every frame
        return None
    pages = int(getattr(image, "n_frames", 1))
    if pages < 2:
        return None
    layers: list[np.ndarray] = []
    divisors: list[float] = []
    for page in range(pages):
        image.seek(page)
        same_size = not layers or image.size == (layers[0].shape[1], layers[0].shape[0])
        if image.mode not in _SINGLE_CHANNEL_MODES or not same_size:
            image.seek(0)
            return None
        width, height = image.size
        values = (page + 1) * width * height
        if max_pixels is not None and values > VALUES_PER_PIXEL * max_pixels:
            raise _too_large(
                label, f"{page + 1} pages of {width}×{height}", values,
                VALUES_PER_PIXEL * max_pixels, "values",
            )  # fmt: skip
        pixels, divisor = _image_pixels(image, stream, label)
        layers.append(pixels[:, :, 0])
        divisors.append(divisor)
    if len(set(divisors)) == 1:
        return np.stack(layers, axis=2), divisors[0]
    # Pages of different kinds: each to float32 by its own divisor.
    volume = np.empty((*layers[0].shape, len(layers)), np.float32)
    for c, (layer, divisor) in enumerate(zip(layers, divisors, strict=True)):
        np.divide(layer, np.float32(divisor), out=volume[:, :, c], casting="unsafe")
    return volume, 1.0


def _direct_mode(image: Image.Image) -> Image.Image:
    """Convert palettes, CMYK, 1-bit and other modes to one that maps straight to floats."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _CONVERTED_MODES:
        return image.convert(_CONVERTED_MODES[image.mode])
    return image if image.mode in _DIRECT_MODES else image.convert("RGB")


EXIF_ORIENTATION = 0x0112


def _image_pixels(image: Image.Image, stream: BinaryIO, label: str) -> tuple[np.ndarray, float]:
    """Pillow's quirks in one place: palettes, 16-bit modes, EXIF orientation → H×W×C
    values and their divisor."""
    # load() clears the tile list, which tells 16-bit-per-sample colour apart.
    tiles = list(getattr(image, "tile", None) or [])
    image.load()
    # Read after load(): Pillow already turns TIFFs upright there (and drops the tag).
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if image.mode in ("RGB", "RGBA") and tiles and _rawmode(tiles[0])[-4:] in (";16B", ";16L"):
        pixels, divisor = _sixteen_bit_colour(image, stream, tiles), 65535.0
    else:
        direct = _direct_mode(image)
        pixels, divisor = np.asarray(direct), _DIRECT_MODES[direct.mode]
        if direct.mode == "F":  # float TIFFs may hold NaN or ±inf, which convvol refuses
            _finite_float32(pixels[:, :, np.newaxis], label)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return _orient(pixels, orientation), divisor


def _orient(volume: np.ndarray, orientation: object) -> np.ndarray:
    """Turn pixels as stored into pixels as a viewer shows them (EXIF orientation 1–8)."""
    transforms = {
        2: lambda v: v[:, ::-1],
        3: lambda v: v[::-1, ::-1],
        4: lambda v: v[::-1],
        5: lambda v: v.transpose(1, 0, 2),
        6: lambda v: np.rot90(v, -1),
        7: lambda v: np.rot90(v, 2).transpose(1, 0, 2),
        8: lambda v: np.rot90(v, 1),
    }
    transform = transforms.get(orientation)  # type: ignore[call-overload]
    return np.ascontiguousarray(transform(volume)) if transform else volume


def _rawmode(tile: Any) -> str:
    """A tile's raw mode: PNG keeps it as the args, TIFF as their first item."""
    return str(tile.args if isinstance(tile.args, str) else tile.args[0])


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])
    return tile._replace(args=args)


def _sixteen_bit_colour(image: Image.Image, stream: BinaryIO, tiles: list[Any]) -> np.ndarray:
    """All 16 bits of a 48/64-bit PNG or TIFF, which Pillow itself decodes to 8 per sample.

    Pillow keeps each sample's high byte. PNG's filters work on each byte lane of a pixel on
    its own, and raw TIFF strips have none, so decoding the stream again with the other
    byte order yields the low bytes exactly.
    """
    high = np.asarray(image).astype(np.uint16)
    swapped = {"B": "L", "L": "B"}
    stream.seek(0)
    with _open_image(stream) as again:
        again.seek(getattr(image, "tell", lambda: 0)())
        again.tile = [_with_rawmode(t, _rawmode(t)[:-1] + swapped[_rawmode(t)[-1]]) for t in tiles]
        again.load()
        low = np.asarray(again).astype(np.uint16)
    if low.shape != high.shape:  # a layout the trick does not cover: keep 8-bit precision
        return high * 257
    return (high << 8) | low


def _as_rgb(volume: np.ndarray) -> np.ndarray:
    """Grey becomes three equal channels; alpha is dropped."""
    if volume.shape[2] in (1, 2):
        return np.repeat(volume[:, :, :1], 3, axis=2)
    return volume[:, :, :3] if volume.shape[2] == 4 else volume


# --- writing --------------------------------------------------------------------------


def check_encodable(fmt: Format, channels: int, depth: int, target: str = "output") -> None:
    """Raise ParameterError unless ``fmt`` can store ``channels`` channels at ``depth`` bits."""
    if fmt.name == "npy":
        return
    if depth not in fmt.depths:
        raise ParameterError(
            f"{target}: {fmt.name.upper()} stores {' or '.join(map(str, fmt.depths))}-bit "
            f"pixels, not {depth}-bit",
            hint="use .png or .tif for --depth 16, or .npy for raw floats",
        )
    if not fmt.any_depth and channels not in (1, 3):
        raise ParameterError(
            f"{target}: the result has {channels} channels; {fmt.name.upper()} stores 1 "
            "(greyscale) or 3 (RGB)",
            hint="use --split for one greyscale image per channel, or write .npy or .tif "
            "to keep the whole volume",
        )


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
) -> None:
    """Write ``volume`` to ``stream`` in ``fmt``: scaled to pixels, or raw float32 for npy.

    ``target`` names the destination in error messages. ``quantized`` says ``volume``
    holds pixels already (``to_pixels``'s uint8 or uint16 for ``depth``): they are
    written as they are.
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
    check_encodable(fmt, volume.shape[2], depth, target)
    pixels = volume if quantized else to_pixels(volume, scale, depth)
    channels = pixels.shape[2]
    if fmt.name == "png":
        _write_png(stream, pixels, compress_level)
        return
    if fmt.name == "tiff" and depth == 16 and channels == 3:
        _write_tiff_16bit_rgb(stream, pixels)
        return
    options = dict(fmt.options)
    if channels == 1 or (channels == 3 and depth == 8):
        _pillow_image(pixels).save(stream, format=fmt.pillow_name, **options)
        return
    # TIFF with any other depth: one greyscale page per channel.
    pages = [_pillow_image(pixels[:, :, [c]]) for c in range(channels)]
    pages[0].save(stream, format="TIFF", save_all=True, append_images=pages[1:], **options)


def _pillow_image(pixels: np.ndarray) -> Image.Image:
    """uint8 H×W×3 → RGB; uint8 H×W×1 → L; uint16 H×W×1 → I;16 (Pillow infers the mode)."""
    return Image.fromarray(
        np.ascontiguousarray(pixels if pixels.shape[2] == 3 else pixels[:, :, 0])
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def _raw_deflater(compress_level: int) -> Any:
    """A raw-deflate compressor for ``compress_level`` (0–9).

    Level 1, the default, is ISA-L's level 1 when the ``isal`` package is there: 700
    MB/s against zlib's 120 MB/s at the same size on photos (measured on 8 MiB of
    filtered rows). Other levels are zlib's; level 1 without ISA-L is zlib's with the
    run-length strategy, as OpenCV writes PNGs.
    """
    if compress_level == 1:
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            return isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
        return zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    return zlib.compressobj(compress_level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)


def _write_png(stream: IO[bytes], pixels: np.ndarray, compress_level: int) -> None:
    """A greyscale or RGB PNG of 8 or 16 bits, deflated in parallel.

    Pillow's encoder runs on one core (and cannot write 48-bit RGB at all). Rows are
    filtered with 'Up' (difference with the row above, vectorised) and cut into pieces;
    each piece is raw-deflated on its own thread, ending in a sync flush, and becomes
    its own IDAT chunk (its CRC computed on that thread too), as pigz joins deflate
    streams. See :func:`_raw_deflater` for the compressors.
    """
    height, width, channels = pixels.shape
    bits = pixels.dtype.itemsize * 8
    rows = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder(">"), copy=False))
    rows = rows.view(np.uint8).reshape(height, -1)
    per_piece = max(1, _DEFLATE_PIECE_BYTES // (rows.shape[1] + 1))
    starts = list(range(0, height, per_piece))

    def deflate(first: int) -> tuple[int, bytes]:
        last = min(first + per_piece, height)
        filtered = np.empty((last - first, rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # PNG filter type 'Up'
        filtered[0, 1:] = rows[first] - (rows[first - 1] if first else 0)
        np.subtract(rows[first + 1 : last], rows[first : last - 1], out=filtered[1:, 1:])
        raw = filtered.reshape(-1).data  # a flat, contiguous byte buffer: no copy
        compressor = _raw_deflater(compress_level)
        flush = zlib.Z_FINISH if last == height else zlib.Z_SYNC_FLUSH
        return zlib.adler32(raw), _png_chunk(
            b"IDAT", compressor.compress(raw) + compressor.flush(flush)
        )

    if len(starts) == 1:
        pieces = [deflate(0)]
    else:
        workers = min(len(starts), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="convvol-png") as pool:
            pieces = list(pool.map(deflate, starts))
    checksum = 1
    for first, (adler, _) in zip(starts, pieces, strict=True):
        length = (min(first + per_piece, height) - first) * (rows.shape[1] + 1)
        checksum = _adler32_combine(checksum, adler, length)
    level_bits = (
        0 if compress_level < 2 else 1 if compress_level < 6 else 2 if compress_level == 6 else 3
    )
    header = 0x7800 | level_bits << 6
    header += 31 - header % 31 if header % 31 else 0
    stream.write(b"\x89PNG\r\n\x1a\n")
    colour = 2 if channels == 3 else 0
    stream.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)))
    stream.write(_png_chunk(b"IDAT", struct.pack(">H", header)))  # zlib stream header
    for _, chunk in pieces:
        stream.write(chunk)
    stream.write(_png_chunk(b"IDAT", struct.pack(">I", checksum)))  # zlib stream trailer
    stream.write(_png_chunk(b"IEND", b""))


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    base = 65521
    remainder = second_length % base
    low = ((first & 0xFFFF) + (second & 0xFFFF) + base - 1) % base
    high = (remainder * (first & 0xFFFF) + (first >> 16) + (second >> 16) + base - remainder) % base
    return (high << 16) | low


_DEFLATE_PIECE_BYTES = 4 * 2**20  # raw bytes per parallel deflate piece (and IDAT chunk)


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


TEMPORARY_SUFFIX = ".convvol-part"  # the hidden files of outputs in the making


def temporary_name(path: Path, suffix: str = TEMPORARY_SUFFIX) -> Path:
    """A hidden, unique name beside ``path``: for its content until it is complete, or
    (``suffix=".convvol-backup"``) for what it held while it is being replaced."""
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}{suffix}")


def _create_temporary(temporary: Path) -> int:
    """Create ``temporary`` with mode 0666 less the umask, as open() does."""
    return os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)


class OutputSet:
    """Write several files all or nothing.

    Each file goes to a hidden temporary file beside its target; :meth:`commit` renames
    them all into place, :meth:`discard` (or an exception inside ``with``) removes them.
    Missing parent directories are created.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # directories made for outputs, removed on discard

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    @contextmanager
    def open(self, target: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
        """A binary stream whose content becomes ``target`` at commit."""
        path = Path(target)
        try:
            self._make_parents(path.parent)
            while True:
                # Staged before it exists: an interrupt at any moment leaves nothing behind.
                temporary = temporary_name(path)
                self._staged.append((temporary, path))
                try:
                    handle = _create_temporary(temporary)
                    break
                except FileExistsError:  # another file's name: not ours to remove
                    self._staged.remove((temporary, path))
        except (FileExistsError, NotADirectoryError):
            raise OutputError(f"{path}: a parent of this path is a file, not a directory") from None
        except OSError as error:
            raise OutputError(f"{path}: cannot write here: {error.strerror or error}") from None
        try:
            with os.fdopen(handle, "w+b") as stream:  # TIFF pages need reading back
                yield stream
            with suppress(FileNotFoundError):  # replacing a file: keep its permissions
                os.chmod(temporary, path.stat().st_mode & 0o7777)
        except OSError as error:
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None

    def write(self, target: str | os.PathLike[str], volume: np.ndarray, **options: Any) -> None:
        """Encode ``volume`` for ``target`` (format from ``options['fmt']`` or the name)."""
        fmt = options.pop("fmt", None) or format_for_path(target)
        with self.open(target) as stream:
            encode_volume(stream, volume, fmt, target=str(target), **options)

    def write_all(self, jobs: Sequence[tuple[str, np.ndarray, Format]], **options: Any) -> None:
        """Encode several files at once, on a thread per core (zlib and Pillow's encoders
        release the GIL), e.g. the channels of ``--split``."""
        for target, _, _ in jobs:  # directories first, from this thread, in order
            self._make_parents(Path(target).parent)
        if len(jobs) == 1:
            target, volume, fmt = jobs[0]
            self.write(target, volume, fmt=fmt, **options)
            return
        workers = min(len(jobs), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="convvol-write") as pool:
            futures = [
                pool.submit(self.write, target, volume, fmt=fmt, **options)
                for target, volume, fmt in jobs
            ]
            try:
                for future in futures:
                    future.result()  # re-raises the first failure; __exit__ then discards all
            except BaseException:  # a failure or Ctrl-C: start no more files
                for future in futures:
                    future.cancel()
                raise

    def _make_parents(self, directory: Path) -> None:
        missing = []
        while not directory.exists() and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:
                if made.is_dir():  # made meanwhile by another process (a batch's worker)
                    continue
                raise OutputError(
                    f"{made}: a parent of this path is a file, not a directory"
                ) from None
            except NotADirectoryError:
                raise OutputError(
                    f"{made}: a parent of this path is a file, not a directory"
                ) from None
            except OSError as error:
                raise OutputError(
                    f"{made}: cannot make this directory: {error.strerror or error}"
                ) from None
            self._created.append(made)

    def commit(self) -> None:
        """Move every staged file into place; if one cannot be, restore the ones already moved.

        Files being replaced are first hard-linked to a backup name beside them, so a
        failure halfway puts every earlier target back as it was.
        """
        replaced: list[tuple[Path, Path | None]] = []
        try:
            for temporary, path in self._staged:
                if path.is_dir():
                    raise IsADirectoryError(21, "Is a directory")
                backup = None
                if path.exists():
                    backup = temporary.with_suffix(".convvol-backup")
                    try:
                        os.link(path, backup)
                    except OSError:  # no hard links here: replace without a way back
                        backup = None
                os.replace(temporary, path)
                replaced.append((path, backup))
        except BaseException as error:  # an OSError, or Ctrl-C halfway: put everything back
            for done, backup in reversed(replaced):
                with suppress(OSError):
                    os.replace(backup, done) if backup else os.unlink(done)
            self.discard()
            if not isinstance(error, OSError):
                raise
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
        finally:
            for _, backup in replaced:
                if backup:
                    with suppress(OSError):
                        os.unlink(backup)
        self._staged.clear()

    def discard(self) -> None:
        """Remove every staged file not moved into place, and directories made for them."""
        for temporary, _ in self._staged:
            with suppress(OSError):
                os.unlink(temporary)
        self._staged.clear()
        for directory in reversed(self._created):
            with suppress(OSError):
                directory.rmdir()  # only if still empty
        self._created.clear()


def _write_stdout(data: memoryview) -> None:
    """All of ``data`` to standard output: a short write is continued, never dropped.

    BrokenPipeError (the reader has gone, as with ``| head``) is left to the caller.
    """
    view = memoryview(data)
    try:
        while view:
            written = sys.stdout.buffer.write(view)
            if not written:
                raise OSError("standard output takes no more data")
            view = view[written:]
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputError(f"standard output: cannot write: {error.strerror or error}") from None


def write_volume(
    target: str | os.PathLike[str] | IO[bytes],
    volume: np.ndarray,
    *,
    format: str | None = None,
    scale: str = "clip",
    depth: int = 8,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    quantized: bool = False,
) -> None:
    """Write an H×W×C volume to a path (atomically), ``"-"`` (stdout) or a binary stream.

    The format comes from ``format`` or else the path's extension. Images store 1
    (greyscale) or 3 (RGB) channels, TIFF any number (one page each); pixels follow
    ``scale`` (clip, abs, minmax, signed) and ``depth`` (8 or 16 bits). ``.npy`` stores the
    float32 volume unscaled. ``quantized=True`` writes pixels that ``to_pixels`` (or
    ``render_layers``) made already, as they are.
    """
    options: dict[str, Any] = {
        "scale": scale, "depth": depth, "compress_level": compress_level, "quantized": quantized,
    }  # fmt: skip
    to_stdout = isinstance(target, str | os.PathLike) and str(target) == "-"
    if isinstance(target, str | os.PathLike) and not to_stdout:
        fmt = format_named(format) if format else format_for_path(target)
        with OutputSet() as outputs:
            outputs.write(target, volume, fmt=fmt, **options)
        return
    if format is None:
        raise ParameterError("writing to a stream needs a format (e.g. format='png')")
    fmt = format_named(format)
    if isinstance(target, str | os.PathLike):
        # Encode fully first, so a failure never leaves half an image on stdout.
        buffer = io.BytesIO()
        encode_volume(buffer, volume, fmt, **options)
        _write_stdout(buffer.getbuffer())
    else:
        encode_volume(target, volume, fmt, **options)
