"""One input to its outputs: the flow every run takes, from one file on the command line
to each file of a batch, in this process, a worker process or a Dask worker.

:func:`run_job` decides everything about one input in one place: its targets (from the
output template), the checks made before any work (clashes, the input itself,
directories, formats that cannot hold the result, memory), which path it takes (strips
of a ``.npy``/Zarr volume larger than memory; the last layer rendered straight to pixels
band by band; or float volumes when ``.npy``, a contact sheet or a preview needs them),
the atomic writing, and the line that says what was written. :func:`process_file` is the
same job for batches: a bad file becomes a failed result instead of an error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convvol.bank import Bank, channel_names, counted
from convvol.engine import LayerPlan
from convvol.errors import ConvvolError, OutputError, ParameterError, VolumeError
from convvol.io import streams
from convvol.io.formats import (
    DEFAULT_COMPRESS_LEVEL,
    FORMATS,
    NPY_HEADER_BYTES,
    Format,
    check_encodable,
    format_for_path,
    format_named,
    resolve_depth,
)
from convvol.io.georef import grid_of
from convvol.io.metadata import NO_INFO, ImageInfo, ReadImage
from convvol.io.readers import pixels_to_volume, read_image
from convvol.io.remote import is_url, path_key, read_url_image, url_exists, write_url
from convvol.io.streams import NpySink, NpySource, RowSource, ZarrSink, is_zarr, zarr_output
from convvol.io.tiff import DEFAULT_COMPRESSION, TiffSink, check_compression
from convvol.io.writers import OutputSet, write_volume
from convvol.limits import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_MAX_PIXELS,
    check_free_space,
    check_output_sizes,
    engine_memory_limit,
    resident_bytes,
)
from convvol.masks import MissingRows, check_nodata, check_some_valid, mark_missing, read_mask
from convvol.photos import linear_streamed_error, output_info, photo_input
from convvol.pipeline import (
    check_bands,
    check_memory,
    holds_nan,
    plan_stack,
    render_plans,
    run_plans,
)
from convvol.scaling import (
    check_scale,
    linear_to_srgb,
    pixels_into,
    sample_type,
    to_pixels,
)
from convvol.settings import Settings

DEFAULT_TEMPLATE = "{stem}_{bank}.png"
DEFAULT_SPLIT_TEMPLATE = "{stem}_{bank}_{name}.png"
Explain = Callable[[str], None]


@dataclass(frozen=True)
class Item:
    """One input: its path (or URL, or ``-``), and what the template's fields take from it."""

    source: str
    stem: str
    relpath: str = "."  # its folder relative to the pattern's or directory's root

    @classmethod
    def of(cls, source: str, root: str | None = None) -> Item:
        """The item for ``source``; ``root`` (a directory or a pattern's fixed part) gives
        ``{relpath}``."""
        if source == "-":
            return cls(source, "stdin")
        name = source.rstrip("/").rsplit("/", 1)[-1]
        relpath = "." if root is None else os.path.relpath(os.path.dirname(source) or ".", root)
        return cls(source, Path(name).stem or name, relpath)

    @property
    def label(self) -> str:
        """How messages name it."""
        return "<stdin>" if self.source == "-" else self.source


@dataclass(frozen=True)
class JobOptions:
    """How every input of a run becomes its outputs: the same for every file of a batch."""

    banks: tuple[Bank, ...]
    template: str = DEFAULT_TEMPLATE  # {stem}, {relpath}, {bank}; with split {name}, {index}; "-"
    labels: tuple[str, ...] = ()  # the banks as the user named them, for messages
    split: bool = False
    format_name: str | None = None
    channels: str = "rgb"
    settings: Settings = field(default_factory=Settings)
    scale: str = "clip"
    depth: int | str = "auto"  # 8, 16, "float", or "auto": the input's own sample type
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    max_memory: int | None = None  # bytes per file (out-of-core budget, engine share)
    max_output: int | None = DEFAULT_MAX_OUTPUT  # bytes one output may take (0/None: any)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # input limit, as read_volume's
    skip_existing: bool = False
    montage: str | None = None  # a contact sheet's template (one input at a time)
    keep_volume: bool = False  # hand the float result back (for a preview)
    values: str = "unit"  # integer samples read as fractions of their range, or "native"
    compress: str = DEFAULT_COMPRESSION  # TIFF outputs' codec
    strip: bool = False  # drop the input's metadata from the outputs
    linear: bool = False  # filter in linear light (sRGB decoded before, encoded after)
    quality: int | None = None  # JPEG and WebP quality, 1-100 (None: DEFAULT_QUALITY)
    lossless: bool = False  # lossless WebP
    frames: str = "all"  # an animation's frames: all, or the first only
    nodata: float | None = None  # the stored value of missing pixels (default: the file's)
    mask: str | None = None  # a mask file: nonzero = valid

    @property
    def to_stdout(self) -> bool:
        return self.template == "-"

    @property
    def engine_settings(self) -> Settings:
        """The settings with the engine's share of ``max_memory``."""
        return self.settings.with_knobs(memory_limit=engine_memory_limit(self.max_memory))

    def fields(self, item: Item) -> dict[str, Any]:
        """The template fields an input gives (without --split's {name} and {index});
        ``{frame}`` is 0, a still image's frame (an animation's are numbered when written)."""
        return {"stem": item.stem, "relpath": item.relpath, "bank": self.banks[-1].name,
                "frame": 0}  # fmt: skip

    def single_target(self, item: Item) -> str | None:
        """The one output of an input (None with --split, whose outputs depend on its
        depth, and for standard output)."""
        if self.split or self.to_stdout:
            return None
        return self.template.format(**self.fields(item))


@dataclass(frozen=True, eq=False)
class JobResult:
    """What became of one input."""

    source: str
    status: str  # "succeeded", "failed" or "skipped"
    targets: tuple[str, ...] = ()
    message: str = ""  # what was written (or skipped), or what went wrong
    hint: str | None = None
    seconds: float = 0.0
    volume: np.ndarray | None = field(default=None, repr=False)  # with keep_volume
    labels: tuple[str, ...] = ()  # the output channels, named for pictures
    warnings: tuple[str, ...] = ()  # what was dropped from the input (a damaged profile)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def run_job(
    item: Item,
    options: JobOptions,
    *,
    threads: int | None = None,
    explain: Explain | None = None,
    reading: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> JobResult:
    """Filter one input to its outputs; raise ConvvolError (or OSError, MemoryError) if it
    cannot be done. Nothing is written unless everything is (outputs are atomic).

    ``threads`` (default: every core) run the engine's bands; results never depend on them.
    ``explain`` receives a line per layer: its method, estimate and bands. ``reading`` is
    a context for decoding the input (the CLI hides what C decoders print there).
    """
    started = time.perf_counter()
    source = item.source
    single = options.single_target(item)
    if single is not None:
        check_targets([single], source)
    if single is not None and options.skip_existing and _exists(source) and target_exists(single):
        return _skipped(item, [single], started)
    if (
        single is not None
        and options.montage is None
        and not options.keep_volume
        and streams.can_stream(
            source,
            single,
            split=False,
            format_name=options.format_name,
            tiffs=options.max_memory is not None and options.scale != "minmax",
        )
    ):
        if options.linear:
            raise linear_streamed_error(item.label)
        return _stream(item, single, options, threads, explain, started)

    with reading():
        raw = _read(item, options)
        read = _missing_pixels(item, options, raw)
    read = photo_input(read, item, options)
    stored, divisor = read.pixels, read.divisor
    missing = holds_nan(stored)  # one pass: missing pixels were marked NaN when read
    keep_hint = "; without --channels keep, images are read as RGB"
    with _named(item):
        layers = plan_stack(
            stored.shape, options.banks, _alpha_settings(options.engine_settings, read.info),
            labels=options.labels or None,
            input_hint=keep_hint if options.channels == "keep" else "",
            has_missing=missing, alpha_channel=read.info.alpha_channel,
            alpha_weight=read.info.alpha_weight,
        )  # fmt: skip
        check_reach(layers)
    if explain is not None:
        _explain(layers, explain)
    if read.frames:
        from convvol.frames import run_frames  # it builds on this module

        return run_frames(item, options, read, layers, threads=threads, started=started)
    names = layers[-1].names
    fields = options.fields(item)
    targets, formats, depth = _targets(source, options, fields, names, read.info)
    kind = sample_type(depth)
    if targets and options.skip_existing and all(map(target_exists, targets)):
        return _skipped(item, targets, started)
    sheet = (
        _montage_target(options.montage.format(**fields), source, targets)
        if options.montage is not None
        else None
    )
    # Only image files to write: the last layer goes straight to pixels, band by band,
    # never held as floats (the same pixels, less memory and time).
    # Integer TIFFs store missing (NaN) outputs as their nodata value: from the floats.
    tiff_nodata = (missing and kind.kind in "iu" and sheet is None and not options.keep_volume
                   and bool(formats) and all(f.name == "tiff" for f in formats))  # fmt: skip
    as_pixels = (sheet is None and not options.keep_volume and kind.kind in "iu"
                 and all(f.name != "npy" for f in formats) and not tiff_nodata)  # fmt: skip
    rendered = as_pixels and options.scale != "minmax"  # minmax needs every value first
    check_memory(
        layers, label=item.label, input_bytes=stored.nbytes,
        output_bytes=kind.itemsize if rendered else 4,
        writing=_writing_cost(formats, options.to_stdout, kind.itemsize, as_pixels),
    )  # fmt: skip
    height, width, depth_out = layers[-1].out_shape
    shape = (height, width, 1 if options.split else depth_out)
    files = [(target, fmt.largest_file(shape, 8 * kind.itemsize))
             for target, fmt in zip(targets, formats, strict=False)]  # fmt: skip
    if sheet is not None:
        files.append((sheet[0], SHEET_BYTES))
    _check_files(files, options.max_output, explain)
    transfer = linear_to_srgb if options.linear else None
    if as_pixels:
        outcome = render_plans(stored, layers, scale=options.scale, depth=depth,
                               divisor=divisor, threads=threads, transfer=transfer,
                               values=options.values)  # fmt: skip
    else:
        outcome = run_plans(stored, layers, divisor=divisor, threads=threads)
        outcome = outcome if transfer is None else transfer(outcome)
    # With several layers, a channel's name alone does not say which bank made it.
    many = len(options.banks) > 1
    labels = tuple(f"{options.banks[-1].name}/{name}" if many else name for name in names)
    carried = NO_INFO if options.strip else carried_info(read.info, layers)
    nodata = _missing_nodata(options, carried, raw.divisor, kind, missing)
    if tiff_nodata:  # pixels now, missing outputs the nodata value (0 without one)
        outcome, as_pixels = _with_nodata(outcome, options, depth, nodata or 0.0), True
    with OutputSet() as outputs:
        if sheet is not None:  # first, so that a failure here leaves stdout untouched
            shown_input = pixels_to_volume(stored, divisor)
            if read.info.alpha_weight is not None:  # an image read as RGB: its colours
                shown_input = np.delete(shown_input, read.info.alpha_weight, axis=2)
            if options.linear:
                shown_input = linear_to_srgb(shown_input)
            _write_sheet(outputs, sheet, item, options, shown_input, outcome, labels)
        info = output_info(carried, options, 1 if options.split else depth_out)
        _write(outputs, outcome, targets, formats, options, quantized=as_pixels, info=info,
               depth=depth, labels=labels, nodata=nodata)  # fmt: skip
    lines = []  # nothing for standard output: the data says it all
    dropped = carried.geospatial
    lost = [target for target, fmt in zip(targets or ["-"], formats, strict=False)
            if fmt.name != "tiff"]  # fmt: skip
    if dropped and lost:
        where = "standard output" if lost[0] == "-" else shown(lost)
        lines.append(f"warning: {where} ({formats[0].name.upper()}) cannot hold the input's "
                     f"{', '.join(dropped)}: dropped (write .tif to keep it; --strip: "
                     "no warning)")  # fmt: skip
    if targets:
        lines.append(f"wrote {shown(targets)}: {height}×{width}×{depth_out} from {source}")
    if sheet is not None:
        lines.append(f"wrote {sheet[0]}: contact sheet of the input and "
                     f"{counted(depth_out, 'output channel')}")  # fmt: skip
    return JobResult(
        source, "succeeded", tuple(targets), "\n".join(lines),
        seconds=time.perf_counter() - started,
        volume=outcome if options.keep_volume else None, labels=labels,
        warnings=read.info.warnings,
    )  # fmt: skip


def _targets(
    source: str,
    options: JobOptions,
    fields: dict[str, str],
    names: Sequence[str],
    info: ImageInfo = NO_INFO,
) -> tuple[list[str], list[Format], int | str]:
    """The files an input's result goes to (none for standard output), their formats and
    sample type (``--depth``, or the input's own for ``auto``), checked before any work:
    clashes, the input, directories, what the format can hold."""
    if options.to_stdout:
        stdout_format = format_named(options.format_name or "png")
        depth = resolve_depth(options.depth, info.sample_type, stdout_format)
        check_encodable(stdout_format, len(names), depth, "standard output",
                        with_alpha=info.alpha_channel == len(names) - 1)  # fmt: skip
        return [], [stdout_format], depth
    targets = (
        [options.template.format(name=name, index=index, **fields)
         for index, name in enumerate(names)]
        if options.split
        else [options.template.format(**fields)]
    )  # fmt: skip
    check_targets(targets, source)
    formats = [_format(options.format_name, target) for target in targets]
    depth = resolve_depth(options.depth, info.sample_type, formats[0])
    for target, fmt in zip(targets, formats, strict=True):
        channels = 1 if options.split else len(names)
        check_encodable(fmt, channels, depth, target,
                        with_alpha=info.alpha_channel == channels - 1)  # fmt: skip
    return targets, formats, depth


def carried_info(info: ImageInfo, layers: Sequence[LayerPlan]) -> ImageInfo:
    """The input's description as the output's: its georeferencing moved to the output's
    grid (stride, padding and dilation: see :mod:`convvol.io.georef`)."""
    if info.georeference is None:
        return info
    stride, shift_y, shift_x = grid_of(layers)
    return replace(info, georeference=info.georeference.regridded(stride, shift_y, shift_x))


def _missing_nodata(
    options: JobOptions, carried: ImageInfo, divisor: float, kind: np.dtype[Any], missing: bool
) -> float | None:
    """The nodata tag of a job's TIFF outputs: NaN for float samples when pixels were
    missing (they are written as NaN), else the input's nodata (``--nodata``, else the
    file's own) in the output's units; None without one."""
    if kind.kind == "f" and missing:
        return float("nan")
    given = options.nodata if options.nodata is not None else carried.nodata
    return output_nodata(given, divisor, kind, options.values)


def _with_nodata(
    outcome: np.ndarray, options: JobOptions, depth: int | str, nodata: float
) -> np.ndarray:
    """A float outcome as integer pixels, its missing (NaN) outputs the nodata value."""
    pixels = to_pixels(outcome, options.scale, depth, values=options.values)
    pixels[np.isnan(outcome)] = nodata
    return pixels


def output_nodata(
    nodata: float | None, divisor: float, kind: np.dtype[Any], values: str
) -> float | None:
    """The input's nodata value (in its stored units) in the output's units: the volume's
    value for float samples and ``native`` values, scaled to the integer type for
    ``unit`` values; None where the output type cannot hold it."""
    if nodata is None:
        return None
    value = nodata / divisor
    if kind.kind == "f":
        return value
    if not np.isfinite(value):
        return None
    if values == "unit":
        value *= float(np.iinfo(kind).max)
    info = np.iinfo(kind)
    return float(np.clip(np.rint(value), info.min, info.max))


def _write(
    outputs: OutputSet,
    outcome: np.ndarray,
    targets: Sequence[str],
    formats: Sequence[Format],
    options: JobOptions,
    *,
    quantized: bool,
    info: ImageInfo = NO_INFO,
    depth: int | str = 8,
    labels: Sequence[str] = (),
    nodata: float | None = None,
) -> None:
    """The result to standard output, to fsspec URLs (each object whole), or to files
    (all or nothing, with the rest of ``outputs``); ``info`` is the input's description,
    for the formats that can carry it, ``labels`` the channels' names, ``nodata`` the
    TIFF tag of missing pixels (in the output's units)."""
    encoding = _encoding(options, quantized=quantized, info=info, depth=depth, nodata=nodata)
    if options.to_stdout:
        write_volume("-", outcome, format=formats[0].name, names=labels, **encoding)
        return
    jobs = [(target, _channel(outcome, index, options.split), fmt,
             {"names": labels[index : index + 1] if options.split else tuple(labels)})
            for index, (target, fmt) in enumerate(zip(targets, formats, strict=True))]  # fmt: skip
    if is_url(targets[0]):
        for target, volume, fmt, own in jobs:
            write_url(target, volume, fmt, encoding | own)
    else:
        outputs.write_all(jobs, **encoding)


def _encoding(
    options: JobOptions,
    *,
    quantized: bool,
    info: ImageInfo,
    depth: int | str | None = None,
    nodata: float | None = None,
) -> dict[str, Any]:
    """The keywords every output of a run is encoded with (``depth``: the resolved one)."""
    return {"scale": options.scale, "depth": options.depth if depth is None else depth,
            "compress_level": options.compress_level, "quantized": quantized, "info": info,
            "values": options.values, "compress": options.compress, "nodata": nodata,
            "quality": options.quality, "lossless": options.lossless}  # fmt: skip


def process_file(item: Item, options: JobOptions, threads: int | None = None) -> JobResult:
    """:func:`run_job` for a batch: a bad file gives a failed result, never an error."""
    started = time.perf_counter()
    try:
        return run_job(item, options, threads=threads)
    except ConvvolError as error:
        return failure(item, error.message, error.hint, started)
    except MemoryError:
        return failure(item, "not enough memory for this image and bank",
                       "use --max-memory with .npy or .zarr outputs", started)  # fmt: skip
    except Exception as error:  # a batch outlives surprises; the message says what
        return failure(item, f"internal error: {type(error).__name__}: {error}", None, started)


def failure(item: Item, message: str, hint: str | None, started: float) -> JobResult:
    """A failed result whose message names the file."""
    if item.source not in message:
        message = f"{item.source}: {message}"
    return JobResult(item.source, "failed", (), message, hint, time.perf_counter() - started)


def _skipped(item: Item, targets: list[str], started: float) -> JobResult:
    message = f"skipped {item.source}: {shown(targets)} exists"
    return JobResult(item.source, "skipped", tuple(targets), message,
                     seconds=time.perf_counter() - started)  # fmt: skip


def shown(targets: Sequence[str]) -> str:
    """One target, or how many and the first."""
    return targets[0] if len(targets) == 1 else f"{len(targets)} files ({targets[0]}, ...)"


@contextmanager
def _named(item: Item, *targets: str) -> Iterator[None]:
    """Settings that do not fit this input (an empty output, a band too large for memory)
    are errors about this input: the message names it, unless it names it or one of the
    ``targets`` (whose size is the problem) already."""
    try:
        yield
    except ParameterError as error:
        if any(name in error.message for name in (item.label, *targets)):
            raise
        raise ParameterError(f"{item.label}: {error.message}", hint=error.hint) from None


SHEET_BYTES = 64 * 2**20  # at most a contact sheet's: 4096² RGB, encoded


def _check_files(
    files: Sequence[tuple[str, int]], max_output: int | None, explain: Explain | None
) -> None:
    """Every output's size against --max-output and its file system's free space; what
    cannot be known (object stores) is said under --explain."""
    check_output_sizes(files, max_output)
    check_free_space([(target, size) for target, size in files if not is_url(target)])
    remote = [target for target, _ in files if is_url(target)]
    if remote and explain is not None:
        explain(f"free space at {remote[0]} cannot be known: not checked")


def check_reach(layers: Sequence[LayerPlan]) -> None:
    """Refuse a stride that cannot be meant: beyond the image's reach, where every output
    would be the first pixel's. (A dilation beyond it is refused by the memory its bands
    would need, in plain words: see pipeline.check_memory.)"""
    for layer in layers:
        height, width, _ = layer.in_shape
        side = max(height, width)
        what = f"the {height}×{width} " + ("image" if layer is layers[0] else "volume it filters")
        bank = f" (bank {layer.bank_name!r})" if layer.bank_name else ""
        if layer.stride > side:
            raise ParameterError(
                f"stride {layer.stride}{bank} is larger than {what}: every output would be "
                "its first pixel's",
                hint=f"use a stride of at most {side}",
            )


def _explain(layers: Sequence[LayerPlan], explain: Explain) -> None:
    for number, layer in enumerate(layers, start=1):
        explain(f"layer {number} ({layer.bank_name}): {layer.describe()}")


def _channel(volume: np.ndarray, index: int, split: bool) -> np.ndarray:
    return volume[:, :, index : index + 1] if split else volume


def _format(format_name: str | None, target: str) -> Format:
    return format_named(format_name) if format_name else format_for_path(target)


def _read(item: Item, options: JobOptions) -> ReadImage:
    """The input as stored values, the divisor that makes them the volume's values, and
    what the file says about itself."""
    source = item.source
    if is_zarr(source):  # a Zarr array to images: read whole
        return ReadImage(streams.read_whole(source, max_pixels=options.max_pixels), 1.0)
    # Premultiplied alpha (the default) keeps an image's alpha to weigh its colours, also
    # when it is read as RGB; the alpha is then no channel of the result.
    rgb_alpha = options.settings.alpha in (None, "premultiplied")
    if is_url(source):
        return read_url_image(source, channels=options.channels,
                              max_pixels=options.max_pixels, values=options.values,
                              rgb_alpha=rgb_alpha)  # fmt: skip
    # A contact sheet or a preview shows one picture: an animation's first frame.
    frames = "first" if options.montage is not None or options.keep_volume else options.frames
    return read_image(source, channels=options.channels, max_pixels=options.max_pixels,
                      frames=frames, values=options.values, rgb_alpha=rgb_alpha)  # fmt: skip


def _alpha_settings(settings: Settings, info: ImageInfo) -> Settings:
    """``--alpha`` weighs colours by an image's own alpha: an image without one (RGB, or
    read as RGB) is filtered as it is; a volume (``.npy``, Zarr) has its last channel
    taken as the alpha when ``--alpha premultiplied`` says so."""
    if (
        info.alpha_channel is None
        and info.alpha_weight is None
        and info.format
        not in (
            None,
            "npy",
        )
    ):
        return replace(settings, alpha=None)
    return settings


def _missing_pixels(item: Item, options: JobOptions, read: ReadImage) -> ReadImage:
    """The input with its missing pixels NaN (``--nodata``, else the file's own nodata;
    ``--mask``), and its alpha dropped with ``--alpha ignore``, every frame of an
    animation alike; an input with no valid pixel left is refused."""
    stored, divisor, info, frames = read.pixels, read.divisor, read.info, read.frames
    if options.settings.alpha == "ignore" and info.alpha_channel is not None:
        channel = info.alpha_channel
        stored = np.delete(stored, channel, axis=2)
        frames = tuple(np.delete(frame, channel, axis=2) for frame in frames)
        info = replace(info, alpha_channel=None)
    nodata = options.nodata if options.nodata is not None else info.nodata
    if nodata is not None:
        check_nodata(nodata, info.sample_type or stored.dtype, item.label)
    mask = None
    if options.mask:
        weight = info.alpha_weight  # an image read as RGB: a mask for its colours
        height, width, depth = stored.shape
        mask = read_mask(options.mask, (height, width, depth - (weight is not None)), item.label)
        if weight is not None and mask.shape[2] > 1:
            mask = np.insert(mask, weight, True, axis=2)  # its alpha is all valid
    if (nodata is not None and not np.isnan(nodata)) or mask is not None:
        stored = mark_missing(stored, nodata=nodata, mask=mask, divisor=divisor)
        frames = tuple(
            mark_missing(frame, nodata=nodata, mask=mask, divisor=divisor) for frame in frames
        )
        divisor = 1.0
    if holds_nan(stored):
        check_some_valid(stored, item.label)
    return ReadImage(stored, divisor, info, frames)


def _exists(source: str) -> bool:
    """Whether an input is there to be skipped (else reading it says what is wrong)."""
    return source == "-" or is_url(source) or os.path.exists(source)


def target_exists(target: str) -> bool:
    """Whether an output is there already (a local path or an fsspec URL)."""
    return url_exists(target) if is_url(target) else os.path.exists(target)


def same_path(first: str, second: str) -> bool:
    """Whether two names are one file: the same resolved path, or a hard link."""
    if path_key(first) == path_key(second):
        return True
    if is_url(first) or is_url(second):
        return False
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def check_targets(targets: Sequence[str], source: str) -> None:
    """Refuse before any work: two channels to one path, the input, or a directory."""
    keys = [path_key(target) for target in targets]
    if len(set(keys)) != len(keys):
        raise ParameterError(
            "Invalid value for '-o': the output template maps two output channels to the "
            "same file; include {index}"
        )
    if source != "-" and any(same_path(source, target) for target in targets):
        raise ParameterError(
            f"Invalid value for '-o': {source} is the input: convvol never overwrites its input"
        )
    for target in targets:
        if not is_url(target) and os.path.isdir(target) and not is_zarr(target):
            raise directory_error(target)


def directory_error(target: str) -> ParameterError:
    """An output that names an existing directory: say so, and how to write into it."""
    inside = os.path.join(target, "{stem}.png")
    return ParameterError(
        f"Invalid value for '-o': {target} is a directory", hint=f"to write into it: -o '{inside}'"
    )


def _writing_cost(
    formats: Sequence[Format], to_stdout: bool, sample_bytes: int, as_pixels: bool
) -> float:
    """Memory for writing the result, as a multiple of its bytes in memory (an estimate).

    Pixels made from floats, PNG's filtered rows and the compressed bytes come beside the
    result (from pixels, only the last two); .npy is written straight from it; standard
    output holds the whole encoded file first.
    """
    if all(fmt.name == "npy" for fmt in formats):
        cost = 0.0
    elif as_pixels:
        cost = 2.0
    else:
        cost = 3 * sample_bytes / 4
    return cost + (1.0 if to_stdout else 0.0)


def picture_target(target: str, taken: dict[str, str], option: str) -> tuple[str, Format]:
    """Check a picture's file before any work: a file, its format known, no path taken.

    ``taken`` maps paths already in use (the input, the outputs) to what they are;
    ``option`` ('--montage', '--image') is named in the message.
    """

    def refused(problem: str) -> ParameterError:
        return ParameterError(f"Invalid value for '{option}': {problem}")

    if target == "-":
        raise refused("a picture goes to a file, not standard output")
    try:
        fmt = format_for_path(target)
    except ParameterError as error:
        known = ", ".join(ext for f in FORMATS.values() for ext in f.extensions)
        raise refused(f"{error.message}; use one of {known}") from None
    for path, what in taken.items():
        if path != "-" and same_path(path, target):
            raise refused(f"{target} is {what}")
    if os.path.isdir(target):
        raise refused(f"{target} is a directory")
    return target, fmt


def _montage_target(target: str, source: str, outputs: list[str]) -> tuple[str, Format]:
    """The contact sheet's path and format; never the input or one of the outputs."""
    taken = dict.fromkeys(outputs, "an output of this run")
    taken[source] = "the input: convvol never overwrites its input"
    return picture_target(target, taken, "--montage")


def _write_sheet(
    outputs: OutputSet,
    sheet: tuple[str, Format],
    item: Item,
    options: JobOptions,
    volume: np.ndarray,
    outcome: np.ndarray,
    labels: tuple[str, ...],
) -> None:
    from convvol import pictures  # on use: its Pillow modules cost start-up time

    name = item.stem if item.source == "-" else Path(item.source).name
    title = " > ".join([name, *(bank.name for bank in options.banks)]) + (
        f"  (--scale {options.scale})"
    )
    picture = pictures.contact_sheet(volume, outcome, labels, scale=options.scale, title=title,
                                     input_names=channel_names(volume.shape[2]))  # fmt: skip
    outputs.write(sheet[0], pictures.as_unit_volume(picture), fmt=sheet[1], scale="clip",
                  depth=8, compress_level=options.compress_level)  # fmt: skip


# --- volumes larger than memory -------------------------------------------------------


def _stream(
    item: Item,
    target: str,
    options: JobOptions,
    threads: int | None,
    explain: Explain | None,
    started: float,
) -> JobResult:
    """A .npy or Zarr volume (or, under --max-memory, a TIFF image) to a .npy or Zarr
    volume (or a TIFF), strip by strip in bounded memory (``target`` checked by the
    caller)."""

    def described(layers: Sequence[LayerPlan]) -> None:
        check_reach(layers)
        if explain is not None:
            _explain(layers, explain)
            if is_url(target):
                explain(f"free space at {target} cannot be known: not checked")

    with _named(item, target):
        opened = streams.open_source(item.source, max_pixels=options.max_pixels,
                                     values=options.values)  # fmt: skip
        layer = filter_volume(
            opened, options.banks, target, options.settings, budget=options.max_memory,
            threads=threads, labels=options.labels or None, format=options.format_name,
            max_pixels=options.max_pixels, max_output=options.max_output, on_plan=described,
            nodata=options.nodata, mask=options.mask,
            depth=options.depth, scale=options.scale, values=options.values,
            compress=options.compress, compress_level=options.compress_level,
            strip=options.strip,
        )  # fmt: skip
    height, width, depth_out = layer.out_shape
    message = f"wrote {target}: {height}×{width}×{depth_out} from {item.source}"
    dropped = () if options.strip else opened.info.geospatial
    if dropped and not streams.tiff_output(target, options.format_name):
        message = (f"warning: {target} cannot hold the input's {', '.join(dropped)}: dropped "
                   f"(write .tif to keep it; --strip: no warning)\n{message}")  # fmt: skip
    return JobResult(item.source, "succeeded", (target,), message,
                     seconds=time.perf_counter() - started, labels=layer.names)  # fmt: skip


def filter_volume(
    source: RowSource | str | os.PathLike[str],
    banks: Sequence[Bank],
    target: str | os.PathLike[str],
    settings: Settings | None = None,
    *,
    budget: int | None = None,
    threads: int | None = None,
    labels: Sequence[str] | None = None,
    format: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output: int | None = DEFAULT_MAX_OUTPUT,
    on_plan: Callable[[Sequence[LayerPlan]], None] | None = None,
    nodata: float | None = None,
    mask: str | os.PathLike[str] | np.ndarray | None = None,
    depth: int | str = "auto",
    scale: str = "clip",
    values: str = "unit",
    compress: str = DEFAULT_COMPRESSION,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    strip: bool = False,
    **options: Any,
) -> LayerPlan:
    """Run ``banks`` over a volume too large for memory, writing ``target`` strip by strip.

    ``source`` is a :class:`~convvol.io.streams.RowSource`, a ``.npy`` path, a Zarr
    path/URL or a TIFF (one plain image: its samples divided as ``values`` says); ``target``
    a ``.npy`` path (or any name with ``format="npy"``), a Zarr path/URL (``*.zarr``) or
    a TIFF (``*.tif``, or ``format="tiff"``), written as tiles of ``depth``'s sample type
    (``"auto"``: the input's own) with ``scale``, ``compress`` at ``compress_level`` and
    the input's georeferencing moved to the output's grid (none with ``strip``).
    ``budget`` bounds the process's resident memory in bytes (default 1 GiB); a quarter
    of it (at most 256 MiB) is the engine's working set.
    ``settings`` (or keywords, as :func:`~convvol.apply_bank` takes) beat the banks'
    defaults; ``max_pixels`` is the input limit of read_volume; ``max_output`` the most
    bytes the output may take (checked with the free space, intermediate layers' files
    included, before any work); ``on_plan`` sees the plans before any work. The result
    equals :func:`~convvol.run_layers`'s, bit for bit. Returns the last layer's plan (its
    ``out_shape`` and ``names``).

    Missing pixels (NaN, values equal to ``nodata``, zeros of ``mask``: a file or an
    array of the volume's height and width) are filtered by the settings' ``missing``
    rule (``propagate`` unless given); a float volume given none of these is read once
    ahead, strip by strip, to know whether it holds NaN.
    """
    settings = Settings.given(settings, options)
    budget = budget or DEFAULT_BUDGET
    opened = (
        source if isinstance(source, RowSource)
        else streams.open_source(source, max_pixels=max_pixels, values=values)
    )  # fmt: skip
    target = str(target)
    to_zarr = format is None and is_zarr(target)
    has_missing = settings.missing is not None or nodata is not None or mask is not None
    to_tiff = not to_zarr and streams.tiff_output(target, format)
    try:
        opened = _with_missing(opened, nodata, mask)
        if not (to_zarr or to_tiff) and (format or "npy").lower() != "npy":
            raise ParameterError(
                f"{target}: out-of-core output is .npy, Zarr or TIFF, not {format}"
            )
        engine_share = engine_memory_limit(budget)
        if not has_missing and np.dtype(opened.array.dtype).kind == "f":
            has_missing = _holds_nan(opened, max(budget // 8, opened.row_bytes))
        layers = plan_stack(opened.shape, banks, settings.with_knobs(memory_limit=engine_share),
                            labels=labels, has_missing=has_missing)  # fmt: skip
        if on_plan is not None:
            on_plan(layers)
        image = None
        if to_tiff:
            image = _tiff_target(opened, layers, banks, target, depth=depth, scale=scale,
                                 values=values, compress=compress,
                                 compress_level=compress_level, strip=strip)  # fmt: skip
        check_streamed(layers, target, max_output, image)
        check_bands(layers)
        # What strips may hold: the budget less what the process holds already and the
        # engine's share, halved for the raw rows read before conversion and for slack.
        room = budget - resident_bytes() - (engine_share or 0)
        _run_strips(opened, layers, target, to_zarr, max(room // 2, 0), threads, image)
    finally:
        opened.close()
    return layers[-1]


def _holds_nan(source: RowSource, strip_bytes: int) -> bool:
    """Whether a volume read strip by strip holds NaN (one pass, ``strip_bytes`` at once);
    a VolumeError if every value is NaN (nothing to filter)."""
    rows = max(1, strip_bytes // max(source.row_bytes, 1))
    height = source.shape[0]
    some, every = False, True
    for first in range(0, height, rows):
        strip = source.rows(np.arange(first, min(first + rows, height)))
        if holds_nan(strip):
            some = True
            every = every and bool(np.isnan(strip).all())
        else:
            every = False
        if some and not every:
            return True
    if every:
        check_some_valid(strip, source.label)
    return some


def _with_missing(
    source: RowSource,
    nodata: float | None,
    mask: str | os.PathLike[str] | np.ndarray | None,
) -> RowSource:
    """``source`` with its rows' missing pixels NaN, if ``nodata`` or ``mask`` say any."""
    if nodata is None and mask is None:
        return source
    if nodata is not None:
        check_nodata(nodata, np.dtype(source.array.dtype), source.label)
    if mask is not None and not isinstance(mask, np.ndarray):
        mask = read_mask(mask, source.shape, source.label)
    elif mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != source.shape[:2]:
            raise ParameterError(
                f"the mask is {'×'.join(map(str, mask.shape))}, but {source.label} is "
                f"{'×'.join(map(str, source.shape))}: a mask must have the volume's height "
                "and width"
            )
    return MissingRows(source, nodata=nodata, mask=mask)


@dataclass(frozen=True)
class _TiffTarget:
    """What a streamed TIFF output takes: its samples, how values become them, its tags."""

    kind: np.dtype[Any]
    scale: str
    values: str
    compress: str
    compress_level: int
    names: tuple[str, ...]
    info: ImageInfo
    nodata: float | None

    def sink(self, stream: Any, shape: tuple[int, int, int]) -> _SampleSink:
        tiles = TiffSink(stream, shape, self.kind, compress=self.compress,
                         compress_level=self.compress_level, names=self.names, info=self.info,
                         nodata=self.nodata)  # fmt: skip
        return _SampleSink(tiles, self)


class _SampleSink:
    """Strips of float responses to a TIFF's samples: raw float32, or pixels."""

    def __init__(self, tiles: TiffSink, target: _TiffTarget) -> None:
        self.tiles = tiles
        self.target = target

    def write(self, first: int, strip: np.ndarray) -> None:
        if self.target.kind.kind == "f":
            self.tiles.write(first, strip.astype(np.float32, copy=False))
            return
        samples = np.empty(strip.shape, self.target.kind)
        pixels_into(strip, samples, self.target.scale, overwrite=True, values=self.target.values)
        self.tiles.write(first, samples)


def _tiff_target(
    opened: RowSource,
    layers: Sequence[LayerPlan],
    banks: Sequence[Bank],
    target: str,
    *,
    depth: int | str,
    scale: str,
    values: str,
    compress: str,
    compress_level: int,
    strip: bool,
) -> _TiffTarget:
    """A streamed TIFF output's samples and tags, checked before any work."""
    info = opened.info
    resolved = resolve_depth(depth, info.sample_type, FORMATS["tiff"])
    kind = sample_type(resolved)
    check_compression(compress)
    if kind.kind in "iu":
        check_scale(scale, kind.name)
        if scale == "minmax":
            raise ParameterError(
                f"{target}: --scale minmax needs the whole result, which a volume filtered "
                "in strips never holds",
                hint="use --depth float (raw samples), or another --scale",
            )
    carried = NO_INFO if strip else carried_info(info, layers)
    many = len(banks) > 1
    names = tuple(f"{banks[-1].name}/{name}" if many else name for name in layers[-1].names)
    divisor = float(getattr(opened, "divisor", 1.0))
    nodata = output_nodata(carried.nodata, divisor, kind, values)
    return _TiffTarget(kind, scale, values, compress, compress_level, names, carried, nodata)


def check_streamed(
    layers: Sequence[LayerPlan],
    target: str,
    max_output: int | None,
    image: _TiffTarget | None = None,
) -> None:
    """The output and the intermediate layers' files (beside a local target, else in the
    system's temporary directory), checked against ``max_output`` and the free space before
    the first strip; a URL's free space cannot be known."""

    def npy_bytes(layer: LayerPlan) -> int:
        return NPY_HEADER_BYTES + 4 * int(np.prod(layer.out_shape, dtype=np.int64))

    import tempfile  # here: strips only (tempfile imports random, costly at start-up)

    scratch = os.path.join(tempfile.gettempdir(), "layers") if is_url(target) else target
    files = [(scratch, npy_bytes(layer)) for layer in layers[:-1]]
    final = (target, npy_bytes(layers[-1]))
    if image is not None:
        final = (
            target,
            FORMATS["tiff"].largest_file(layers[-1].out_shape, 8 * image.kind.itemsize),
        )
    check_output_sizes([final, *files], max_output)
    check_free_space(files + ([] if is_url(target) else [final]))


def _run_strips(
    opened: RowSource,
    layers: Sequence[LayerPlan],
    target: str,
    to_zarr: bool,
    strip_budget: int,
    threads: int | None,
    image: _TiffTarget | None = None,
) -> None:
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
                elif image is not None:
                    with OutputSet() as outputs, outputs.open(target) as stream:
                        sink = image.sink(stream, layer.out_shape)
                        try:
                            _run_layer(current, layer, sink, rows, threads)
                        except BaseException:
                            sink.tiles.abort()
                            raise
                        sink.tiles.close()
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


def _run_layer(
    source: RowSource,
    layer: LayerPlan,
    sink: NpySink | ZarrSink | _SampleSink,
    strip_rows: int,
    threads: int | None,
) -> None:
    height = layer.out_shape[0]
    for first in range(0, height, strip_rows):
        last = min(first + strip_rows, height)
        padded = source.rows(layer.input_rows(first, last), layer.cval)
        if layer.masking is None and holds_nan(padded):  # the volume changed under us
            raise VolumeError(
                f"{source.label}: missing values (NaN) near row {first * layer.stride} that "
                "were not there when it was first read",
                hint="filter them as missing with --missing propagate (or interpolate, fill)",
            )
        strip = layer.compute(padded, first, last, threads=threads)
        del padded
        sink.write(first, strip)


@contextmanager
def _scratch_directory(target: str) -> Iterator[str]:
    """A hidden directory for intermediate layers: beside a local target (same disk),
    else in the system's temporary directory."""
    import tempfile

    parent = None if "://" in target else str(Path(target).resolve().parent)
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convvol-layers-", dir=parent) as directory:
        yield directory
