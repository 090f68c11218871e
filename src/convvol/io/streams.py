"""Volumes larger than memory, as row sources and sinks: a ``.npy`` input memory-mapped
(or a Zarr array read by chunks of rows) gives any rows asked for, border rows by the
engine's own index rule; a ``.npy`` or Zarr output takes a strip of rows at a time. The
mapped input pages are released after each strip, so resident memory stays within the
budget however large the volume (:func:`convvol.jobs.filter_volume` runs the strips).
Outputs are atomic: a ``.npy`` is renamed into place when complete (:class:`OutputSet`),
a local Zarr directory likewise; a Zarr written to an fsspec URL (``s3://``) in place.
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from convvol.errors import OutputError, ParameterError, VolumeError
from convvol.io import tiff
from convvol.io.metadata import NO_INFO, ImageInfo
from convvol.io.readers import NPY_MAGIC, read_volume
from convvol.io.writers import temporary_name
from convvol.limits import DEFAULT_MAX_PIXELS, MIB, VALUES_PER_PIXEL


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """A Zarr array by its name (``*.zarr``) or, for a directory, by its metadata."""
    text = str(path).rstrip("/")
    if text.lower().endswith(".zarr"):
        return True
    if "://" in text:
        return False
    return Path(text).is_dir() and any(
        (Path(text) / meta).is_file() for meta in ("zarr.json", ".zarray")
    )


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ParameterError(
            "Zarr volumes need the zarr package", hint="pip install 'convvol[dask]'"
        ) from None
    return zarr


# --- sources ------------------------------------------------------------------------


class RowSource:
    """An H×W×C volume read a set of rows at a time, as float32.

    ``array`` is anything that slices by rows (NumPy arrays and memory maps, Zarr
    arrays); H×W arrays are one channel. As for every input, a volume of more than 4 ×
    ``max_pixels`` values is refused (None or 0: no limit), and so are values that are
    infinite or beyond float32's range (found as the strips are read); NaN are missing.
    """

    info: ImageInfo = NO_INFO  # what the file says about itself (TIFFs: georeferencing)

    def __init__(
        self, array: Any, label: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ) -> None:
        shape = tuple(int(n) for n in array.shape)
        if len(shape) not in (2, 3):
            raise VolumeError(
                f"{label}: a volume must be H×W×C or H×W; got shape {shape}",
                hint="save one image per file, or reshape to H×W×C",
            )
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise VolumeError(f"{label}: dtype {dtype} is not real numbers")
        if 0 in shape:
            raise VolumeError(f"{label}: the volume is empty (shape {shape})")
        count = math.prod(shape)
        if max_pixels and count > VALUES_PER_PIXEL * max_pixels:
            raise VolumeError(
                f"{label}: {'×'.join(map(str, shape))} = {count:,} values, more than the "
                f"limit of {VALUES_PER_PIXEL * max_pixels:,}",
                hint="filtered out of core it needs no more memory than --max-memory; if you "
                "trust this input, raise the limit with --max-pixels N (0: no limit)",
            )
        self.array = array
        self.label = label
        height, width, *rest = shape
        self.shape: tuple[int, int, int] = (height, width, rest[0] if rest else 1)
        self.row_bytes = width * self.shape[2] * dtype.itemsize
        self._check_values = dtype.kind == "f"

    def rows(self, index: np.ndarray, cval: float | np.ndarray = 0.0) -> np.ndarray:
        """The rows ``index`` names, in its order, as float32 (−1: a row of ``cval``, one
        number or one per channel). Runs of neighbouring rows are read as slices."""
        out = np.empty((index.size, *self.shape[1:]), np.float32)
        start = 0
        while start < index.size:
            stop = start + 1
            if index[start] < 0:
                while stop < index.size and index[stop] < 0:
                    stop += 1
                out[start:stop] = cval
            else:
                while stop < index.size and index[stop] == index[stop - 1] + 1:
                    stop += 1
                first = int(index[start])
                self._copy_rows(first, first + stop - start, out[start:stop])
            start = stop
        return out

    def _copy_rows(self, first: int, last: int, out: np.ndarray) -> None:
        self._checked(np.asarray(self.array[first:last]), first, out)

    def _checked(self, raw: np.ndarray, first: int, out: np.ndarray) -> None:
        """``out[...] = raw`` as float32, refusing values read_volume refuses."""
        raw = raw.reshape(out.shape)
        if self._check_values:  # NaN are missing pixels: the layer's rule decides
            finite = ~np.isinf(raw)
            if raw.dtype.itemsize > 4:
                finite &= np.abs(raw) <= np.finfo(np.float32).max
            if not finite.all():
                y, x, c = (int(i) for i in np.argwhere(~finite)[0])
                value = float(raw[y, x, c])
                problem = "not finite" if not math.isfinite(value) else "beyond float32's range"
                raise VolumeError(
                    f"{self.label}: a value {problem}, the first {value!r} at row {first + y}, "
                    f"column {x}, channel {c}",
                    hint="convvol needs float32 values (NaN for missing pixels); replace "
                    "the others first (numpy.nan_to_num)",
                )
        out[...] = raw

    def close(self) -> None:
        """Let go of the data."""
        self.array = None


class NpySource(RowSource):
    """A ``.npy`` file memory-mapped read-only; the pages of each strip are released
    after it is read, so the mapping never holds more than a strip resident."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ) -> None:
        label = str(path)
        shape, dtype, offset, fortran_order = npy_header(path)
        if fortran_order:
            raise VolumeError(
                f"{label}: a Fortran-ordered .npy cannot be read a strip of rows at a time",
                hint="save it in C order (numpy.ascontiguousarray), or write an image",
            )
        with open(path, "rb") as stream:
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        array = np.ndarray(shape, dtype, buffer=self._map, offset=offset, order="C")
        self._offset = offset
        super().__init__(array, label, max_pixels=max_pixels)

    def _copy_rows(self, first: int, last: int, out: np.ndarray) -> None:
        # A few rows at a time, each run's pages dropped from this process once copied.
        step = max(1, (8 * MIB) // max(self.row_bytes, 1))
        for start in range(first, last, step):
            stop = min(start + step, last)
            self._checked(self.array[start:stop], start, out[start - first : stop - first])
            self._release(start, stop)

    def _release(self, first: int, last: int) -> None:
        advise = getattr(self._map, "madvise", None)
        if advise is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin = self._offset + first * self.row_bytes
        begin -= begin % mmap.PAGESIZE
        with suppress(OSError, ValueError):
            advise(mmap.MADV_DONTNEED, begin, self._offset + last * self.row_bytes - begin)

    def close(self) -> None:
        self.array = None
        with suppress(BufferError):
            self._map.close()


class TiffSource(RowSource):
    """A TIFF image read a band of rows at a time (only the strips or tiles those rows
    lie in are decoded), its samples divided as ``read_volume`` divides them
    (``values``). ``info`` is what the file says about itself (its georeferencing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        values: str = "unit",
    ) -> None:
        self._rows = tiff.TiffRows(path, max_pixels=max_pixels)
        try:
            super().__init__(self._rows, str(path), max_pixels=max_pixels)
        except BaseException:
            self._rows.close()
            raise
        self.divisor = tiff.unit_divisor(self._rows.dtype, values)
        self.info: ImageInfo = self._rows.info

    def _copy_rows(self, first: int, last: int, out: np.ndarray) -> None:
        raw = self._rows[first:last]
        if self.divisor == 1.0:
            self._checked(raw, first, out)
        else:  # integers: the same float32 values as read_volume's division
            np.divide(raw.reshape(out.shape), np.float32(self.divisor), out=out, casting="unsafe")

    def close(self) -> None:
        self.array = None
        self._rows.close()


def npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype[Any], int, bool]:
    """Shape, dtype, data offset and Fortran order of a ``.npy`` volume, checked as
    read_volume checks it (with its messages) but without reading the data."""
    label = str(path)
    try:
        with open(path, "rb") as stream:
            if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise ValueError("not a .npy file")
            stream.seek(0)
            version = np.lib.format.read_magic(stream)
            reader = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = reader(stream)
            offset = stream.tell()
            size = os.fstat(stream.fileno()).st_size
    except FileNotFoundError:
        raise VolumeError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise VolumeError(f"{label}: is a directory, not an image") from None
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as error:
        _refuse(path, f"not a readable .npy volume: {error}")
    valid = (
        not dtype.hasobject
        and dtype.kind in "biuf"
        and len(shape) in (2, 3)
        and 0 not in shape
        and size - offset == math.prod(shape) * dtype.itemsize
    )
    if not valid:
        _refuse(path, f"not a readable .npy volume (shape {shape}, {dtype})")
    return tuple(int(n) for n in shape), dtype, offset, bool(fortran_order)


def _refuse(path: str | os.PathLike[str], fallback: str) -> NoReturn:
    """read_volume's own error for a .npy it refuses (it checks the header before it reads
    any data, so this costs nothing), else ``fallback``."""
    read_volume(path, max_pixels=None)
    raise VolumeError(f"{path}: {fallback}")


def open_source(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    values: str = "unit",
) -> RowSource:
    """A ``.npy`` file (memory-mapped), a Zarr array (a path or an fsspec URL) or a
    TIFF image (decoded a band of rows at a time; ``values`` as for read_volume)."""
    if is_tiff(path):
        return TiffSource(path, max_pixels=max_pixels, values=values)
    if is_zarr(path):
        zarr = _zarr()
        try:
            array = zarr.open_array(store=str(path), mode="r")
        except Exception as error:  # zarr's own errors have no common base across versions
            raise VolumeError(f"{path}: not a readable Zarr array: {error}") from None
        return RowSource(array, str(path), max_pixels=max_pixels)
    return NpySource(path, max_pixels=max_pixels)


def read_whole(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A Zarr array read whole, as float32 H×W×C, for outputs that need the whole volume
    at once (images)."""
    source = open_source(path, max_pixels=max_pixels)
    try:
        return source.rows(np.arange(source.shape[0]))
    finally:
        source.close()


def is_tiff(path: str | os.PathLike[str]) -> bool:
    """A local file that starts as a TIFF (or BigTIFF) does."""
    if "://" in str(path):
        return False
    try:
        with open(path, "rb") as stream:
            return stream.read(4).startswith(tiff.TIFF_SIGNATURES)
    except OSError:
        return False


def tiff_output(target: str, format_name: str | None) -> bool:
    """Whether ``target`` is written as a TIFF (by ``--format`` or its extension)."""
    if format_name is not None:
        return format_name.lower() in ("tif", "tiff")
    return target.lower().endswith((".tif", ".tiff"))


def can_stream(
    source: str, target: str, *, split: bool, format_name: str | None, tiffs: bool = False
) -> bool:
    """Whether ``source`` → ``target`` goes strip by strip: a C-ordered ``.npy`` file or a
    Zarr array in, a ``.npy`` or Zarr volume out (not channels split into images); with
    ``tiffs`` (under ``--max-memory``) also a plain TIFF image in and a TIFF out."""
    if split or source == "-" or target == "-":
        return False
    zarr_out = format_name is None and is_zarr(target)
    npy_out = (format_name or "").lower() == "npy" or (
        format_name is None and target.lower().endswith(".npy")
    )
    if not (zarr_out or npy_out or (tiffs and tiff_output(target, format_name))):
        return False
    if is_zarr(source):
        return True
    if "://" in source:
        return False
    if is_tiff(source):
        if not tiffs:
            return False
        try:
            tiff.TiffRows(source, max_pixels=None).close()
        except tiff.NotStreamable:
            return False
        except VolumeError:
            return True  # the strip path reports it, as read_volume would
        return True
    try:
        with open(source, "rb") as stream:
            if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
                return False
    except OSError:
        return False
    try:
        return not npy_header(source)[3]  # a Fortran-ordered one is read whole
    except VolumeError:
        return True  # the strip path reports it, as read_volume would


# --- sinks --------------------------------------------------------------------------


class NpySink:
    """A float32 ``.npy`` written strip after strip to an open binary stream."""

    def __init__(self, stream: IO[bytes], shape: tuple[int, int, int]) -> None:
        self.stream = stream
        descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(stream, header)  # as np.save writes it

    def write(self, first: int, strip: np.ndarray) -> None:
        del first  # strips arrive in order
        self.stream.write(np.ascontiguousarray(strip, np.float32).data)


class ZarrSink:
    """A float32 Zarr array, chunked in strips of rows, written strip after strip."""

    def __init__(self, target: str, shape: tuple[int, int, int], chunk_rows: int) -> None:
        zarr = _zarr()
        try:
            self.array = zarr.create_array(
                store=target, shape=shape, chunks=(chunk_rows, shape[1], shape[2]),
                dtype="float32", overwrite=True,
            )  # fmt: skip
        except OSError as error:
            raise OutputError(f"{target}: cannot write: {error.strerror or error}") from None

    def write(self, first: int, strip: np.ndarray) -> None:
        self.array[first : first + strip.shape[0]] = strip


@contextmanager
def zarr_output(target: str) -> Iterator[str]:
    """Where to write a Zarr output so it appears whole: a hidden directory beside a
    local target, renamed into place on success (removed on failure); a URL as it is."""
    if "://" in target:
        yield target
        return
    path = Path(target)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{target}: exists and is not a Zarr directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{target}: cannot write here: {error.strerror or error}") from None
    temporary = temporary_name(path)
    try:
        yield str(temporary)
        replace_directory(str(temporary), target)
    except OSError as error:
        raise OutputError(f"{target}: cannot write: {error.strerror or error}") from None
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def replace_directory(temporary: str, target: str) -> None:
    """Move a finished directory into place; an old one at ``target`` goes only after."""
    path = Path(target)
    backup = None
    if path.exists():
        backup = temporary_name(path, ".convvol-backup")
        os.rename(path, backup)
    try:
        os.rename(temporary, path)
    except OSError:
        if backup:
            os.rename(backup, path)
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
