"""Volumes larger than memory: read a strip of rows at a time, write a strip at a time.

A ``.npy`` input is memory-mapped and a ``.npy`` or Zarr output is written strip by
strip: each strip of output rows is computed from just the input rows it reads (the
kernel's halo included, border rows built by the engine's own index rule) with the plan
the in-memory engine would use (:mod:`convvol.strips`), so the file is bit-identical to
the in-memory result. The mapped input pages are released after each strip and the
output goes out through ordinary writes, so the resident memory stays within the budget
(``--max-memory``) however large the volume.

Stacked banks write each intermediate volume to a hidden ``.npy`` beside the output and
read it back mapped. Outputs are atomic: a ``.npy`` is renamed into place when complete
(:class:`~convvol.volume.OutputSet`), a local Zarr directory likewise; a Zarr written to
an fsspec URL (``s3://``) is written in place.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from convvol import strips
from convvol.bank import Bank
from convvol.engine import DEFAULT_MEMORY_LIMIT, available_threads
from convvol.errors import OutputError, ParameterError, VolumeError
from convvol.volume import (
    DEFAULT_MAX_PIXELS,
    NPY_MAGIC,
    VALUES_PER_PIXEL,
    OutputSet,
    read_volume,
    temporary_name,
)

MIB = 2**20
# The budget of one file when --max-memory is not given.
DEFAULT_BUDGET = 1024 * MIB
# Bytes per unit, binary as memory is counted: 512M is 512 MiB.
SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
# The engine's working set never shrinks below this per thread: its bands (8 MiB
# targets) then fall as with the default limit, so results stay identical.
_ENGINE_FLOOR_PER_THREAD = 8 * MIB


def parse_size(text: str) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"64MB"`` or ``"1000000"``.

    Units are powers of 1024 (K, M, G, T, optionally followed by ``B`` or ``iB``).
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ParameterError(
            f"{text!r} is not a size", hint="write bytes, or a number with K, M, G or T: 512M"
        )
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])
    if size < 1:
        raise ParameterError(f"{text!r} is not a size above zero")
    return size


def engine_memory_limit(budget: int | None) -> int | None:
    """The engine's working-set share of a budget: a quarter, at most the engine's default
    (256 MiB), at least 8 MiB per core. ``None`` (no budget) keeps the engine's default."""
    if budget is None:
        return None
    floor = _ENGINE_FLOOR_PER_THREAD * available_threads()
    return max(min(DEFAULT_MEMORY_LIMIT, budget // 4), floor)


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there to ask)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


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
    not finite or beyond float32's range (found as the strips are read).
    """

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

    def rows(self, index: np.ndarray, cval: float = 0.0) -> np.ndarray:
        """The rows ``index`` names, in its order, as float32 (−1: a row of ``cval``).
        Runs of neighbouring rows are read as slices."""
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
        if self._check_values:
            finite = np.isfinite(raw)
            if raw.dtype.itemsize > 4:
                finite &= np.abs(raw) <= np.finfo(np.float32).max
            if not finite.all():
                y, x, c = (int(i) for i in np.argwhere(~finite)[0])
                value = float(raw[y, x, c])
                problem = "not finite" if not math.isfinite(value) else "beyond float32's range"
                raise VolumeError(
                    f"{self.label}: a value {problem}, the first {value!r} at row {first + y}, "
                    f"column {x}, channel {c}",
                    hint="convvol needs finite float32 values; replace them first "
                    "(numpy.nan_to_num)",
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
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> RowSource:
    """A ``.npy`` file (memory-mapped) or a Zarr array (a path or an fsspec URL)."""
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


def can_stream(source: str, target: str, *, split: bool, format_name: str | None) -> bool:
    """Whether ``source`` → ``target`` goes strip by strip: a C-ordered ``.npy`` file or a
    Zarr array in, a ``.npy`` or Zarr volume out (not channels split into images)."""
    if split or source == "-" or target == "-":
        return False
    zarr_out = format_name is None and is_zarr(target)
    npy_out = (format_name or "").lower() == "npy" or (
        format_name is None and target.lower().endswith(".npy")
    )
    if not (zarr_out or npy_out):
        return False
    if is_zarr(source):
        return True
    if "://" in source:
        return False
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


# --- the filter ---------------------------------------------------------------------


def filter_volume(
    source: RowSource | str | os.PathLike[str],
    banks: Sequence[Bank],
    target: str | os.PathLike[str],
    *,
    budget: int | None = None,
    threads: int | None = None,
    labels: Sequence[str] | None = None,
    format: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **overrides: Any,
) -> strips.LayerPlan:
    """Run ``banks`` over a volume too large for memory, writing ``target`` strip by strip.

    ``source`` is a :class:`RowSource`, a ``.npy`` path or a Zarr path/URL; ``target`` a
    ``.npy`` path (or any name with ``format="npy"``) or a Zarr path/URL (``*.zarr``).
    ``budget`` bounds the process's resident memory in bytes (default 1 GiB); a quarter
    of it (at most 256 MiB) is the engine's working set. ``overrides`` are the settings
    :func:`~convvol.apply_bank` takes; ``max_pixels`` the input limit of read_volume. The
    result equals :func:`~convvol.run_layers`'s, bit for bit. Returns the last layer's plan
    (its ``out_shape`` and ``names``).
    """
    budget = budget or DEFAULT_BUDGET
    opened = source if isinstance(source, RowSource) else open_source(source, max_pixels=max_pixels)
    target = str(target)
    to_zarr = format is None and is_zarr(target)
    if not to_zarr and (format or "npy").lower() != "npy":
        raise ParameterError(f"{target}: out-of-core output is .npy or Zarr, not {format}")
    layers = strips.plan_layers(
        opened.shape, banks, memory_limit=engine_memory_limit(budget), labels=labels, **overrides
    )
    # What strips may hold: the budget less what the process holds already and the
    # engine's share, halved for the raw rows read before conversion and for slack.
    room = budget - resident_bytes() - (engine_memory_limit(budget) or DEFAULT_MEMORY_LIMIT)
    strip_budget = max(room // 2, 0)
    current = opened
    try:
        with ExitStack() as stack:
            for number, layer in enumerate(layers, start=1):
                rows = layer.strip_rows(strip_budget)
                if number < len(layers):
                    if number == 1:
                        scratch = stack.enter_context(_scratch_directory(target))
                    between = os.path.join(scratch, f"layer{number}.npy")
                    with open(between, "wb") as stream:
                        _run_layer(current, layer, NpySink(stream, layer.out_shape), rows,
                                   threads)  # fmt: skip
                    current.close()
                    current = NpySource(between, max_pixels=None)  # our own
                elif to_zarr:
                    with zarr_output(target) as where:
                        _run_layer(current, layer, ZarrSink(where, layer.out_shape, rows), rows,
                                   threads)  # fmt: skip
                else:
                    with OutputSet() as outputs, outputs.open(target) as stream:
                        _run_layer(current, layer, NpySink(stream, layer.out_shape), rows,
                                   threads)  # fmt: skip
            current.close()  # before the scratch directory goes
    except OSError as error:
        raise OutputError(f"{target}: cannot write: {error.strerror or error}") from None
    finally:
        current.close()
    return layers[-1]


def _run_layer(
    source: RowSource,
    layer: strips.LayerPlan,
    sink: NpySink | ZarrSink,
    strip_rows: int,
    threads: int | None,
) -> None:
    height = layer.out_shape[0]
    for first in range(0, height, strip_rows):
        last = min(first + strip_rows, height)
        padded = source.rows(layer.input_rows(first, last), layer.cval)
        strip = layer.compute(padded, first, last, threads=threads)
        del padded
        sink.write(first, strip)


@contextmanager
def _scratch_directory(target: str) -> Iterator[str]:
    """A hidden directory for intermediate layers: beside a local target (same disk),
    else in the system's temporary directory."""
    parent = None if "://" in target else str(Path(target).resolve().parent)
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convvol-layers-", dir=parent) as directory:
        yield directory
