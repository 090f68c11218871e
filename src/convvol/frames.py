"""An animation's every frame through the same planned layers: the part of a job
(:func:`convvol.jobs.run_job`) that an animated GIF, WebP or PNG input takes under
``--frames all``. Frames run in parallel on threads (the engine's NumPy and SciPy work
releases the GIL, so threads share the cores without copying frames between processes),
each with its share of the engine's threads; the result is written back as an animation,
or as one file per frame (``{frame}`` in the template).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from convvol.engine import LayerPlan
from convvol.errors import ParameterError
from convvol.io.animation import encode_animation
from convvol.io.formats import ANIMATED_FORMATS, Format, check_encodable, format_named
from convvol.io.metadata import ImageInfo, ReadImage
from convvol.io.remote import is_url, write_url, write_url_bytes
from convvol.io.writers import OutputSet, write_stdout
from convvol.jobs import (
    Item,
    JobOptions,
    JobResult,
    _channel,
    _check_files,
    _encoding,
    _format,
    _skipped,
    check_targets,
    shown,
    target_exists,
)
from convvol.photos import output_info
from convvol.pipeline import check_memory, render_plans, run_plans
from convvol.scaling import linear_to_srgb, to_pixels


@dataclass(frozen=True)
class _FrameOutput:
    """Where one output of an animation goes: one animated file (or standard output), or
    one file per frame (``{frame}`` in the template)."""

    targets: tuple[str, ...]  # one, or one per frame
    fmt: Format
    channel: int  # the channel written with --split (else 0, unused)


def run_frames(
    item: Item,
    options: JobOptions,
    read: ReadImage,
    layers: Sequence[LayerPlan],
    *,
    threads: int | None,
    started: float,
) -> JobResult:
    """Filter every frame of an animation with the same planned layers, frames in
    parallel on threads (the engine releases the GIL), and write them back: as an animated
    GIF, WebP or PNG, or one file per frame."""
    if options.depth == "auto":  # frames are read as 8-bit pixels
        options = replace(options, depth=8)
    if not isinstance(options.depth, int):
        raise ParameterError(
            f"{item.label}: --depth {options.depth} writes TIFF samples, and an animation's "
            "frames are written as images of 8 or 16 bits",
            hint="use --depth 8 or 16, or --frames first",
        )
    frames = read.frames
    count = len(frames)
    names = layers[-1].names
    height, width, depth_out = layers[-1].out_shape
    channels_out = 1 if options.split else depth_out
    outputs_wanted = _frame_outputs(item, options, names, count)
    every_target = [t for output in outputs_wanted for t in output.targets if t != "-"]
    if every_target and options.skip_existing and all(map(target_exists, every_target)):
        return _skipped(item, every_target, started)
    as_pixels = all(output.fmt.name != "npy" for output in outputs_wanted)
    per_value = options.depth // 8 if as_pixels and options.scale != "minmax" else 4
    check_memory(
        layers, label=item.label, input_bytes=sum(frame.nbytes for frame in frames),
        output_bytes=per_value * count, writing=1.0,
    )  # fmt: skip
    shape = (height, width, channels_out)
    _check_files(
        [(target, output.fmt.largest_file(shape, options.depth)
          * (count if len(output.targets) == 1 else 1))
         for output in outputs_wanted for target in output.targets if target != "-"],
        options.max_output, None,
    )  # fmt: skip
    transfer = linear_to_srgb if options.linear else None
    workers = min(count, os.cpu_count() or 1)
    share = max(1, (threads or os.cpu_count() or 1) // workers)

    def filtered(frame: np.ndarray) -> np.ndarray:
        if as_pixels:
            return render_plans(frame, layers, scale=options.scale, depth=options.depth,
                                divisor=read.divisor, threads=share, transfer=transfer)  # fmt: skip
        result = run_plans(frame, layers, divisor=read.divisor, threads=share)
        return result if transfer is None else transfer(result)

    with ThreadPoolExecutor(workers, thread_name_prefix="convvol-frame") as pool:
        results = list(pool.map(filtered, frames))
    info = output_info(read.info, options, channels_out)
    encoding = _encoding(options, quantized=as_pixels, info=info)
    with OutputSet() as outputs:
        for output in outputs_wanted:
            volumes = [_channel(result, output.channel, options.split) for result in results]
            if len(output.targets) == 1 and count > 1:
                _write_animation(outputs, output, volumes, options, info, as_pixels)
            elif is_url(output.targets[0]):
                for target, volume in zip(output.targets, volumes, strict=True):
                    write_url(target, volume, output.fmt, encoding)
            else:
                pairs = zip(output.targets, volumes, strict=True)
                outputs.write_all([(target, volume, output.fmt) for target, volume in pairs],
                                  **encoding)  # fmt: skip
    message = (
        f"wrote {shown(every_target)}: {count} frames of {height}×{width}×{depth_out} "
        f"from {item.source}"
        if every_target else ""
    )  # fmt: skip
    return JobResult(item.source, "succeeded", tuple(every_target), message,
                     seconds=time.perf_counter() - started, labels=tuple(names),
                     warnings=read.info.warnings)  # fmt: skip


def _frame_outputs(
    item: Item, options: JobOptions, names: Sequence[str], count: int
) -> list[_FrameOutput]:
    """The outputs of an animation, checked before any work: an animated format for one
    file, else ``{frame}`` in the template."""
    refused_hint = (
        "write an animated .gif, .webp or .png, give -o a template with {frame} for one "
        "file per frame (e.g. -o '{stem}_{frame:03d}.jpg'), or use --frames first"
    )
    if options.to_stdout:
        fmt = format_named(options.format_name or "png")
        if fmt.name not in ANIMATED_FORMATS:
            raise ParameterError(
                f"{item.label}: {count} frames cannot go to standard output as "
                f"{fmt.name.upper()}", hint=refused_hint,
            )  # fmt: skip
        _check_animated(fmt, len(names), options.depth, "standard output")
        return [_FrameOutput(("-",), fmt, 0)]
    fields = options.fields(item)
    channels = list(enumerate(names)) if options.split else [(0, "")]
    wanted = []
    for index, name in channels:
        extra = {"name": name, "index": index} if options.split else {}
        per_frame = [
            options.template.format(**{**fields, "frame": number}, **extra)
            for number in range(count)
        ]
        fmt = _format(options.format_name, per_frame[0])
        if len(set(per_frame)) == 1:
            if fmt.name not in ANIMATED_FORMATS:
                raise ParameterError(
                    f"{item.label}: {count} frames cannot go to one {fmt.name.upper()} file "
                    f"({per_frame[0]})", hint=refused_hint,
                )  # fmt: skip
            _check_animated(fmt, 1 if options.split else len(names), options.depth,
                            per_frame[0])  # fmt: skip
            wanted.append(_FrameOutput((per_frame[0],), fmt, index))
        else:
            for target in per_frame:
                check_encodable(fmt, 1 if options.split else len(names), options.depth, target)
            wanted.append(_FrameOutput(tuple(per_frame), fmt, index))
    check_targets([t for output in wanted for t in output.targets], item.source)
    return wanted


def _check_animated(fmt: Format, channels: int, depth: int | str, target: str) -> None:
    check_encodable(fmt, channels, depth, target)
    if depth != 8:
        raise ParameterError(
            f"{target}: animated {fmt.name.upper()} files are written with 8-bit pixels",
            hint="drop --depth 16, or give -o a template with {frame} for one file per frame",
        )


def _write_animation(
    outputs: OutputSet,
    output: _FrameOutput,
    volumes: Sequence[np.ndarray],
    options: JobOptions,
    info: ImageInfo,
    quantized: bool,
) -> None:
    """One animated file (or standard output, or an object at a URL), encoded whole."""
    pixels = volumes if quantized else [to_pixels(v, options.scale, 8) for v in volumes]
    target = output.targets[0]
    encoding = _encoding(options, quantized=True, info=info)
    # An animation is 8-bit pixels already; the rest is for TIFF outputs.
    for key in ("scale", "depth", "quantized", "values", "compress", "nodata"):
        del encoding[key]
    if target == "-" or is_url(target):
        buffer = io.BytesIO()
        encode_animation(buffer, pixels, output.fmt, **encoding)
        if target == "-":
            write_stdout(buffer.getbuffer())
        else:
            write_url_bytes(target, buffer.getvalue())
        return
    with outputs.open(target) as stream:
        encode_animation(stream, pixels, output.fmt, **encoding)
