"""TIFF through tifffile (and imagecodecs for its codecs): reading any number of samples
per pixel in any layout and sample type, and writing one image of N samples per pixel
with its georeferencing.

Reading: every page's header is checked against ``max_pixels`` and every strip or tile
against the file's size before anything is decoded. A single image gives H×W×S; a stack
of same-size single-sample pages (as convvol wrote before it wrote N samples per pixel,
tifffile's shaped stacks) gives one channel per page, and ImageJ or OME ``C`` stacks
their channels; ImageJ or OME stacks with Z or T planes are
refused with a hint. Reduced-resolution pages (overviews) and masks are not images of
their own. Photometric kinds tifffile does not turn into samples (palettes, CMYK,
YCbCr, 1-bit, ...) are left to Pillow; headers tifffile cannot parse are refused.

Writing: N channels as one contiguous image of N samples (RGB for three integer
channels), compressed (``none``, ``deflate``, ``zstd``, ``lzw``, ``packbits``), BigTIFF
when 4 GiB would not hold it, with the GeoTIFF tags of an :class:`ImageInfo` and the
channels' names as GDAL band descriptions.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, NamedTuple

import numpy as np

from convvol.errors import ParameterError, VolumeError, did_you_mean
from convvol.io import georef
from convvol.io.georef import GeoReference
from convvol.io.metadata import ImageInfo
from convvol.limits import VALUES_PER_PIXEL

COMPRESSIONS = ("none", "deflate", "zstd", "lzw", "packbits")
# Deflate at --compress-level (1 by default) with a predictor: lossless, read by every
# TIFF reader (GDAL, QGIS, ImageJ/Fiji, libtiff, Pillow), fast at level 1. zstd makes
# files as small 2-3× faster, but ImageJ and libtiff builds without it cannot read them
# (figures: benchmarks/tiff_codecs.py, quoted in docs/scientific.md).
DEFAULT_COMPRESSION = "deflate"
_CODECS = {"none": None, "deflate": "adobe_deflate", "zstd": "zstd", "lzw": "lzw",
           "packbits": "packbits"}  # fmt: skip
_LEVELLED = ("deflate", "zstd")
# Photometric interpretations whose samples are the image's values.
_MINISBLACK, _RGB = 1, 2
_SAMPLE_PHOTOMETRICS = (_MINISBLACK, _RGB)
_REDUCED, _MASK = 1, 4  # NewSubfileType bits: an overview, a transparency mask
# More pages than any channel stack holds: a chain of IFDs that loops (a 760-byte file the
# fuzzer found declares pages without end, about 10 µs each to parse) is refused here.
MAX_PAGES = 10_000
_SAMPLE_KINDS = "uif"
# Axes a TIFF series may have that convvol reads as channels: ImageJ/OME channels,
# samples, tifffile's unnamed stacking axes (pages, shaped stacks).
_CHANNEL_AXES = frozenset("CSIQ")
_PLANE_AXES = {"Z": "Z slices", "T": "time points"}
_ORIENTATION = 274
BIGTIFF_BYTES = 2**32 - 2**25  # beyond this a classic TIFF cannot address its strips
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic, BigTIFF


class TiffRead(NamedTuple):
    """A TIFF as read: stored samples H×W×C, their divisor, the file's description, its
    orientation tag (1–8: the caller turns the pixels upright), and whether the channels
    came from a plain stack of pages (read as they are, never converted to RGB, as convvol
    wrote them; ImageJ and OME channels are an image's channels, as samples are)."""

    pixels: np.ndarray
    divisor: float
    info: ImageInfo
    orientation: int
    stacked: bool


class NotForTifffile(Exception):
    """A TIFF that Pillow reads better (palettes, CMYK, YCbCr, bilevel): fall back."""


def unit_divisor(dtype: np.dtype[Any], values: str) -> float:
    """What divides a stored sample of ``dtype`` into the volume's values: the type's
    maximum for integers read as ``unit``, else 1 (floats; ``native``)."""
    if values == "native" or dtype.kind == "f":
        return 1.0
    return float(np.iinfo(dtype).max)


def read_tiff(
    stream: IO[bytes], label: str, *, max_pixels: int | None, values: str = "unit"
) -> TiffRead:
    """A TIFF's stored samples and what it says about itself (:class:`TiffRead`).

    Raises VolumeError for a damaged, hostile or unsupported file, and NotForTifffile
    for one Pillow should read instead.
    """
    import tifffile

    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    # A header tifffile cannot parse (huge tag counts, tag lists beyond the file, ...) is
    # refused, not handed to Pillow, which reads what it can of such files.
    with _quiet(), _failures(label):
        tif = tifffile.TiffFile(stream, name=label)
    with tif, _quiet(), _failures(label):
        _check_planes(tif, label)
        pages = _image_pages(tif, label, max_pixels)
        _check_segments(pages, label, size)
        first = pages[0]
        if not _sample_image(first):
            raise NotForTifffile(f"photometric {first.photometric}, samples {first.dtype}")
        declared = sum(_count(page.imagelength) * _count(page.imagewidth)
                       * _count(page.samplesperpixel) for page in pages)  # fmt: skip
        with _failures(label, declared * np.dtype(first.dtype).itemsize):
            series_volume = _series_channels(tif, label)
            stacked = True
            if series_volume is not None:  # channels of one image, as samples are
                pixels, stacked = series_volume, False
            elif len(pages) > 1:
                pixels, stacked = _page_stack(pages)
            else:
                pixels, stacked = _as_hwc(first.asarray(maxworkers=1), first), False
        info = _describe(first, pixels.dtype)
        orientation = _orientation(first)
    return TiffRead(pixels, unit_divisor(pixels.dtype, values), info, orientation, stacked)


_QUIET = threading.local()
_FILTERED: list[bool] = []  # the filter is installed on first use (logging costs start-up)


def _drop_while_quiet(record: object) -> bool:
    """tifffile's log records are dropped in a thread reading for convvol: a damaged file
    is one line of convvol's, never tifffile's warnings on the user's terminal."""
    return not getattr(_QUIET, "on", False)


@contextmanager
def _quiet() -> Iterator[None]:
    if not _FILTERED:
        import logging

        logging.getLogger("tifffile").addFilter(_drop_while_quiet)
        _FILTERED.append(True)
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before


# A decoder that runs out of memory on an image declaring no more than this was misled
# by its compressed stream (a Zstd or LZMA frame claiming a huge size): a damaged file.
_SMALL_IMAGE_BYTES = 2**28


@contextmanager
def _failures(label: str, declared_bytes: int | None = None) -> Iterator[None]:
    """tifffile's and imagecodecs' many kinds of failure as one VolumeError. While
    decoding an image of ``declared_bytes``, running out of memory is the file's fault
    if the image is small; otherwise (and outside decoding) it is the machine's."""
    try:
        yield
    except (VolumeError, NotForTifffile, NotStreamable):
        raise
    except MemoryError:
        if declared_bytes is None or declared_bytes > _SMALL_IMAGE_BYTES:
            raise
        raise VolumeError(
            f"{label}: damaged TIFF (a compressed strip or tile claims more data than "
            "its image holds)"
        ) from None
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else ""
        raise VolumeError(
            f"{label}: damaged or truncated TIFF ({type(error).__name__}: {message[:200]})"
        ) from None


def _sample_image(page: Any) -> bool:
    """Whether a page's samples are its values (not a palette, CMYK, YCbCr or 1-bit)."""
    dtype = page.dtype
    return (
        page.photometric in _SAMPLE_PHOTOMETRICS and page.bitspersample > 1
        and dtype is not None and np.dtype(dtype).kind in _SAMPLE_KINDS
    )  # fmt: skip


def _orientation(page: Any) -> int:
    value = page.tags.valueof(_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _image_pages(tif: Any, label: str, max_pixels: int | None) -> list[Any]:
    """The file's full-resolution image pages, each header checked against the limits
    before any is decoded (overviews and masks are skipped)."""
    pages: list[Any] = []
    total = 0
    for number, page in enumerate(tif.pages):
        if number >= MAX_PAGES:
            raise VolumeError(
                f"{label}: more than {MAX_PAGES:,} pages (a damaged TIFF whose pages loop?)",
                hint="a stack of that many planes: split it first (tifffile), or filter "
                "it plane by plane",
            )
        if not hasattr(page, "imagewidth"):  # a frame: its own header, as checked here
            page = page.aspage()
        width, height = _count(page.imagewidth), _count(page.imagelength)
        samples, depth = _count(page.samplesperpixel), _count(page.imagedepth)
        if max_pixels is not None and width * height > max_pixels:
            raise _too_large(label, f"{width}×{height}", width * height, max_pixels, "pixels")
        if pages and int(page.subfiletype) & (_REDUCED | _MASK):
            continue  # never decoded
        total += width * height * samples * depth
        if max_pixels is not None and total > VALUES_PER_PIXEL * max_pixels:
            what = f"pages up to {len(pages) + 1} of {width}×{height}×{samples}"
            raise _too_large(label, what, total, VALUES_PER_PIXEL * max_pixels, "values")
        if depth > 1:
            raise VolumeError(
                f"{label}: a volumetric TIFF image ({depth} planes deep)",
                hint="convvol filters 2-D images: save each plane as its own TIFF",
            )
        if width == 0 or height == 0:
            raise VolumeError(f"{label}: the image is empty ({width}×{height})")
        pages.append(page)
    if not pages:
        raise VolumeError(f"{label}: the TIFF holds no image")
    return pages


def _count(value: Any) -> int:
    """A header's count (a damaged tag may hold a tuple or nothing): an int ≥ 0."""
    if isinstance(value, tuple | list):
        value = value[0] if value else 0
    return max(int(value or 0), 0)


def _too_large(label: str, what: str, amount: int, limit: int, unit: str) -> VolumeError:
    return VolumeError(
        f"{label}: {what} = {amount:,} {unit}, more than the limit of {limit:,} "
        "(a decompression bomb?)",
        hint="checked from the TIFF's header before decoding; if you trust this input, "
        "raise the limit with --max-pixels N (0: no limit)",
    )


def _check_segments(pages: Sequence[Any], label: str, size: int) -> None:
    """Every strip or tile within the file, and no more of them than the image has."""
    for number, page in enumerate(pages, start=1):
        offsets, counts = page.dataoffsets, page.databytecounts
        if len(offsets) != len(counts):
            raise VolumeError(f"{label}: page {number} has {len(offsets):,} strip offsets "
                              f"but {len(counts):,} strip sizes: the file is damaged")  # fmt: skip
        if page.is_contiguous is None and len(offsets) > 16 * max(1, page.size):
            raise VolumeError(f"{label}: page {number} declares {len(offsets):,} strips "
                              "for a far smaller image: the file is damaged")  # fmt: skip
        for offset, count in zip(offsets, counts, strict=True):
            if count and (offset < 0 or offset + count > size):
                raise VolumeError(
                    f"{label}: page {number} has data at bytes {offset:,}–{offset + count:,}, "
                    f"beyond the end of the file ({size:,} bytes): it is truncated or damaged"
                )


def _check_planes(tif: Any, label: str) -> None:
    """Refuse, with a hint, an ImageJ or OME stack of Z slices or time points (before its
    pages are counted against the limits: the hint is what such a file needs)."""
    if not (tif.is_imagej or tif.is_ome):
        return
    series = tif.series[0]
    sizes = dict(zip(series.axes, series.shape, strict=True))
    for axis, what in _PLANE_AXES.items():
        if sizes.get(axis, 1) > 1:
            kind = "ImageJ" if tif.is_imagej else "OME-TIFF"
            raise VolumeError(
                f"{label}: an {kind} stack of {sizes[axis]} {what} (axes {series.axes}): "
                "convvol filters one 2-D image of channels at a time",
                hint="save each plane as its own TIFF (e.g. tifffile.imwrite per plane, or "
                "Fiji's Image > Stacks > Stack to Images) and filter them as a batch",
            )


def _series_channels(tif: Any, label: str) -> np.ndarray | None:
    """An ImageJ or OME stack as H×W×C (its C, and S, axes as channels), None for other
    files."""
    if not (tif.is_imagej or tif.is_ome):
        return None
    _check_planes(tif, label)
    series = tif.series[0]
    sizes = dict(zip(series.axes, series.shape, strict=True))
    others = [axis for axis, n in sizes.items() if n > 1 and axis not in "YX" and
              axis not in _CHANNEL_AXES]  # fmt: skip
    if others or "Y" not in sizes or "X" not in sizes:
        raise VolumeError(f"{label}: a stack with axes {series.axes} {series.shape}, which "
                          "convvol cannot read as an image of channels")  # fmt: skip
    array = series.asarray(maxworkers=1)
    axes = series.axes
    order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
    array = np.transpose(array, order)
    return np.ascontiguousarray(array.reshape(array.shape[0], array.shape[1], -1))


def _page_stack(pages: Sequence[Any]) -> tuple[np.ndarray, bool]:
    """Pages of one size, one sample each, as channels; otherwise the first page."""
    first = pages[0]
    stackable = all(
        page.samplesperpixel == 1 and page.shape[:2] == first.shape[:2] and _sample_image(page)
        for page in pages
    )
    if not stackable:
        return _as_hwc(first.asarray(maxworkers=1), first), False
    layers = [page.asarray(maxworkers=1) for page in pages]
    kinds = {layer.dtype for layer in layers}
    if len(kinds) == 1:
        return np.stack(layers, axis=2), True
    # Pages of different types: each as a fraction of its own type's range.
    volume = np.empty((*layers[0].shape, len(layers)), np.float32)
    for c, layer in enumerate(layers):
        np.divide(layer, np.float32(unit_divisor(layer.dtype, "unit")), out=volume[:, :, c],
                  casting="unsafe")  # fmt: skip
    return volume, True


def _as_hwc(array: np.ndarray, page: Any) -> np.ndarray:
    """One page's array (Y X, Y X S, or S Y X when planar) as H×W×S."""
    if array.ndim == 2:
        return array[:, :, np.newaxis]
    if array.ndim == 3 and page.planarconfig == 2 and array.shape[0] == page.samplesperpixel:
        return np.ascontiguousarray(np.moveaxis(array, 0, 2))
    return array.reshape(array.shape[0], array.shape[1], -1)


def _describe(page: Any, dtype: np.dtype[Any]) -> ImageInfo:
    """The sample type and GeoTIFF tags of a page."""
    tags = page.tags

    def value(code: int) -> Any:
        tag = tags.get(code)
        return None if tag is None else tag.value

    def numbers(code: int, kind: type) -> tuple[Any, ...] | None:
        found = value(code)
        if found is None:
            return None
        return tuple(kind(v) for v in np.asarray(found).ravel())

    geo = GeoReference(
        pixel_scale=numbers(georef.MODEL_PIXEL_SCALE, float),
        tiepoints=numbers(georef.MODEL_TIEPOINT, float),
        transformation=numbers(georef.MODEL_TRANSFORMATION, float),
        geokeys=numbers(georef.GEO_KEY_DIRECTORY, int),
        double_params=numbers(georef.GEO_DOUBLE_PARAMS, float),
        ascii_params=_text(value(georef.GEO_ASCII_PARAMS)),
    )
    nodata_text = _text(value(georef.GDAL_NODATA))
    try:
        nodata = float(nodata_text.strip().rstrip("\x00")) if nodata_text else None
    except ValueError:
        nodata = None
    return ImageInfo(
        format="TIFF",
        sample_type=np.dtype(dtype).name,
        georeference=geo if geo != GeoReference() else None,
        nodata=nodata,
        gdal_metadata=_dataset_metadata(_text(value(georef.GDAL_METADATA))),
    )


def _text(found: Any) -> str | None:
    if found is None:
        return None
    if isinstance(found, bytes):
        return found.decode("latin-1")
    return str(found)


# --- reading a few rows at a time ------------------------------------------------


class NotStreamable(Exception):
    """A TIFF that is not one plain image of samples (a stack, a palette, turned by its
    orientation tag, ...): read it whole instead."""


def _segment_layout(page: Any, label: str) -> tuple[int, int, int]:
    """(rows per strip or tile, segments across, planes) of a page whose strips or tiles
    are as many as its image needs (else VolumeError)."""
    height, width = _count(page.imagelength), _count(page.imagewidth)
    samples = _count(page.samplesperpixel)
    tiled = bool(page.is_tiled)
    step = _count(page.tilelength if tiled else page.rowsperstrip) or height
    step = max(1, step if tiled else min(step, height))
    across = -(-width // max(1, _count(page.tilewidth))) if tiled else 1
    planes = samples if page.planarconfig == 2 and samples > 1 else 1
    needed = planes * -(-height // step) * across
    if len(page.dataoffsets) < needed:
        raise VolumeError(f"{label}: the image needs {needed:,} strips or tiles but the file "
                          f"has {len(page.dataoffsets):,}: it is damaged")  # fmt: skip
    return step, across, planes


class TiffRows:
    """One TIFF image read a band of rows at a time, decoding only the strips or tiles
    those rows lie in (the last row of them kept), for inputs larger than memory.

    Slicing ``[first:last]`` gives the stored samples H×W×S of those rows, whatever the
    layout (contiguous or planar, strips or tiles) and codec. ``info`` is the file's
    description, as :func:`read_tiff` gives it. Raises NotStreamable for files that are
    not one plain image, VolumeError for damaged or hostile ones.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pixels: int | None) -> None:
        import tifffile

        label = str(path)
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        try:
            size = os.fstat(self._file.fileno()).st_size
            with _quiet():
                try:
                    self._tif = tifffile.TiffFile(self._file, name=label)
                except Exception as error:  # read whole: Pillow or read_tiff says what
                    raise NotStreamable(str(error)) from None
            with _quiet(), _failures(label):
                pages = _image_pages(self._tif, label, max_pixels)
                _check_segments(pages, label, size)
                page = pages[0]
                plain = (
                    len(pages) == 1 and not (self._tif.is_imagej or self._tif.is_ome)
                    and _sample_image(page) and _orientation(page) == 1
                )  # fmt: skip
                if not plain:
                    raise NotStreamable("not one plain image of samples")
                info = _describe(page, np.dtype(page.dtype))
                layout = _segment_layout(page, label)
        except BaseException:
            self.close()
            raise
        self._page = page
        self.label = label
        self.dtype = np.dtype(page.dtype)
        self.shape = (_count(page.imagelength), _count(page.imagewidth),
                      _count(page.samplesperpixel))  # fmt: skip
        self.info = info
        self._segment_rows, self._across, self._planes = layout
        # What one row of segments holds of the image: a decoder that runs out of memory
        # on less was misled by the file (a tile declared far larger than the image).
        rows = min(self._segment_rows, self.shape[0])
        self._row_bytes = rows * self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._kept: tuple[int, np.ndarray] | None = None  # (segment row, its samples)

    def __getitem__(self, rows: slice) -> np.ndarray:
        first, last, _ = rows.indices(self.shape[0])
        _, width, samples = self.shape
        out = np.empty((max(last - first, 0), width, samples), self.dtype)
        step = self._segment_rows
        for row in range(first // step, (max(last, first + 1) - 1) // step + 1):
            band = self._segment_row(row)
            top = row * step
            low, high = max(first, top), min(last, top + band.shape[0])
            out[low - first : high - first] = band[low - top : high - top]
        return out

    def _segment_row(self, row: int) -> np.ndarray:
        """The samples of one row of strips or tiles (all planes), decoded."""
        if self._kept is not None and self._kept[0] == row:
            return self._kept[1]
        with _quiet(), _failures(self.label, self._row_bytes):
            band = self._decode_row(row)
        self._kept = (row, band)
        return band

    def _decode_row(self, row: int) -> np.ndarray:
        page, (height, width, samples) = self._page, self.shape
        step, across = self._segment_rows, self._across
        rows = min(step, height - row * step)
        band = np.zeros((rows, width, samples), self.dtype)
        planar = self._planes > 1
        down = -(-height // step)
        decode = page.decode
        for plane in range(self._planes):
            for column in range(across):
                index = (plane * down + row) * across + column
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                data = None
                if count:
                    self._file.seek(offset)
                    data = self._file.read(count)
                segment, (_, _, _, x, _), shape = decode(data, index,
                                                         jpegtables=page.jpegtables)  # fmt: skip
                if segment is None:  # an empty segment: zeros
                    continue
                segment = np.asarray(segment).reshape(shape)[0]  # length × width × samples
                segment = segment[:rows, : width - x]
                if planar:
                    band[: segment.shape[0], x : x + segment.shape[1], plane] = segment[:, :, 0]
                else:
                    band[: segment.shape[0], x : x + segment.shape[1]] = segment
        return band

    def close(self) -> None:
        """Let go of the file."""
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
        self._file.close()


# --- writing ----------------------------------------------------------------------


def check_compression(name: str) -> str:
    """The compression called ``name``, or ParameterError."""
    if name not in COMPRESSIONS:
        raise ParameterError(
            f"compression must be one of {', '.join(COMPRESSIONS)}; got {name!r}",
            hint=did_you_mean(name, COMPRESSIONS),
        )
    return name


def write_tiff(
    stream: IO[bytes],
    samples: np.ndarray,
    *,
    compress: str = DEFAULT_COMPRESSION,
    compress_level: int = 1,
    names: Sequence[str] = (),
    info: ImageInfo | None = None,
    nodata: float | None = None,
) -> None:
    """An H×W×C array of samples (any integer type, or float32) as one TIFF image of C
    samples per pixel, with ``info``'s georeferencing, ``nodata`` (in the samples'
    units) and ``names`` as the band descriptions."""
    import tifffile

    channels = samples.shape[2]
    handle = tifffile.FileHandle(stream, name="output.tif")  # a named handle: fds have none
    with tifffile.TiffWriter(handle, bigtiff=samples.nbytes > BIGTIFF_BYTES) as writer:
        writer.write(
            samples if channels > 1 else samples[:, :, 0],
            **_page_options(samples.dtype, channels, compress, compress_level, names, info,
                            nodata),
        )  # fmt: skip


def _page_options(
    dtype: np.dtype[Any],
    channels: int,
    compress: str,
    compress_level: int,
    names: Sequence[str],
    info: ImageInfo | None,
    nodata: float | None,
) -> dict[str, Any]:
    """tifffile's options for one image: layout, codec, predictor and the tags."""
    check_compression(compress)
    codec = _CODECS[compress]
    options: dict[str, Any] = {
        "photometric": "rgb" if channels == 3 and dtype.kind in "iu" else "minisblack",
        "planarconfig": "contig" if channels > 1 else None,
        "compression": codec,
        "metadata": None,  # no tifffile JSON description: the tags say it all
        "software": False,
        "extratags": _extra_tags(dtype, names, info, nodata),
    }
    if compress in _LEVELLED:
        # zstd's level 0 is its own default (3); deflate's 0 stores.
        options["compressionargs"] = {"level": compress_level}
    if compress in ("deflate", "zstd", "lzw"):
        # Horizontal differencing for integers, the floating-point predictor (GDAL's
        # PREDICTOR=3) for floats: files about a sixth smaller (benchmarks/tiff_codecs.py).
        options["predictor"] = 2 if dtype.kind in "iu" else 3
    if channels > 1 and options["photometric"] == "minisblack":
        options["extrasamples"] = [0] * (channels - 1)  # unspecified: bands, not alpha
    if info is not None and info.icc_profile:  # a photograph's colour profile, as stored
        options["iccprofile"] = info.icc_profile
    if info is not None and info.dpi:
        options["resolution"] = info.dpi
        options["resolutionunit"] = "INCH"
    return options


XMP_TAG = 700  # XMLPacket: a photograph's XMP, as TIFF stores it


def _extra_tags(
    dtype: np.dtype[Any], names: Sequence[str], info: ImageInfo | None, nodata: float | None
) -> list[tuple[int, str, int, Any, bool]]:
    tags: list[tuple[int, str, int, Any, bool]] = []
    geo = info.georeference if info is not None else None
    if geo is not None:
        for code, kind, found in (
            (georef.MODEL_PIXEL_SCALE, "d", geo.pixel_scale),
            (georef.MODEL_TIEPOINT, "d", geo.tiepoints),
            (georef.MODEL_TRANSFORMATION, "d", geo.transformation),
            (georef.GEO_KEY_DIRECTORY, "H", geo.geokeys),
            (georef.GEO_DOUBLE_PARAMS, "d", geo.double_params),
        ):
            if found:
                tags.append((code, kind, len(found), tuple(found), True))
        if geo.ascii_params:
            tags.append((georef.GEO_ASCII_PARAMS, "s", 0, geo.ascii_params, True))
    if info is not None and info.xmp:
        tags.append((XMP_TAG, "B", len(info.xmp), info.xmp, True))
    metadata = gdal_metadata(names, info.gdal_metadata if info is not None else None)
    if metadata:
        tags.append((georef.GDAL_METADATA, "s", 0, metadata, True))
    if nodata is not None:
        tags.append((georef.GDAL_NODATA, "s", 0, _nodata_text(nodata, dtype), True))
    return tags


def _nodata_text(nodata: float, dtype: np.dtype[Any]) -> str:
    if np.isnan(nodata):
        return "nan"
    if dtype.kind in "iu" or float(nodata).is_integer():
        return str(round(nodata)) if np.isfinite(nodata) else repr(nodata)
    return repr(float(nodata))


_ITEM = re.compile(r"<Item\b[^>]*>.*?</Item>", re.DOTALL)


def _dataset_metadata(xml: str | None) -> str | None:
    """GDAL_METADATA as carried: None unless it has dataset items (band items describe
    the input's bands, never the output's)."""
    if xml and any("sample=" not in item for item in _ITEM.findall(xml)):
        return xml
    return None


def gdal_metadata(names: Sequence[str], original: str | None = None) -> str | None:
    """GDAL_METADATA XML: the input's dataset items (not its bands', which described
    other bands) and each channel's name as its band's description."""
    from html import escape  # here: only band names need it, and it costs start-up time

    items = [item for item in _ITEM.findall(original or "") if "sample=" not in item]
    items += [
        f'<Item name="DESCRIPTION" sample="{index}" role="description">'
        f"{escape(name, quote=False)}</Item>"
        for index, name in enumerate(names)
    ]
    if not items:
        return None
    return "<GDALMetadata>\n" + "\n".join(items) + "\n</GDALMetadata>\n"


# --- strip by strip ---------------------------------------------------------------


TILE = 256  # rows and columns of a streamed tile


class TiffSink:
    """A TIFF written a strip of rows at a time, as tiles of :data:`TILE` × TILE, for
    results larger than memory. Strips arrive in order; each is turned into samples by
    ``to_samples`` and held until a whole row of tiles can be written."""

    def __init__(
        self,
        stream: IO[bytes],
        shape: tuple[int, int, int],
        dtype: np.dtype[Any],
        *,
        compress: str = DEFAULT_COMPRESSION,
        compress_level: int = 1,
        names: Sequence[str] = (),
        info: ImageInfo | None = None,
        nodata: float | None = None,
    ) -> None:
        import queue
        import threading

        import tifffile

        self.shape = shape
        self.dtype = np.dtype(dtype)
        height, width, channels = shape
        self._pending = np.empty((0, width, channels), self.dtype)
        self._tiles: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        nbytes = height * width * channels * self.dtype.itemsize
        options = _page_options(self.dtype, channels, compress, compress_level, names, info,
                                nodata)  # fmt: skip
        page_shape = (height, width, channels) if channels > 1 else (height, width)

        def tiles() -> Iterator[np.ndarray]:
            while (tile := self._tiles.get()) is not None:
                yield tile if channels > 1 else tile[:, :, 0]

        def run() -> None:
            try:
                handle = tifffile.FileHandle(stream, name="output.tif")
                with tifffile.TiffWriter(handle, bigtiff=nbytes > BIGTIFF_BYTES) as writer:
                    writer.write(tiles(), shape=page_shape, dtype=self.dtype,
                                 tile=(TILE, TILE), **options)  # fmt: skip
            except BaseException as error:  # handed to the strips' thread
                self._error = error
                while self._tiles.get() is not None:  # let the producer finish
                    pass

        self._thread = threading.Thread(target=run, name="convvol-tiff", daemon=True)
        self._thread.start()

    def write(self, first: int, samples: np.ndarray) -> None:
        """The next strip of samples (rows ``first`` on), H×W×C of the sink's type."""
        del first  # strips arrive in order
        self._pending = np.concatenate([self._pending, samples.astype(self.dtype, copy=False)])
        while self._pending.shape[0] >= TILE:
            self._put_row(self._pending[:TILE])
            self._pending = self._pending[TILE:]

    def close(self) -> None:
        """Write what is left and wait for the file to be complete."""
        if self._pending.shape[0]:
            self._put_row(self._pending)
            self._pending = self._pending[:0]
        self._tiles.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the writer thread without completing the file."""
        self._error = self._error or RuntimeError("aborted")
        self._tiles.put(None)
        self._thread.join()

    def _put_row(self, rows: np.ndarray) -> None:
        width = rows.shape[1]
        for left in range(0, width, TILE):
            tile = np.zeros((TILE, TILE, rows.shape[2]), self.dtype)
            part = rows[:, left : left + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            if self._error is not None:
                raise self._error
            self._tiles.put(tile)
