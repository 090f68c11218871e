"""Reading images and ``.npy`` files as H×W×C volumes.

Any image Pillow opens becomes float32 in [0, 1] (8-bit ÷ 255, 16-bit ÷ 65535),
converted to RGB by default or kept as it is (``channels="keep"``: L→1, LA→2, RGB→3,
RGBA→4); ``.npy`` files load as they are. The format is told from the bytes, never from
the name, so ``-`` (standard input) works for both. Pillow's quirks (palettes, 16-bit
modes, EXIF orientation, page stacks) are handled here and nowhere else.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import IO, Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from convvol.errors import ParameterError, VolumeError
from convvol.io import tiff
from convvol.io.codecs import decode_jpeg
from convvol.io.metadata import Animation, ImageInfo, ReadImage
from convvol.io.photo import read_photo_info
from convvol.io.tiff import TIFF_SIGNATURES
from convvol.limits import DEFAULT_MAX_PIXELS, VALUES_PER_PIXEL, gib

NPY_MAGIC = b"\x93NUMPY"
CHANNEL_MODES = ("rgb", "keep")
FRAME_MODES = ("all", "first")
# Formats whose files may hold an animation, read frame by frame with frames="all".
ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")
VALUES = ("unit", "native")  # how integer samples become the volume's values
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


def read_volume(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    channels: str = "rgb",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    values: str = "unit",
) -> np.ndarray:
    """Read an image or ``.npy`` file as a float32 H×W×C volume.

    ``source`` is a path, ``"-"`` for standard input, or a binary file object.
    ``channels="rgb"`` (default) gives 3 channels for any image; ``"keep"`` keeps the
    file's own. ``.npy`` volumes (H×W×C, or H×W as C = 1) load unscaled, whatever
    ``channels`` says, and so do multi-page TIFF stacks of single-channel pages.

    ``max_pixels`` refuses, before decoding, images of more pixels (width × height) and
    volumes of more than 4× as many values (H×W×C); 0 or None turns the check off.
    A .npy volume must hold finite values that float32 can represent.

    ``values="unit"`` (default) divides integer samples by their type's maximum (an
    8-bit 255 is 1.0); ``"native"`` keeps them as their own numbers (a uint16 3000 is
    3000.0). Float samples and ``.npy`` volumes are their own numbers either way.
    """
    return pixels_to_volume(
        *read_pixels(source, channels=channels, max_pixels=max_pixels, values=values)
    )


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
    values: str = "unit",
) -> tuple[np.ndarray, float]:
    """The values an image stores, H×W×C, and the divisor that maps them to [0, 1].

    ``read_volume`` is these divided by the divisor in float32. The engine can take them
    as they are (``divisor=``), so a large image never needs a float copy in memory.
    ``.npy`` volumes come as float32 with divisor 1. ``max_pixels`` and ``values`` as for
    read_volume.
    """
    read = read_image(source, channels=channels, max_pixels=max_pixels, values=values)
    return read.pixels, read.divisor


def read_image(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    channels: str = "rgb",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    frames: str = "first",
    values: str = "unit",
    rgb_alpha: bool = False,
) -> ReadImage:
    """:func:`read_pixels`, with what the file says about itself (:class:`ImageInfo`)
    for the writers to carry to the outputs.

    ``rgb_alpha`` with ``channels="rgb"``: an LA or RGBA image whose alpha is not opaque
    everywhere comes as RGB plus its alpha (4 channels, ``info.alpha_weight`` = 3), for
    premultiplied filtering (the alpha weighs the colours and is no channel of the
    result); an opaque one comes as RGB.

    ``frames="all"`` reads every frame of an animated GIF, WebP or PNG (APNG), each as
    the viewer shows it (composed on the canvas), into ``frames``, with their timing in
    ``info.animation``; ``max_pixels`` then bounds all frames' pixels together.
    ``"first"`` (default) reads the first frame only.
    """
    if channels not in CHANNEL_MODES:
        raise ParameterError(f"channels must be rgb or keep; got {channels!r}")
    if frames not in FRAME_MODES:
        raise ParameterError(f"frames must be all or first; got {frames!r}")
    if values not in VALUES:
        raise ParameterError(f"values must be unit or native; got {values!r}")
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
            return ReadImage(_read_npy(stream, label, limit), 1.0, ImageInfo(format="npy"))
        if not magic:
            raise VolumeError(f"{label}: the file is empty")
        if magic.startswith(TIFF_SIGNATURES):
            read = _read_tiff(stream, label, channels, limit, values)
            if read is not None:
                return read
        read = _read_image(stream, label, channels, limit, frames, rgb_alpha=rgb_alpha)
        if values == "native" and read.pixels.dtype.kind in "iu":
            return replace(read, divisor=1.0)  # the samples' own numbers, every frame's too
        return read
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
    """float32 of a numeric array; ±inf and values beyond float32's range are refused (NaN
    are missing pixels)."""
    if array.dtype.kind != "f":
        return array.astype(np.float32)  # integers and booleans: every one fits
    finite = ~np.isinf(array)
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
            hint="convvol needs float32 values (NaN for missing pixels); replace the others "
            "first (numpy.nan_to_num)",
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
            return _open_jpeg(stream) or Image.open(stream)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open_jpeg(stream: BinaryIO) -> Image.Image | None:
    """A JPEG opened by Pillow's JPEG plugin itself, as Image.open would open it; None for
    anything else (and for a JPEG the plugin refuses: Image.open then says why). Image.open
    first imports the five plugins it tries before any other (BMP, GIF, JPEG, PPM, PNG),
    costing a photo's one-process run several milliseconds for plugins it never uses."""
    stream.seek(0)
    signature = stream.read(3)
    stream.seek(0)
    if signature != b"\xff\xd8\xff":
        return None
    from PIL import JpegImagePlugin

    try:
        return JpegImagePlugin.jpeg_factory(stream)
    except (SyntaxError, IndexError, TypeError, struct.error, OSError):
        stream.seek(0)
        return None


def _read_image(
    stream: BinaryIO,
    label: str,
    channels: str,
    max_pixels: int | None,
    frames: str = "first",
    *,
    rgb_alpha: bool = False,
) -> ReadImage:
    animation: tuple[tuple[np.ndarray, ...], Animation] | None = None
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
            alpha_channel = alpha_weight = None
            if stack is None:
                pixels, divisor = _image_pixels(image, stream, label)
                # Loaded (PNG text after the image data is known), not yet seeked: the
                # first frame's metadata.
                photo = read_photo_info(image, label)
                weighed = channels == "rgb" and rgb_alpha
                if channels == "rgb":
                    pixels = _as_rgb_alpha([pixels], divisor)[0][0] if weighed else _as_rgb(pixels)
                if frames == "all" and _is_animated(image):
                    mode = "keep" if weighed else channels
                    animation = _animation(image, stream, label, mode, max_pixels)
                    if weighed:
                        animation = (_as_rgb_alpha(animation[0], divisor)[0], animation[1])
                    pixels = animation[0][0]
                if pixels.shape[2] in (2, 4):  # LA, RGBA: opacity last
                    if channels == "rgb":
                        alpha_weight = pixels.shape[2] - 1
                    else:
                        alpha_channel = pixels.shape[2] - 1
            else:
                pixels, divisor = stack
                photo = read_photo_info(image, label)
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
    # Pillow widens some 16-bit images to int32 ("I"): the divisor says what was stored.
    stored = {255.0: "uint8", 65535.0: "uint16"}.get(divisor, pixels.dtype.name)
    info = ImageInfo(
        format=image.format, sample_type="float32" if divisor == 1.0 else stored,
        alpha_channel=alpha_channel, animation=animation[1] if animation else None, **photo,
        alpha_weight=alpha_weight,
    )  # fmt: skip
    return ReadImage(pixels, divisor, info, animation[0] if animation else ())


def _is_animated(image: Image.Image) -> bool:
    return image.format in ANIMATED_FORMATS and int(getattr(image, "n_frames", 1)) > 1


def _animation(
    image: Image.Image, stream: BinaryIO, label: str, channels: str, max_pixels: int | None
) -> tuple[tuple[np.ndarray, ...], Animation]:
    """Every frame of an animation as the viewer shows it, and the frames' timing; all
    frames' pixels together are bounded by ``max_pixels``."""
    count = int(getattr(image, "n_frames", 1))
    width, height = image.size
    if max_pixels is not None and count * width * height > max_pixels:
        raise _too_large(
            label, f"{count} frames of {width}×{height}", count * width * height, max_pixels,
            "pixels",
        )  # fmt: skip
    loop = image.info.get("loop")
    frames: list[np.ndarray] = []
    durations: list[int] = []
    disposals: list[int] = []
    for number in range(count):
        image.seek(number)
        pixels, _ = _image_pixels(image, stream, label)
        frames.append(_as_rgb(pixels) if channels == "rgb" else pixels)
        durations.append(round(float(image.info.get("duration") or 0)))
        disposal = getattr(image, "disposal_method", None)  # GIF
        if disposal is None:
            disposal = image.info.get("disposal")  # APNG
        if disposal is not None:
            disposals.append(int(disposal))
    if len({frame.shape[2] for frame in frames}) > 1:  # a palette frame, then RGBA ones
        frames = [_as_rgba(frame) for frame in frames]
    image.seek(0)
    timing = Animation(
        tuple(durations), None if loop is None else int(loop),
        tuple(disposals) if len(disposals) == count else (),
    )  # fmt: skip
    return tuple(frames), timing


def _as_rgba(volume: np.ndarray) -> np.ndarray:
    """Any frame as RGBA (grey spread to three channels, opaque where it had no alpha)."""
    channels = volume.shape[2]
    colour = np.repeat(volume[:, :, :1], 3, axis=2) if channels in (1, 2) else volume[:, :, :3]
    if channels in (2, 4):
        alpha = volume[:, :, -1:]
    else:
        alpha = np.full((*volume.shape[:2], 1), np.iinfo(volume.dtype).max, volume.dtype)
    return np.concatenate([colour, alpha], axis=2)


def _read_tiff(
    stream: BinaryIO, label: str, channels: str, max_pixels: int | None, values: str
) -> ReadImage | None:
    """A TIFF through tifffile (any samples, types, layouts, codecs); None for the kinds
    Pillow reads better (palettes, CMYK, YCbCr, 1-bit)."""
    try:
        read = tiff.read_tiff(stream, label, max_pixels=max_pixels, values=values)
    except tiff.NotForTifffile:
        stream.seek(0)
        return None
    pixels = read.pixels
    if pixels.dtype.kind == "f":
        pixels = _finite_float32(pixels, label)
    pixels = _orient(pixels, read.orientation)
    if channels == "rgb" and not read.stacked:
        pixels = _as_rgb(pixels)
    return ReadImage(pixels, read.divisor, read.info)


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
        pixels, divisor = _image_pixels(image, stream, label, check_finite=False)
        layers.append(pixels[:, :, 0])
        divisors.append(divisor)
    stack = np.stack(layers, axis=2)
    if stack.dtype.kind == "f":  # counted over every page, as for the same .npy
        _finite_float32(stack, label)
    if len(set(divisors)) == 1:
        return stack, divisors[0]
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


def _image_pixels(
    image: Image.Image, stream: BinaryIO, label: str, *, check_finite: bool = True
) -> tuple[np.ndarray, float]:
    """Pillow's quirks in one place: palettes, 16-bit modes, EXIF orientation → H×W×C
    values and their divisor. ``check_finite=False`` leaves float pages to the caller."""
    # load() clears the tile list, which tells 16-bit-per-sample colour apart.
    tiles = list(getattr(image, "tile", None) or [])
    decoded = decode_jpeg(image, stream)  # straight into an array, when imagecodecs is there
    if decoded is not None:
        return _orient(decoded, image.getexif().get(EXIF_ORIENTATION, 1)), 255.0
    image.load()
    # Read after load(): Pillow already turns TIFFs upright there (and drops the tag).
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if image.mode in ("RGB", "RGBA") and tiles and _rawmode(tiles[0])[-4:] in (";16B", ";16L"):
        pixels, divisor = _sixteen_bit_colour(image, stream, tiles), 65535.0
    else:
        direct = _direct_mode(image)
        pixels, divisor = np.asarray(direct), _DIRECT_MODES[direct.mode]
        if direct.mode == "F" and check_finite:  # float TIFFs may hold NaN or ±inf
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


def _as_rgb_alpha(
    frames: Sequence[np.ndarray], divisor: float
) -> tuple[tuple[np.ndarray, ...], bool]:
    """Frames as RGB plus alpha (RGBA) when any has an alpha that is not opaque
    everywhere, else as RGB; and whether they kept an alpha."""
    transparent = any(
        frame.shape[2] in (2, 4) and bool((frame[:, :, -1] < divisor).any()) for frame in frames
    )
    if transparent:
        return tuple(_as_rgba(frame) for frame in frames), True
    return tuple(_as_rgb(frame) for frame in frames), False


def _as_rgb(volume: np.ndarray) -> np.ndarray:
    """Grey becomes three equal channels; alpha is dropped."""
    if volume.shape[2] in (1, 2):
        return np.repeat(volume[:, :, :1], 3, axis=2)
    return volume[:, :, :3] if volume.shape[2] == 4 else volume
