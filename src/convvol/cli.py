"""The ``convvol`` command: Click options in, library calls, errors out as exit codes.

Exit codes: 0 success; 2 usage or invalid input (bad options, banks, images, shapes,
inputs beyond the limits); 1 other failures (cannot write, internal errors); 130
interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP); 141 the reader of
standard output went away (``| head``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import string
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import click

from convvol import __version__, batch, console
from convvol.bank import (
    Bank,
    available_banks,
    bank_from_document,
    channel_names,
    counted,
    load_bank,
    search_path,
)
from convvol.errors import BankError, ConvvolError, choice_hint, debug_requested, did_you_mean
from convvol.io.formats import (
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_QUALITY,
    FORMAT_ALIASES,
    FORMATS,
    LAYOUTS,
    format_for_path,
    format_named,
    is_weight_file,
)
from convvol.io.readers import CHANNEL_MODES, FRAME_MODES, read_volume
from convvol.io.streams import is_zarr
from convvol.io.tiff import COMPRESSIONS, DEFAULT_COMPRESSION
from convvol.io.writers import OutputSet, write_volume
from convvol.jobs import (
    DEFAULT_SPLIT_TEMPLATE,
    DEFAULT_TEMPLATE,
    Item,
    JobOptions,
    JobResult,
    picture_target,
    run_job,
    same_path,
)
from convvol.kernels import BUILTIN_KERNELS, MAX_KERNEL_SIDE, kernel_side_limit
from convvol.limits import DEFAULT_MAX_PIXELS, MAX_SIZE, parse_size
from convvol.normalize import PRESETS
from convvol.normalize import parse_cli as parse_input_options
from convvol.pipeline import check_stack
from convvol.scaling import DEPTH_CHOICES, SCALES, VALUES
from convvol.settings import (
    ACTIVATIONS,
    ALPHAS,
    BORDERS,
    MAX_STEP,
    MISSING,
    PADDINGS,
    Settings,
    methods,
)

F = TypeVar("F", bound=Callable[..., Any])
TEMPLATE_FIELDS = ("name", "index", "stem", "bank", "relpath", "frame")
MAX_PREVIEW_COLUMNS = 10_000  # terminal columns: no terminal is wider
MAX_JOBS = 1024  # worker processes: more cannot be meant on any machine convvol runs on
BROKEN_PIPE_EXIT = 128 + 13  # as if killed by SIGPIPE, as cat or yes are under `| head`


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: no output, exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(error: BaseException | None) -> int:
    """Say why the run stopped; the exit code (130 for Ctrl-C, 128 + N for signal N)."""
    signum = getattr(error, "signum", signal.SIGINT)
    why = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    console.error(f"{why}; no output was written")
    return 128 + int(signum)


class ConvvolGroup(click.Group):
    """Turns every error into one line and an exit code; tracebacks only with --debug."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Click's usage errors, too, as ``convvol: error: ...`` with a hint (exit 2)."""
        click_main: Any = super().main  # typed by overloads that a pass-through cannot meet
        if not standalone_mode:
            return click_main(*args, standalone_mode=False, **kwargs)
        try:
            code = click_main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as error:
            context = getattr(error, "ctx", None)
            hint = f"see '{context.command_path} --help'" if context else None
            console.error(error.format_message(), hint)
            sys.exit(error.exit_code)
        except click.Abort as error:  # Ctrl-C outside a command, e.g. while parsing
            sys.exit(_interrupted(error.__cause__))
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ConvvolError as error:
            console.error(error.message, error.hint)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt as error:
            ctx.exit(_interrupted(error))
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as Unix filters do; what is
            # still buffered for stdout goes nowhere instead of raising again at exit.
            with suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(BROKEN_PIPE_EXIT)
        except MemoryError:
            source = ctx.meta.get("convvol.input")  # set by apply
            console.error(
                (f"{source}: " if source else "") + "not enough memory for this image and bank",
                hint="use a smaller image, a larger --stride, or fewer filters",
            )
            ctx.exit(1)
        except Exception as error:
            if ctx.params.get("debug") or debug_requested():
                raise
            console.error(
                f"internal error: {type(error).__name__}: {error}",
                hint="rerun with convvol --debug ... for the traceback, and report it",
            )
            ctx.exit(1)


class HintedChoice(click.Choice):  # type: ignore[type-arg]
    """click.Choice whose error adds a "did you mean", knowing other libraries' names."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as error:
            hint = choice_hint(value, tuple(str(c) for c in self.choices))
            if not hint:
                raise
            raise click.BadParameter(f"{error.message.rstrip('.')}; {hint}", ctx, param) from None


class PaddingType(click.ParamType):  # type: ignore[type-arg]
    """same, valid, full, or a number of pixels ≥ 0."""

    name = "same|valid|full|N"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str | int:
        if isinstance(value, int) or value in PADDINGS:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit():
            if int(value) > MAX_STEP:
                self.fail(f"{value} pixels is more than any image needs (at most {MAX_STEP})",
                          param, ctx)  # fmt: skip
            return int(value)
        self.fail(f"{value!r} is not one of same, valid, full or an integer ≥ 0", param, ctx)


class SizeType(click.ParamType):  # type: ignore[type-arg]
    """Bytes, or a number with K, M, G or T (powers of 1024): 512M, 2G; ``zero`` allows 0."""

    name = "SIZE"

    def __init__(self, *, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, zero=self.zero)
        except ConvvolError as error:
            self.fail(error.message + (f" ({error.hint})" if error.hint else ""), param, ctx)


def engine_options(command: F) -> F:
    """The convolution settings, each overriding the bank's ``defaults:``."""
    options = [
        click.option("--padding", type=PaddingType(), default=None,
                     help="same (default: output as large as the input), valid, full, "
                     "or pixels on every side."),
        click.option("--border", type=HintedChoice(BORDERS), default=None,
                     help="How the padded area is filled (numpy.pad's modes). Default reflect."),
        click.option("--cval", type=float, default=None,
                     help="Value of the padded area for --border constant. Default 0."),
        click.option("--stride", type=click.IntRange(1, MAX_STEP), default=None,
                     help="Step between outputs. Default 1."),
        click.option("--dilation", type=click.IntRange(1, MAX_STEP), default=None,
                     help="Step between kernel taps. Default 1."),
        click.option("--activation", type=HintedChoice(ACTIVATIONS), default=None,
                     help="Applied after the bias. Default none."),
        click.option("--flip/--no-flip", default=None,
                     help="True convolution (layers rotated 180°) instead of cross-correlation."),
        click.option("--method", type=HintedChoice(methods()), default=None,
                     help="Force how the engine computes (auto: chosen by a cost model)."),
        click.option("--slope", type=float, default=None,
                     help="Negative slope of --activation leaky_relu (and of prelu for filters "
                     "without their own). Default 0.01."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def missing_options(command: F) -> F:
    """Missing pixels and transparency (docs/missing.md): --nodata, --mask, --missing,
    --preserve-missing, --min-valid, --alpha."""
    options = [
        click.option("--nodata", type=float, default=None, metavar="VALUE",
                     help="Stored value of missing pixels (nan allowed for float inputs). "
                     "Default: the file's own nodata tag, if it has one."),
        click.option("--mask", "mask_path", default=None, metavar="FILE",
                     help="An image or .npy of the input's height and width: nonzero = "
                     "valid, zero = missing (one channel, or one per input channel)."),
        click.option("--missing", type=HintedChoice(MISSING), default=None,
                     help="How missing pixels (NaN, --nodata, --mask) are filtered: "
                     "interpolate (renormalised over the valid taps), propagate (an output "
                     "reading a missing pixel is missing; the default), fill (read as --cval)."),
        click.option("--preserve-missing", is_flag=True, default=None,
                     help="Keep missing input pixels missing in the output (padding same, "
                     "stride 1)."),
        click.option("--min-valid", type=click.FloatRange(0, 1), default=None,
                     metavar="FRACTION",
                     help="Outputs where less than FRACTION of the kernel's weight fell on "
                     "valid pixels are missing."),
        click.option("--alpha", type=HintedChoice(ALPHAS), default=None,
                     help="For images with alpha: premultiplied (default: colours weighted "
                     "by opacity, no bleeding from transparent pixels; with --channels rgb "
                     "the alpha is not written), straight (alpha filtered as any channel "
                     "with --channels keep, dropped with rgb), ignore (alpha dropped)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def channels_option(command: F) -> F:
    """How images are read: --channels rgb|keep (apply, preview)."""
    return click.option(
        "--channels",
        type=HintedChoice(CHANNEL_MODES),
        default="rgb",
        show_default=True,
        help="rgb converts every image to 3 channels; keep keeps the file's own "
        "(L=1, LA=2, RGB=3, RGBA=4).",
    )(command)


def scale_option(command: F) -> F:
    """How float values become pixels: --scale (apply, preview)."""
    return click.option(
        "--scale",
        type=HintedChoice(list(SCALES)),
        default="clip",
        show_default=True,
        help="How values become pixels: clip, abs, minmax, signed.",
    )(command)


def _limit_option(
    name: str, minimum: int, maximum: int, default: int, help_text: str
) -> Callable[[F], F]:
    """A limit N ≥ ``minimum`` with a default and a CONVVOL_ environment variable."""
    return click.option(
        f"--{name}",
        type=click.IntRange(minimum, maximum),
        default=default,
        show_default=True,
        envvar="CONVVOL_" + name.upper().replace("-", "_"),
        show_envvar=True,
        metavar="N",
        help=help_text,
    )


def max_pixels_option(command: F) -> F:
    """--max-pixels, for every command that reads images (apply, preview)."""
    return _limit_option(
        "max-pixels", 0, MAX_SIZE, DEFAULT_MAX_PIXELS,
        "Refuse images of more pixels (width × height) and .npy volumes of more than "
        "4·N values, before decoding them; 0: no limit.",
    )(command)  # fmt: skip


def max_kernel_option(command: F) -> F:
    """--max-kernel, for every command that reads banks."""
    return _limit_option(
        "max-kernel",
        1,
        MAX_STEP,
        MAX_KERNEL_SIDE,
        "Refuse banks with kernels more than N pixels a side.",
    )(command)


def expr_option(command: F) -> F:
    """--expr 'NAME = EXPR', repeatable: expressions after the last bank (apply, validate)."""
    return click.option(
        "--expr",
        "expressions",
        multiple=True,
        metavar="'NAME = EXPR'",
        help="A per-pixel expression over the last bank's outputs and its input, e.g. "
        "'magnitude = hypot(sobel_x, sobel_y)'; repeat for more. The expressions become "
        "the output channels.",
    )(command)


def with_expressions(banks: tuple[Bank, ...], expressions: Sequence[str]) -> tuple[Bank, ...]:
    """The banks, the last with the --expr expressions after its own."""
    if not expressions:
        return banks
    return (*banks[:-1], banks[-1].with_expressions(expressions))


def photo_options(command: F) -> F:
    """Photographs: metadata, linear light, quality, animations (apply)."""
    options = [
        click.option("--strip", is_flag=True,
                     help="Drop the input's metadata (colour profile, EXIF, XMP, resolution, "
                     "text, georeferencing) from the outputs."),
        click.option("--linear", is_flag=True,
                     help="Filter in linear light: sRGB values decoded before the first layer "
                     "and encoded again after the last."),
        click.option("--quality", type=click.IntRange(1, 100), default=DEFAULT_QUALITY,
                     show_default=True, metavar="1-100",
                     help="JPEG and WebP quality (ImageMagick's default)."),
        click.option("--lossless", is_flag=True, help="Write WebP losslessly."),
        click.option("--frames", type=HintedChoice(FRAME_MODES), default="all",
                     show_default=True,
                     help="An animated GIF, WebP or PNG: filter every frame (written back as "
                     "an animation, or one file per {frame}) or the first only."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def layout_option(command: F) -> F:
    """--layout, for every command that reads weight files."""
    return click.option(
        "--layout",
        type=HintedChoice(LAYOUTS),
        default=None,
        help="How a weight file's tensor is laid out: oihw (PyTorch, ONNX: N×C×kh×kw), hwio "
        "(Keras), ohwi, or hw (one 2-D kernel). Default: the format's.",
    )(command)


def input_options(command: F) -> F:
    """The network's input normalisation: --input-mean/--input-std or --input-norm."""
    options = [
        click.option("--input-mean", metavar="M,M,M", default=None,
                     help="Subtract these per-channel means (on [0, 1] values, the network's "
                     "channel order) before the first bank."),
        click.option("--input-std", metavar="S,S,S", default=None,
                     help="Then divide by these per-channel standard deviations."),
        click.option("--input-norm", type=HintedChoice(list(PRESETS)), default=None,
                     help="A preset: imagenet (torchvision's mean and std) or mtcnn "
                     "((255·x − 127.5)/128)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def load_banks(
    names: Sequence[str], *, max_kernel: int, layout: str | None = None
) -> tuple[Bank, ...]:
    """Each -f bank: a bank file or name, or a weight file (``--layout`` for those only)."""
    if layout is not None and not any(is_weight_file(name) for name in names):
        raise click.UsageError("--layout applies to weight files (.pt, .onnx, .npy, ...)")
    return tuple(
        load_bank(name, max_kernel=max_kernel, layout=layout if is_weight_file(name) else None)
        for name in names
    )


def with_input(
    banks: tuple[Bank, ...], mean: str | None, std: str | None, preset: str | None
) -> tuple[Bank, ...]:
    """The first bank with the command line's input normalisation, if one is given."""
    norm = parse_input_options(mean, std, preset)
    if norm is None:
        return banks
    return (dataclasses.replace(banks[0], input=norm), *banks[1:])


def batch_options(command: F) -> F:
    """Many files and big ones: workers, resuming, the memory budget, a Dask cluster."""
    options = [
        click.option("-j", "--jobs", "workers", type=click.IntRange(1, MAX_JOBS), default=None,
                     metavar="N",
                     help="Files filtered at once, in worker processes. Default: the number "
                     "of cores."),
        click.option("--skip-existing", is_flag=True,
                     help="Leave inputs whose outputs exist alone (resume a batch)."),
        click.option("--max-memory", type=SizeType(), default=None,
                     help="Memory budget per file (512M, 2G): .npy/.zarr to .npy/.zarr runs in "
                     "strips within it (default 1G); otherwise a quarter of it bounds the "
                     "engine's working set (default 256M)."),
        click.option("--max-output", type=SizeType(zero=True), default="1T", show_default=True,
                     envvar="CONVVOL_MAX_OUTPUT", show_envvar=True,
                     help="Refuse, before any work, an output file larger than this (0: no "
                     "limit). Every output is also checked against its disk's free space."),
        click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                     metavar="ADDRESS",
                     help="Run on this Dask scheduler (tcp://host:8786), one task per file; "
                     "default: $DASK_SCHEDULER_ADDRESS. Needs convvol[dask]."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.group(
    name="convvol", cls=ConvvolGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, "--version", prog_name="convvol")
@click.option("--debug", is_flag=True, help="Show full tracebacks for internal errors.")
def cli(debug: bool) -> None:
    """Convolution over volume: run banks of multi-channel filters over images.

    An RGB image is an H×W×3 volume; a filter is a kh×kw×C volume; a bank of N filters
    turns the image into an H'×W'×N volume, as a layer of a CNN does.

    \b
    Example:
        convvol apply photo.jpg --filters edges --split -o 'out/{name}.png'
    """


@cli.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option(
    "-f",
    "--filters",
    "bank_names",
    multiple=True,
    required=True,
    metavar="BANK",
    help="A bank file, a bank name on the search path, or a weight file's conv layer "
    "(FILE or FILE#TENSOR: .pt, .onnx, .safetensors, .npy, ...). Repeat to stack layers.",
)
@expr_option
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="OUTPUT",
    help="Output file, '-' for stdout, or a template using {stem}, {relpath}, {bank} "
    "(and {name}, {index} with --split; {frame} for one file per frame of an animation); "
    "several inputs need {stem}. "
    "Default: {stem}_{bank}.png ({stem}_{bank}_{name}.png with --split).",
)
@click.option("--split", is_flag=True, help="Write each output channel as its own greyscale image.")
@click.option(
    "--format",
    "format_name",
    type=HintedChoice([*FORMATS, *FORMAT_ALIASES]),
    default=None,
    help="Output format; default: from OUTPUT's extension (png for -).",
)
@channels_option
@engine_options
@missing_options
@scale_option
@click.option(
    "--depth",
    type=HintedChoice(list(DEPTH_CHOICES)),
    default="auto",
    show_default=True,
    help="Output samples: auto takes the input's own type (8-bit in, 8-bit out; 16 → 16; "
    "float → float32 TIFF; .npy/Zarr → 8); 8 or 16 bits (16 for PNG and TIFF); float: raw "
    "float32 samples, TIFF only.",
)
@click.option(
    "--values",
    type=HintedChoice(list(VALUES)),
    default="unit",
    show_default=True,
    help="Integer samples read as unit (divided by their type's maximum: [0, 1]) or "
    "native (their own numbers: a uint16 3000 is 3000.0, and integer outputs store the "
    "rounded response clipped to their type).",
)
@click.option(
    "--compress",
    type=HintedChoice(list(COMPRESSIONS)),
    default=DEFAULT_COMPRESSION,
    show_default=True,
    help="TIFF outputs' lossless codec (deflate and zstd at --compress-level).",
)
@click.option(
    "--compress-level",
    type=click.IntRange(0, 9),
    default=DEFAULT_COMPRESS_LEVEL,
    show_default=True,
    help="PNG and TIFF deflate level (and TIFF zstd's; 0: zstd's default): 1 is fast "
    "(ISA-L when installed; OpenCV's level), 6 is Pillow's default, 9 is smallest.",
)
@click.option("--explain", is_flag=True, help="Print each layer's method and estimate on stderr.")
@click.option(
    "--montage",
    metavar="SHEET",
    default=None,
    help="Also write a contact sheet: the input and every output channel, labelled, on a "
    "grid (format from SHEET's extension; {stem} and {bank} may be used).",
)
@click.option(
    "--preview",
    is_flag=True,
    help="Draw each output channel as a thumbnail on stderr, if it is a terminal.",
)
@max_pixels_option
@max_kernel_option
@batch_options
@photo_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@layout_option
@input_options
def apply(
    inputs: tuple[str, ...],
    bank_names: tuple[str, ...],
    expressions: tuple[str, ...],
    output: str | None,
    split: bool,
    format_name: str | None,
    channels: str,
    scale: str,
    depth: str,
    values: str,
    compress: str,
    compress_level: int,
    explain: bool,
    montage: str | None,
    preview: bool,
    max_pixels: int,
    max_kernel: int,
    workers: int | None,
    skip_existing: bool,
    max_memory: int | None,
    max_output: int,
    scheduler: str | None,
    strip: bool,
    linear: bool,
    quality: int,
    lossless: bool,
    frames: str,
    quiet: bool,
    nodata: float | None,
    mask_path: str | None,
    layout: str | None,
    input_mean: str | None,
    input_std: str | None,
    input_norm: str | None,
    **given: Any,
) -> None:
    """Apply filter banks to images, .npy volumes or Zarr arrays (INPUT, or - for stdin).

    Each bank's N filters give N output channels; repeated -f banks run in order, each on
    the previous output, like stacked CNN layers. Several inputs (paths, directories,
    quoted glob patterns) make a batch: files run in parallel, a bad file is reported
    and the rest go on (exit 1 at the end).

    \b
    Examples:
        convvol apply photo.jpg -f edges --split -o 'out/{name}.png'
        convvol apply photo.jpg -f blur -o blurred.png
        convvol apply photo.jpg -f blur -o - --format npy | convvol apply - -f edges -o e.png
        convvol apply photo.jpg -f edges -o edges.png --montage sheet.png --preview
        convvol apply 'photos/**/*.jpg' -f blur -o 'out/{relpath}/{stem}.png' --skip-existing
        convvol apply big.npy -f blur -o big_blur.npy --max-memory 512M
        convvol apply photo.jpg -f gradients --expr 'magnitude = hypot(sobel_x, sobel_y)'
        convvol apply dem.npy -f blur --nodata -9999 --missing interpolate -o dem_blur.npy
        convvol apply scene.tif -f blur --channels keep -o scene_blur.tif
        convvol apply face.jpg -f pnet.pt#conv1.weight --input-norm mtcnn --split -o 'o/{name}.png'
    """
    banks = load_banks(bank_names, max_kernel=max_kernel, layout=layout)
    banks = with_input(banks, input_mean, input_std, input_norm)
    banks = with_expressions(banks, expressions)
    # Before reading: what no input depth can make right (a .npy or TIFF stack keeps its
    # own depth whatever --channels says); run_job checks the rest before writing.
    check_stack(banks, labels=bank_names)
    cval = given.get("cval")
    if cval is not None and not math.isfinite(cval):
        raise click.BadParameter(f"{cval} is not a finite number", param_hint="--cval")
    settings = Settings(**given)
    _check_cval(settings, banks)
    many = bool(scheduler) or batch.is_batch(inputs)
    if output == "-" and many:
        raise click.UsageError("several inputs write several files; give -o a template with "
                               "{stem}, not -")  # fmt: skip
    if output == "-" and split:
        raise click.UsageError("--split writes several files; give a template, not -")
    if output == "-" and sys.stdout.isatty():
        raise click.UsageError(
            "refusing to write binary image data to a terminal; redirect or pipe stdout"
        )
    if many and (montage is not None or preview):
        raise click.UsageError("--montage and --preview show one input; give one INPUT")
    if many and explain:
        raise click.UsageError("--explain describes one input's plan; give one INPUT")
    template = output or (DEFAULT_SPLIT_TEMPLATE if split else DEFAULT_TEMPLATE)
    if template != "-":
        _check_template(template, split)
    if montage is not None:
        _check_template(montage, split=False, option="'--montage'")
    options = JobOptions(
        banks=banks, template=template, labels=bank_names, split=split, format_name=format_name,
        channels=channels, settings=settings, scale=scale,
        depth=int(depth) if depth.isdigit() else depth, values=values, compress=compress,
        compress_level=compress_level, max_memory=max_memory,
        max_output=max_output or None, max_pixels=max_pixels,
        skip_existing=skip_existing, montage=montage, keep_volume=preview,
        strip=strip, linear=linear, quality=quality, lossless=lossless, frames=frames,
        nodata=nodata, mask=mask_path,
    )  # fmt: skip
    if many:
        _apply_batch(inputs, options, jobs=workers, scheduler=scheduler, quiet=quiet)
        return
    (input_path,) = inputs
    click.get_current_context().meta["convvol.input"] = input_path  # for messages
    result = run_job(Item.of(input_path), options, explain=console.status if explain else None,
                     reading=console.native_messages_hidden)  # fmt: skip
    for warning in result.warnings:
        console.warning(warning)
    if result.message and not quiet:
        for line in result.message.splitlines():
            console.status(line)
    if preview and result.volume is not None:
        from convvol import pictures  # on use: its Pillow modules cost start-up time

        shown = pictures.volume_pictures(result.volume, result.labels, scale=scale)
        console.preview(shown, stderr=True)


def _apply_batch(
    inputs: tuple[str, ...],
    options: JobOptions,
    *,
    jobs: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Many inputs: check the plan, run it (workers or a cluster), report, exit 0/1/130."""
    items = batch.expand_inputs(inputs)
    batch.check_plan(items, options)
    first = options.single_target(items[0])
    if first and not (options.format_name is None and is_zarr(first)):
        format_named(options.format_name) if options.format_name else format_for_path(first)
    client = None
    if scheduler:
        from convvol import cluster  # Dask is an optional extra

        client = cluster.connect(scheduler)
    progress = console.BatchProgress(len(items), enabled=not quiet and console.stderr_is_terminal())
    started = time.perf_counter()

    def report(result: JobResult) -> None:
        for warning in result.warnings:
            progress.warn(warning)
        progress.advance(result.status, result.message, result.hint)

    try:
        with progress:
            if client is not None:
                from convvol import cluster

                progress.start()
                results = cluster.run_on_cluster(items, options, client, on_result=report)
            else:
                results = batch.run_local(items, options, jobs=jobs, on_result=report,
                                          on_start=progress.start)  # fmt: skip
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP (Stopped)
        signum = int(getattr(error, "signum", signal.SIGINT))
        why = (
            "interrupted"
            if signum == signal.SIGINT
            else f"stopped by {signal.Signals(signum).name}"
        )
        console.status(_summary(progress.counts, time.perf_counter() - started))
        console.error(
            f"{why} after {progress.done} of {len(items)} files; the finished ones are "
            "complete", hint="rerun with --skip-existing to resume",
        )  # fmt: skip
        raise click.exceptions.Exit(128 + signum) from None
    finally:
        if client is not None:
            client.close()
    failures = [result.source for result in results if result.failed]
    if not quiet or failures:
        console.status(_summary(progress.counts, time.perf_counter() - started))
    if failures:
        listed = ", ".join(failures[:10]) + (f" and {len(failures) - 10} more"
                                             if len(failures) > 10 else "")  # fmt: skip
        console.error(f"{len(failures)} of {len(items)} files failed: {listed}")
        raise click.exceptions.Exit(1)


def _summary(counts: dict[str, int], seconds: float) -> str:
    done = sum(counts.values())
    rate = f" ({done / seconds:.1f} files/s)" if seconds > 0 and done else ""
    return (
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, {counts['skipped']} "
        f"skipped in {seconds:.1f} s{rate}"
    )


def _check_cval(settings: Settings, banks: Sequence[Bank]) -> None:
    """--cval must be finite, and only means something with the constant border."""
    if settings.cval is None:
        return
    for bank in banks:
        border = settings.border or bank.defaults.get("border", "reflect")
        if border != "constant":
            raise click.UsageError(
                f"--cval fills the padded area only with --border constant, and bank "
                f"{bank.name!r} uses --border {border}"
            )


def _check_template(template: str, split: bool, option: str = "'-o'") -> None:
    """Refuse a template that names unknown fields, converts, or maps channels to one file."""
    allowed = TEMPLATE_FIELDS if split else ("stem", "bank", "relpath", "frame")
    try:
        parsed = list(string.Formatter().parse(template))
        fields = {field for _, field, _, _ in parsed if field is not None}
        unknown = sorted(fields - set(allowed))
        if unknown:
            scope = "" if split else " without --split"
            listing = ", ".join(f"{{{f}}}" for f in allowed)
            raise ValueError(f"uses {{{unknown[0]}}}; templates{scope} may use {listing}")
        if any(conversion for *_, conversion in parsed):
            raise ValueError("conversions such as !r are not allowed")
        template.format(name="x", index=0, stem="x", bank="x", relpath="x", frame=0)  # {index:03d}
    except (ValueError, KeyError, IndexError) as error:
        raise click.BadParameter(f"{template!r}: {error}", param_hint=option) from None
    if split and not fields & {"name", "index"}:
        raise click.BadParameter(
            f"{template!r} would write every channel to the same file; "
            "include {name} or {index}",
            param_hint="'-o'",
        )


@cli.command("list-filters")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for programs.")
@max_kernel_option
def list_filters(as_json: bool, max_kernel: int) -> None:
    """List every filter bank on the search path.

    The search path, first match wins: ./filters/, the directories in CONVVOL_FILTERS,
    then the banks bundled with convvol.

    \b
    Example:
        convvol list-filters
        convvol list-filters --json | python -m json.tool
    """
    entries = []
    for name, path in available_banks().items():
        entry: dict[str, Any] = {"name": name, "path": str(path)}
        try:
            bank = load_bank(path, max_kernel=max_kernel)
        except ConvvolError as error:
            entry.update(filters=None, outputs=None, expressions=None, shape=None,
                         description="", error=error.message)  # fmt: skip
        else:
            resolved = bank.resolve(bank.default_channels)
            entry.update(
                filters=len(bank.filters),
                outputs=len(resolved.outputs),
                expressions=len(bank.expressions),
                shape=list(resolved.weights.shape),
                description=bank.description,
                error=None,
            )
        entries.append(entry)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [
        [
            entry["name"],
            _filters_cell(entry["filters"], entry["outputs"]),
            "×".join(map(str, entry["shape"])) if entry["shape"] else "-",
            entry["path"],
            entry["description"] if not entry["error"] else f"INVALID: {entry['error']}",
        ]
        for entry in entries
    ]
    console.table(
        "Filter banks (search path: " + os.pathsep.join(map(str, search_path())) + ")",
        ["bank", "filters → outputs", "shape N×C×kh×kw", "source", "description"],
        rows,
    )


@cli.command("list-tensors")
@click.argument("weight_file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for programs.")
def list_tensors(weight_file: str, as_json: bool) -> None:
    """List the tensors of a weight file: name, shape, dtype, and which look like conv
    weights (what FILE#TENSOR may name).

    \b
    Example:
        convvol list-tensors model.pt
        convvol list-tensors model.onnx --json
    """
    from convvol.io.weights import list_tensors as tensors_of

    fmt, layout, rows = tensors_of(Path(weight_file))
    if as_json:
        entries = [
            {"name": info.name, "shape": list(info.shape), "dtype": info.dtype,
             "looks_like_conv": conv}
            for info, conv in rows
        ]  # fmt: skip
        click.echo(json.dumps(entries, indent=2))
        return
    console.table(
        f"{weight_file} ({fmt}; conv weights read as {layout})",
        ["tensor", "shape", "dtype", "conv weights"],
        [[info.name, "×".join(map(str, info.shape)) or "scalar", info.dtype, "yes" if conv else ""]
         for info, conv in rows],
    )  # fmt: skip


@cli.command("import-bank")
@click.argument("spec", metavar="FILE#TENSOR")
@click.option(
    "-o", "--output", default="-", show_default=True, metavar="BANK",
    help="The bank file to write (.yaml); - for standard output.",
)  # fmt: skip
@layout_option
@input_options
@max_kernel_option
def import_bank(
    spec: str,
    output: str,
    layout: str | None,
    input_mean: str | None,
    input_std: str | None,
    input_norm: str | None,
    max_kernel: int,
) -> None:
    """Write a weight file's conv layer as an ordinary, editable bank file, with its
    provenance (file, tensor, layout, SHA-256) in it.

    \b
    Example:
        convvol import-bank model.pt#conv1.weight -o conv1.yaml
        convvol import-bank pnet.pt#conv1 --input-norm mtcnn -o pnet.yaml
    """
    from convvol.io.formats import split_spec
    from convvol.io.weights import bank_yaml, file_sha256

    if not is_weight_file(spec):
        raise click.BadParameter(
            f"{spec} is not a weight file (.pt, .pth, .onnx, .safetensors, .npz, .npy, .h5, "
            ".keras)", param_hint="'FILE#TENSOR'",
        )  # fmt: skip
    (bank,) = with_input(load_banks([spec], max_kernel=max_kernel, layout=layout),
                         input_mean, input_std, input_norm)  # fmt: skip
    source = split_spec(spec)[0]
    provenance = {**bank.provenance, "sha256": file_sha256(source)}
    text = bank_yaml(bank, provenance)
    if output == "-":
        click.echo(text, nl=False)
        return
    if Path(output).suffix.lower() not in (".yaml", ".yml"):
        raise click.BadParameter(f"{output}: a bank file is written as .yaml", param_hint="'-o'")
    if same_path(str(source), output):
        raise click.BadParameter(f"{output} is the weight file itself", param_hint="'-o'")
    if os.path.isdir(output):
        raise click.BadParameter(f"{output} is a directory", param_hint="'-o'")
    with OutputSet() as outputs, outputs.open(output) as stream:
        stream.write(text.encode("utf-8"))
    console.status(f"wrote {output}: {counted(len(bank.filters), 'filter')} from {spec}")


def _filters_cell(filters: int | None, outputs: int | None) -> str:
    """'3' for a bank of three filters; '1 → 3' for one depthwise filter on RGB."""
    if filters is None or outputs is None:
        return "-"
    return str(filters) if outputs == filters else f"{filters} → {outputs}"


@cli.command("show-filter")
@click.argument("bank_name", metavar="BANK")
@click.option(
    "--channels",
    "depth",
    type=click.IntRange(min=1, max=4096),
    default=None,
    help="Show the filters completed for a volume of this many channels "
    "(default: the depth the bank is written for, 3 for RGB).",
)
@click.option(
    "--image",
    metavar="FILE",
    default=None,
    help="Also draw every filter as a row of heat maps, one per channel layer, into FILE "
    "(format from its extension).",
)
@click.option(
    "--rgb",
    is_flag=True,
    help="Draw --image as one colour patch per 3-channel filter (its layers as red, green, "
    "blue), all scaled together around mid-grey, as papers show first layers.",
)
@max_kernel_option
@layout_option
def show_filter(
    bank_name: str,
    depth: int | None,
    image: str | None,
    rgb: bool,
    max_kernel: int,
    layout: str | None,
) -> None:
    """Print every filter of a bank (or of a weight file's conv layer), one table per
    channel layer. BANK may also name a built-in kernel or kernel generator (kirsch, disk,
    ...): it is shown with its default parameters, as a one-filter bank on one channel.

    \b
    Example:
        convvol show-filter edges
        convvol show-filter edges --image kernels.png
        convvol show-filter kirsch
        convvol show-filter pnet --image pnet.png --rgb
    """
    if rgb and image is None:
        raise click.UsageError("--rgb draws the --image picture; give --image FILE")
    bank, kernel = _bank_or_kernel(bank_name, max_kernel, layout)
    depth = depth or (1 if kernel else bank.default_channels)
    target = picture_target(image, _bank_file(bank), "--image") if image else None
    resolved = bank.resolve(depth)
    layer_names = channel_names(depth)
    if target is not None:  # first: a reader that stops early (| head) must not lose it
        shape = "x".join(map(str, resolved.weights.shape))
        title = f"{bank.name} · {shape} (N x C x kh x kw)"
        from convvol import pictures

        if rgb:
            picture = pictures.filter_patches(resolved, title=title)
        else:
            picture = pictures.kernel_heatmaps(resolved, layer_names, title=title)
        write_volume(target[0], pictures.as_unit_volume(picture), format=target[1].name)
        height, width = picture.shape[:2]
        what = "colour patches" if rgb else "heat maps"
        console.status(f"wrote {target[0]}: {width}×{height} {what} of {bank.name}")
    kh, kw = bank.kernel_shape
    filters, outputs = len(bank.filters), len(resolved.outputs)
    click.echo(
        f"{bank.name}: {counted(filters, 'filter')}"
        + (f" → {counted(outputs, 'output channel')}" if outputs != filters else "")
        + f", {'×'.join(map(str, resolved.weights.shape))} (N×C×kh×kw)"
        + (f": {bank.description}" if bank.description else "")
    )
    for index, name in enumerate(resolved.names):
        weights = resolved.weights[index]
        bias = float(resolved.bias[index])
        description = bank.filters[resolved.sources[index]].description
        recipe = bank.filters[resolved.sources[index]].recipe
        layers = [(f"{name} · {layer_names[c]}", weights[c]) for c in range(depth)
                  if weights[c].any()]  # fmt: skip
        zero = [layer_names[c] for c in range(depth) if not weights[c].any()]
        extras = [f"{kh}×{kw}" + (f" = {recipe}" if recipe else "")]
        if bias:
            extras.append(f"bias {bias:g}")
        if zero:
            extras.append("zero on " + ", ".join(zero))
        header = name + (f": {description}" if description else "")
        console.show_layers(f"{header} ({'; '.join(extras)})", layers)
    if resolved.combine is not None:
        click.echo(f"expressions → {', '.join(resolved.outputs)}:")
        for expression in bank.expressions:
            shown = "" if expression.output else "  (not an output)"
            click.echo(f"  {expression.name} = {expression.text}{shown}")


def _bank_or_kernel(name: str, max_kernel: int, layout: str | None) -> tuple[Bank, bool]:
    """The bank ``name`` (or weight file), else the built-in kernel of that name as a
    one-filter bank (its default parameters); and whether it is a kernel. A bank of the
    name wins."""
    try:
        return load_banks([name], max_kernel=max_kernel, layout=layout)[0], False
    except BankError as error:
        spec = BUILTIN_KERNELS.get(name)
        if spec is None:
            close = did_you_mean(name, [*available_banks(), *BUILTIN_KERNELS])
            if close is None or (error.hint or "").startswith("did you mean"):
                raise
            raise BankError(error.message + ", and no built-in kernel", hint=close) from None
    defaults = ", ".join(f"{key}={value}" for key, value in spec.params.items()
                         if value is not None)  # fmt: skip
    description = f"the built-in kernel {name!r}: {spec.description}" + (
        f" (defaults: {defaults})" if defaults else ""
    )
    document = {"description": description, "filters": [{"name": name, "kernel": name}]}
    with kernel_side_limit(max_kernel):
        return bank_from_document(document, name=name), True


def _bank_file(bank: Bank) -> dict[str, str]:
    """The bank's own file, as a path a picture must not overwrite."""
    return {str(bank.source): "the bank's file"} if bank.source else {}


@cli.command("preview")
@click.argument("input_path", metavar="IMAGE_OR_NPY")
@channels_option
@click.option(
    "--split", is_flag=True, help="Each channel as its own greyscale thumbnail, with its name."
)
@scale_option
@click.option(
    "--width",
    type=click.IntRange(1, MAX_PREVIEW_COLUMNS),
    default=None,
    help="Columns to draw in (default: the terminal's width, and at most its height).",
)
@max_pixels_option
def preview_command(
    input_path: str, channels: str, split: bool, scale: str, width: int | None, max_pixels: int
) -> None:
    """Draw an image or .npy volume (or - for stdin) in the terminal, in colour.

    A 1- or 3-channel volume is one thumbnail (grey or colour; alpha is left out); other
    depths, or --split, give one greyscale thumbnail per channel, side by side, each with
    its name. Nothing is drawn when stdout is not a terminal.

    \b
    Example:
        convvol preview photo.jpg
        convvol apply photo.jpg -f gradients -o - --format npy | convvol preview - --scale signed
    """
    with console.native_messages_hidden():
        volume = read_volume(input_path, channels=channels, max_pixels=max_pixels)
    height, width_px, depth = volume.shape
    source = "stdin" if input_path == "-" else Path(input_path).name
    whole = None if split else f"{source} {width_px}×{height}×{depth}"
    from convvol import pictures

    shown = pictures.volume_pictures(volume, channel_names(depth), scale=scale, whole=whole)
    console.preview(shown, columns=width)


@cli.command()
@click.argument("banks", nargs=-1, required=True, metavar="BANK...")
@max_kernel_option
@layout_option
@expr_option
def validate(
    banks: tuple[str, ...], max_kernel: int, layout: str | None, expressions: tuple[str, ...]
) -> None:
    """Check bank files (or names, or weight files), their expressions too; exit 0 if all
    are valid, 2 otherwise. --expr expressions are checked after the last BANK, as apply
    runs them.

    \b
    Example:
        convvol validate filters/*.yaml
        convvol validate gradients --expr 'magnitude = hypot(sobel_x, sobel_y)'
    """
    failed = 0
    for number, name in enumerate(banks, start=1):
        try:
            (bank,) = load_banks([name], max_kernel=max_kernel, layout=layout)
            if number == len(banks):
                (bank,) = with_expressions((bank,), expressions)
            resolved = bank.resolve(bank.default_channels)
        except ConvvolError as error:
            console.error(error.message, error.hint)
            failed += 1
            continue
        shape = "×".join(map(str, resolved.weights.shape))
        combined = (
            f", {counted(len(bank.expressions), 'expression')} → "
            f"{counted(len(resolved.outputs), 'output channel')}"
            if bank.expressions
            else ""
        )
        click.echo(f"{bank.source}: ok ({counted(len(bank.filters), 'filter')}, {shape}{combined})")
    if failed:
        raise click.exceptions.Exit(2)


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP (kill, timeout, a closed terminal) clean up as Ctrl-C does.

    A signal the parent told us to ignore (nohup) stays ignored.
    """

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, stop)


def main() -> None:
    """Console-script entry point."""
    _stop_on_signals()
    cli(prog_name="convvol")
