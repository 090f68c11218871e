"""The ``convvol`` command: Click options in, library calls, errors out as exit codes.

Exit codes: 0 success; 2 usage or invalid input (bad options, banks, images, shapes,
inputs beyond the limits); 1 other failures (cannot write, internal errors); 130
interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP); 141 the reader of
standard output went away (``| head``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import string
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import click

from convvol import __version__, batch, console, outofcore
from convvol.bank import Bank, available_banks, channel_names, load_bank, search_path
from convvol.engine import ACTIVATIONS, BORDERS, METHODS, PADDINGS
from convvol.errors import BankError, ConvvolError, ParameterError, choice_hint
from convvol.kernels import MAX_KERNEL_SIDE
from convvol.output import SCALES
from convvol.pipeline import check_memory, plan_layers, render_layers, run_layers
from convvol.volume import (
    CHANNEL_MODES,
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_MAX_PIXELS,
    FORMAT_ALIASES,
    FORMATS,
    Format,
    OutputSet,
    check_encodable,
    format_for_path,
    format_named,
    pixels_to_volume,
    read_pixels,
    read_volume,
    write_volume,
)

F = TypeVar("F", bound=Callable[..., Any])
TEMPLATE_FIELDS = ("name", "index", "stem", "bank", "relpath")
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
            if ctx.params.get("debug") or os.environ.get("CONVVOL_DEBUG", "0") not in ("", "0"):
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
        if isinstance(value, str) and value.isdigit():
            return int(value)
        self.fail(f"{value!r} is not one of same, valid, full or an integer ≥ 0", param, ctx)


class SizeType(click.ParamType):  # type: ignore[type-arg]
    """Bytes, or a number with K, M, G or T (powers of 1024): 512M, 2G."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return outofcore.parse_size(value)
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
        click.option("--stride", type=click.IntRange(min=1), default=None,
                     help="Step between outputs. Default 1."),
        click.option("--dilation", type=click.IntRange(min=1), default=None,
                     help="Step between kernel taps. Default 1."),
        click.option("--activation", type=HintedChoice(ACTIVATIONS), default=None,
                     help="Applied after the bias. Default none."),
        click.option("--flip/--no-flip", default=None,
                     help="True convolution (layers rotated 180°) instead of cross-correlation."),
        click.option("--method", type=HintedChoice(METHODS), default=None,
                     help="Force how the engine computes (auto: chosen by a cost model)."),
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


def _limit_option(name: str, minimum: int, default: int, help_text: str) -> Callable[[F], F]:
    """A limit N ≥ ``minimum`` with a default and a CONVVOL_ environment variable."""
    return click.option(
        f"--{name}",
        type=click.IntRange(min=minimum),
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
        "max-pixels", 0, DEFAULT_MAX_PIXELS,
        "Refuse images of more pixels (width × height) and .npy volumes of more than "
        "4·N values, before decoding them; 0: no limit.",
    )(command)  # fmt: skip


def max_kernel_option(command: F) -> F:
    """--max-kernel, for every command that reads banks."""
    return _limit_option(
        "max-kernel", 1, MAX_KERNEL_SIDE, "Refuse banks with kernels more than N pixels a side."
    )(command)


def batch_options(command: F) -> F:
    """Many files and big ones: workers, resuming, the memory budget, a Dask cluster."""
    options = [
        click.option("-j", "--jobs", "workers", type=click.IntRange(min=1), default=None,
                     metavar="N",
                     help="Files filtered at once, in worker processes. Default: the number "
                     "of cores."),
        click.option("--skip-existing", is_flag=True,
                     help="Leave inputs whose outputs exist alone (resume a batch)."),
        click.option("--max-memory", type=SizeType(), default=None,
                     help="Memory budget per file (512M, 2G): .npy/.zarr to .npy/.zarr runs in "
                     "strips within it (default 1G); otherwise a quarter of it bounds the "
                     "engine's working set (default 256M)."),
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
    help="A bank file or a bank name on the search path. Repeat to stack layers.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="OUTPUT",
    help="Output file, '-' for stdout, or a template using {stem}, {relpath}, {bank} "
    "(and {name}, {index} with --split); several inputs need {stem}. "
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
@scale_option
@click.option(
    "--depth",
    type=HintedChoice(["8", "16"]),
    default="8",
    show_default=True,
    help="Bits per pixel value (16 for PNG and TIFF).",
)
@click.option(
    "--compress-level",
    type=click.IntRange(0, 9),
    default=DEFAULT_COMPRESS_LEVEL,
    show_default=True,
    help="PNG zlib level: 1 is fast (as OpenCV), 6 is Pillow's default, 9 is smallest.",
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
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def apply(
    inputs: tuple[str, ...],
    bank_names: tuple[str, ...],
    output: str | None,
    split: bool,
    format_name: str | None,
    channels: str,
    scale: str,
    depth: str,
    compress_level: int,
    explain: bool,
    montage: str | None,
    preview: bool,
    max_pixels: int,
    max_kernel: int,
    workers: int | None,
    skip_existing: bool,
    max_memory: int | None,
    scheduler: str | None,
    quiet: bool,
    **settings: Any,
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
    """
    banks = [load_bank(name, max_kernel=max_kernel) for name in bank_names]
    _check_cval(settings, banks)
    settings["memory_limit"] = outofcore.engine_memory_limit(max_memory)
    if scheduler or batch.is_batch(inputs):
        if montage is not None or preview:
            raise click.UsageError("--montage and --preview show one input; give one INPUT")
        encoding: dict[str, Any] = {
            "scale": scale, "depth": int(depth), "compress_level": compress_level,
        }  # fmt: skip
        _apply_batch(
            inputs, banks, bank_names, output, split, format_name, channels, encoding,
            settings, jobs=workers, skip_existing=skip_existing, max_memory=max_memory,
            max_pixels=max_pixels, scheduler=scheduler, explain=explain, quiet=quiet,
        )  # fmt: skip
        return
    (input_path,) = inputs
    click.get_current_context().meta["convvol.input"] = input_path  # for messages
    to_stdout = output == "-"
    if to_stdout and split:
        raise click.UsageError("--split writes several files; give a template, not -")
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError(
            "refusing to write binary image data to a terminal; redirect or pipe stdout"
        )
    template = output or ("{stem}_{bank}_{name}.png" if split else "{stem}_{bank}.png")
    if not to_stdout:
        _check_template(template, split)
    if montage is not None:
        _check_template(montage, split=False, option="'--montage'")
    fields = {"stem": "stdin" if input_path == "-" else Path(input_path).stem,
              "bank": banks[-1].name, "relpath": "."}  # fmt: skip
    target = None if to_stdout or split else template.format(**fields)
    if (
        target
        and montage is None
        and not preview
        and outofcore.can_stream(input_path, target, split=False, format_name=format_name)
    ):
        _apply_out_of_core(input_path, target, banks, bank_names, format_name, settings,
                           max_memory, max_pixels, skip_existing, explain, quiet)  # fmt: skip
        return
    with console.native_messages_hidden():
        if outofcore.is_zarr(input_path):  # a Zarr array to an image: read whole
            stored, divisor = outofcore.read_whole(input_path, max_pixels=max_pixels), 1.0
        else:
            stored, divisor = read_pixels(input_path, channels=channels, max_pixels=max_pixels)
    names = _output_names(stored.shape[2], banks, bank_names, channels)
    shape = (stored.shape[0], stored.shape[1], stored.shape[2])
    if explain:
        for number, (bank, plan) in enumerate(zip(banks, plan_layers(shape, banks, **settings),
                                                  strict=True), start=1):  # fmt: skip
            console.status(f"layer {number} ({bank.name}): {plan.describe()}")
    options: dict[str, Any] = {
        "scale": scale, "depth": int(depth), "compress_level": compress_level,
    }  # fmt: skip
    targets: list[str] = []
    if to_stdout:
        stdout_format = format_named(format_name or "png")
        check_encodable(stdout_format, len(names), int(depth), "standard output")
    else:
        targets = (
            [template.format(name=name, index=index, **fields) for index, name in enumerate(names)]
            if split
            else [template.format(**fields)]
        )
        formats = [format_named(format_name) if format_name else format_for_path(t)
                   for t in targets]  # fmt: skip
        _check_targets(targets, input_path, template)
        for each, fmt in zip(targets, formats, strict=True):
            check_encodable(fmt, 1 if split else len(names), int(depth), each)
        if skip_existing and all(os.path.exists(each) for each in targets):
            if not quiet:
                console.status(f"skipped {input_path}: {_shown(targets)} exists")
            return
    sheet = _montage_target(montage.format(**fields), input_path, targets) if montage else None

    # Only image files to write: the last layer goes straight to pixels, band by band,
    # never held as floats (the same pixels, less memory and time).
    as_pixels = (
        sheet is None
        and not preview
        and all(fmt.name != "npy" for fmt in ([stdout_format] if to_stdout else formats))
    )
    streamed = as_pixels and scale != "minmax"  # minmax needs every value first
    check_memory(
        shape, banks, label="<stdin>" if input_path == "-" else input_path,
        input_bytes=stored.nbytes, output_bytes=int(depth) // 8 if streamed else 4,
        writing=_writing_cost(formats if not to_stdout else [stdout_format], to_stdout,
                              int(depth), as_pixels),
        **settings,
    )  # fmt: skip
    if as_pixels:
        rendered = render_layers(
            stored, banks, scale=scale, depth=int(depth), divisor=divisor, **settings
        )
        outcome, options["quantized"] = rendered.pixels, True
    else:
        outcome = run_layers(stored, banks, divisor=divisor, **settings).volume
    # With several layers, a channel's name alone does not say which bank made it.
    labels = tuple(f"{banks[-1].name}/{name}" if len(banks) > 1 else name for name in names)
    with OutputSet() as outputs:
        if sheet is not None:  # first, so that a failure here leaves stdout untouched
            volume = pixels_to_volume(stored, divisor)
            source = fields["stem"] if input_path == "-" else Path(input_path).name
            title = " > ".join([source, *(bank.name for bank in banks)]) + f"  (--scale {scale})"
            from convvol import pictures  # on use: its Pillow modules cost start-up time

            picture = pictures.contact_sheet(
                volume, outcome, labels, scale=scale, title=title,
                input_names=channel_names(volume.shape[2]),
            )  # fmt: skip
            outputs.write(sheet[0], pictures.as_unit_volume(picture), fmt=sheet[1],
                          scale="clip", depth=8, compress_level=compress_level)  # fmt: skip
        if to_stdout:
            write_volume("-", outcome, format=stdout_format.name, **options)
        else:
            jobs = [
                (target, outcome[:, :, index : index + 1] if split else outcome, fmt)
                for index, (target, fmt) in enumerate(zip(targets, formats, strict=True))
            ]
            outputs.write_all(jobs, **options)
    if not quiet:
        height, width, depth_out = outcome.shape
        if targets:
            console.status(f"wrote {_shown(targets)}: {height}×{width}×{depth_out} from "
                           f"{input_path}")  # fmt: skip
        if sheet is not None:
            console.status(f"wrote {sheet[0]}: contact sheet of the input and "
                           f"{_count(depth_out, 'output channel')}")  # fmt: skip
    if preview:
        from convvol import pictures

        console.preview(pictures.volume_pictures(outcome, labels, scale=scale), stderr=True)


def _writing_cost(formats: list[Format], to_stdout: bool, depth: int, as_pixels: bool) -> float:
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
        cost = 3 * (depth // 8) / 4
    return cost + (1.0 if to_stdout else 0.0)


def _shown(targets: list[str]) -> str:
    return targets[0] if len(targets) == 1 else f"{len(targets)} files ({targets[0]}, ...)"


def _explain(shape: tuple[int, int, int], banks: list[Bank], settings: dict[str, Any]) -> None:
    plans = plan_layers(shape, banks, **settings)
    for number, (bank, plan) in enumerate(zip(banks, plans, strict=True), start=1):
        console.status(f"layer {number} ({bank.name}): {plan.describe()}")


def _apply_out_of_core(
    input_path: str,
    target: str,
    banks: list[Bank],
    bank_names: tuple[str, ...],
    format_name: str | None,
    settings: dict[str, Any],
    max_memory: int | None,
    max_pixels: int,
    skip_existing: bool,
    explain: bool,
    quiet: bool,
) -> None:
    """A .npy or Zarr volume to a .npy or Zarr volume, strip by strip in bounded memory."""
    _check_targets([target], input_path, target)
    if skip_existing and os.path.exists(target):
        if not quiet:
            console.status(f"skipped {input_path}: {target} exists")
        return
    if explain:
        source = outofcore.open_source(input_path, max_pixels=max_pixels)
        source.close()
        _explain(source.shape, banks, settings)
    engine_settings = {key: value for key, value in settings.items() if key != "memory_limit"}
    layer = outofcore.filter_volume(
        input_path, banks, target, budget=max_memory, labels=bank_names, format=format_name,
        max_pixels=max_pixels, **engine_settings,
    )  # fmt: skip
    if not quiet:
        height, width, depth_out = layer.out_shape
        console.status(f"wrote {target}: {height}×{width}×{depth_out} from {input_path}")


def _apply_batch(
    inputs: tuple[str, ...],
    banks: list[Bank],
    bank_names: tuple[str, ...],
    output: str | None,
    split: bool,
    format_name: str | None,
    channels: str,
    encoding: dict[str, Any],
    settings: dict[str, Any],
    *,
    jobs: int | None,
    skip_existing: bool,
    max_memory: int | None,
    max_pixels: int,
    scheduler: str | None,
    explain: bool,
    quiet: bool,
) -> None:
    """Many inputs: check the plan, run it (workers or a cluster), report, exit 0/1/130."""
    if output == "-":
        raise click.UsageError("several inputs write several files; give -o a template with "
                               "{stem}, not -")  # fmt: skip
    if explain:
        raise click.UsageError("--explain describes one input's plan; give one INPUT")
    template = output or ("{stem}_{bank}_{name}.png" if split else "{stem}_{bank}.png")
    _check_template(template, split)
    items = batch.expand_inputs(inputs)
    options = batch.BatchOptions(
        banks=tuple(banks), template=template, labels=bank_names, split=split,
        format_name=format_name, channels=channels,
        overrides={key: value for key, value in settings.items() if key != "memory_limit"},
        max_memory=max_memory, max_pixels=max_pixels, skip_existing=skip_existing, **encoding,
    )  # fmt: skip
    batch.check_plan(items, options)
    first = batch.single_target(items[0], options)
    if first and not (format_name is None and outofcore.is_zarr(first)):
        format_named(format_name) if format_name else format_for_path(first)
    client = None
    if scheduler:
        from convvol import distributed  # Dask is an optional extra

        client = distributed.connect(scheduler)
    progress = console.BatchProgress(len(items), enabled=not quiet and console.stderr_is_terminal())
    started = time.perf_counter()

    def report(result: batch.FileResult) -> None:
        progress.advance(result.status, result.message, result.hint)

    try:
        with progress:
            if client is not None:
                from convvol import distributed

                results = distributed.run_on_cluster(items, options, client, on_result=report)
            else:
                results = batch.run_local(items, options, jobs=jobs, on_result=report)
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


def _check_cval(settings: dict[str, Any], banks: list[Bank]) -> None:
    """--cval must be finite, and only means something with the constant border."""
    if settings.get("cval") is None:
        return
    if not math.isfinite(settings["cval"]):
        raise click.BadParameter(f"{settings['cval']} is not a finite number", param_hint="--cval")
    for bank in banks:
        border = settings.get("border") or bank.defaults.get("border", "reflect")
        if border != "constant":
            raise click.UsageError(
                f"--cval fills the padded area only with --border constant, and bank "
                f"{bank.name!r} uses --border {border}"
            )


def _output_names(
    channels: int, banks: list[Bank], bank_args: tuple[str, ...], channel_mode: str
) -> tuple[str, ...]:
    """Check, before any work, that every layer fits the depth before it; the last names."""
    names: tuple[str, ...] = tuple(channel_names(channels))
    for number, (bank, bank_arg) in enumerate(zip(banks, bank_args, strict=True), start=1):
        try:
            names = bank.resolve(len(names)).names
        except BankError as error:
            depth = _count(len(names), "channel")
            if number == 1:
                hint = f"the input has {depth}" + (
                    "; without --channels keep, images are read as RGB"
                    if channel_mode == "keep"
                    else ""
                )
            else:
                hint = f"layer {number - 1} (-f {bank_args[number - 2]}) outputs {depth}"
            prefix = f"layer {number} (-f {bank_arg}): " if len(banks) > 1 else ""
            raise BankError(prefix + error.message, hint=hint) from None
    return names


def _check_template(template: str, split: bool, option: str = "'-o'") -> None:
    """Refuse a template that names unknown fields, converts, or maps channels to one file."""
    allowed = TEMPLATE_FIELDS if split else ("stem", "bank", "relpath")
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
        template.format(name="x", index=0, stem="x", bank="x", relpath="x")  # specs: {index:03d}
    except (ValueError, KeyError, IndexError) as error:
        raise click.BadParameter(f"{template!r}: {error}", param_hint=option) from None
    if split and not fields & {"name", "index"}:
        raise click.BadParameter(
            f"{template!r} would write every channel to the same file; "
            "include {name} or {index}",
            param_hint="'-o'",
        )


def _check_targets(targets: list[str], input_path: str, template: str) -> None:
    """Refuse before any work: two channels to one path, the input, or a directory."""
    resolved = [Path(t).resolve() for t in targets]
    if len(set(resolved)) != len(resolved):
        raise click.BadParameter(
            f"{template!r} maps two output channels to the same file; include {{index}}",
            param_hint="'-o'",
        )
    if input_path != "-" and any(
        Path(input_path).resolve() == target or _same_file(input_path, target)
        for target in resolved
    ):
        raise click.BadParameter(
            f"{input_path} is the input: convvol never overwrites its input",
            param_hint="'-o'",
        )
    for target in targets:
        if Path(target).is_dir() and not outofcore.is_zarr(target):
            raise click.BadParameter(f"{target} is a directory", param_hint="'-o'")


def _same_file(first: str | Path, second: str | Path) -> bool:
    """True if both names are one file (a hard link too); False if either is missing."""
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def _picture_target(target: str, option: str, taken: dict[str, str]) -> tuple[str, Format]:
    """Check a picture's file before any work: a file, its format known, no path taken.

    ``taken`` maps paths already in use (the input, the outputs) to what they are.
    """
    if target == "-":
        raise click.BadParameter("a picture goes to a file, not standard output", param_hint=option)
    try:
        fmt = format_for_path(target)
    except ParameterError as error:
        known = ", ".join(ext for f in FORMATS.values() for ext in f.extensions)
        raise click.BadParameter(
            f"{error.message}; use one of {known}", param_hint=option
        ) from None
    resolved = Path(target).resolve()
    for path, what in taken.items():
        if path != "-" and (Path(path).resolve() == resolved or _same_file(path, target)):
            raise click.BadParameter(f"{target} is {what}", param_hint=option)
    if resolved.is_dir():
        raise click.BadParameter(f"{target} is a directory", param_hint=option)
    return target, fmt


def _montage_target(target: str, input_path: str, outputs: list[str]) -> tuple[str, Format]:
    """The contact sheet's path and format; never the input or one of the outputs."""
    taken = dict.fromkeys(outputs, "an output of this run")
    taken[input_path] = "the input: convvol never overwrites its input"
    return _picture_target(target, "'--montage'", taken)


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
            entry.update(filters=None, shape=None, description="", error=error.message)
        else:
            resolved = bank.resolve(bank.default_channels)
            entry.update(
                filters=len(bank.filters),
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
            str(entry["filters"] if entry["filters"] is not None else "-"),
            "×".join(map(str, entry["shape"])) if entry["shape"] else "-",
            entry["path"],
            entry["description"] if not entry["error"] else f"INVALID: {entry['error']}",
        ]
        for entry in entries
    ]
    console.table(
        "Filter banks (search path: " + os.pathsep.join(map(str, search_path())) + ")",
        ["bank", "filters", "shape N×C×kh×kw", "source", "description"],
        rows,
    )


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
@max_kernel_option
def show_filter(bank_name: str, depth: int | None, image: str | None, max_kernel: int) -> None:
    """Print every filter of a bank, one table per channel layer.

    \b
    Example:
        convvol show-filter edges
        convvol show-filter edges --image kernels.png
    """
    bank = load_bank(bank_name, max_kernel=max_kernel)
    depth = depth or bank.default_channels
    target = _picture_target(image, "'--image'", _bank_file(bank)) if image else None
    resolved = bank.resolve(depth)
    layer_names = channel_names(depth)
    kh, kw = bank.kernel_shape
    filters, outputs = len(bank.filters), len(resolved.names)
    click.echo(
        f"{bank.name}: {_count(filters, 'filter')}"
        + (f" → {_count(outputs, 'output channel')}" if outputs != filters else "")
        + f", {'×'.join(map(str, resolved.weights.shape))} (N×C×kh×kw)"
        + (f": {bank.description}" if bank.description else "")
    )
    for index, name in enumerate(resolved.names):
        weights = resolved.weights[index]
        bias = float(resolved.bias[index])
        description = bank.filters[resolved.sources[index]].description
        layers = [(f"{name} · {layer_names[c]}", weights[c]) for c in range(depth)
                  if weights[c].any()]  # fmt: skip
        zero = [layer_names[c] for c in range(depth) if not weights[c].any()]
        extras = [f"{kh}×{kw}"]
        if bias:
            extras.append(f"bias {bias:g}")
        if zero:
            extras.append("zero on " + ", ".join(zero))
        header = name + (f": {description}" if description else "")
        console.show_layers(f"{header} ({'; '.join(extras)})", layers)
    if target is not None:
        shape = "x".join(map(str, resolved.weights.shape))
        title = f"{bank.name} · {shape} (N x C x kh x kw)"
        from convvol import pictures

        picture = pictures.kernel_heatmaps(resolved, layer_names, title=title)
        write_volume(target[0], pictures.as_unit_volume(picture), format=target[1].name)
        height, width = picture.shape[:2]
        console.status(f"wrote {target[0]}: {width}×{height} heat maps of {bank.name}")


def _bank_file(bank: Bank) -> dict[str, str]:
    """The bank's own file, as a path a picture must not overwrite."""
    return {str(bank.source): "the bank's file"} if bank.source else {}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@cli.command("preview")
@click.argument("input_path", metavar="IMAGE_OR_NPY")
@channels_option
@click.option(
    "--split", is_flag=True, help="Each channel as its own greyscale thumbnail, with its name."
)
@scale_option
@click.option(
    "--width",
    type=click.IntRange(min=1),
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
def validate(banks: tuple[str, ...], max_kernel: int) -> None:
    """Check bank files (or names); exit 0 if all are valid, 2 otherwise.

    \b
    Example:
        convvol validate filters/*.yaml
    """
    failed = 0
    for name in banks:
        try:
            bank = load_bank(name, max_kernel=max_kernel)
            resolved = bank.resolve(bank.default_channels)
        except ConvvolError as error:
            console.error(error.message, error.hint)
            failed += 1
            continue
        shape = "×".join(map(str, resolved.weights.shape))
        click.echo(f"{bank.source}: ok ({_count(len(bank.filters), 'filter')}, {shape})")
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
