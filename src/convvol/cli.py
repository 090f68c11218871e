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
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import click

from convvol import __version__, console
from convvol.bank import Bank, available_banks, channel_names, load_bank, search_path
from convvol.engine import ACTIVATIONS, BORDERS, METHODS, PADDINGS
from convvol.errors import BankError, ConvvolError, choice_hint
from convvol.kernels import MAX_KERNEL_SIDE
from convvol.output import SCALES
from convvol.pipeline import check_memory, plan_layers, run_layers
from convvol.volume import (
    CHANNEL_MODES,
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_MAX_PIXELS,
    FORMAT_ALIASES,
    FORMATS,
    OutputSet,
    check_encodable,
    format_for_path,
    format_named,
    read_volume,
    write_volume,
)

F = TypeVar("F", bound=Callable[..., Any])
TEMPLATE_FIELDS = ("name", "index", "stem", "bank")
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


def max_kernel_option(command: F) -> F:
    """--max-kernel, for every command that reads banks."""
    return click.option(
        "--max-kernel",
        type=click.IntRange(min=1),
        default=MAX_KERNEL_SIDE,
        show_default=True,
        envvar="CONVVOL_MAX_KERNEL",
        show_envvar=True,
        metavar="N",
        help="Refuse banks with kernels more than N pixels a side.",
    )(command)


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
@click.argument("input_path", metavar="INPUT")
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
    help="Output file, '-' for stdout, or with --split a template using {name}, "
    "{index}, {stem}, {bank}. Default: {stem}_{bank}.png "
    "({stem}_{bank}_{name}.png with --split).",
)
@click.option("--split", is_flag=True, help="Write each output channel as its own greyscale image.")
@click.option(
    "--format",
    "format_name",
    type=HintedChoice([*FORMATS, *FORMAT_ALIASES]),
    default=None,
    help="Output format; default: from OUTPUT's extension (png for -).",
)
@click.option(
    "--channels",
    type=HintedChoice(CHANNEL_MODES),
    default="rgb",
    show_default=True,
    help="rgb converts every image to 3 channels; keep keeps the file's own "
    "(L=1, LA=2, RGB=3, RGBA=4).",
)
@engine_options
@click.option(
    "--scale",
    type=HintedChoice(list(SCALES)),
    default="clip",
    show_default=True,
    help="How responses become pixels: clip, abs, minmax, signed.",
)
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
    "--max-pixels",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    envvar="CONVVOL_MAX_PIXELS",
    show_envvar=True,
    metavar="N",
    help="Refuse images of more pixels (width × height) and .npy volumes of more than "
    "4·N values, before decoding them; 0: no limit.",
)
@max_kernel_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def apply(
    input_path: str,
    bank_names: tuple[str, ...],
    output: str | None,
    split: bool,
    format_name: str | None,
    channels: str,
    scale: str,
    depth: str,
    compress_level: int,
    explain: bool,
    max_pixels: int,
    max_kernel: int,
    quiet: bool,
    **settings: Any,
) -> None:
    """Apply filter banks to an image or .npy volume (INPUT, or - for stdin).

    Each bank's N filters give N output channels; repeated -f banks run in order, each on
    the previous output, like stacked CNN layers.

    \b
    Examples:
        convvol apply photo.jpg -f edges --split -o 'out/{name}.png'
        convvol apply photo.jpg -f blur -o blurred.png
        convvol apply photo.jpg -f blur -o - --format npy | convvol apply - -f edges -o e.png
    """
    click.get_current_context().meta["convvol.input"] = input_path  # for messages
    banks = [load_bank(name, max_kernel=max_kernel) for name in bank_names]
    _check_cval(settings, banks)
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
    with console.native_messages_hidden():
        volume = read_volume(input_path, channels=channels, max_pixels=max_pixels)
    names = _output_names(volume.shape[2], banks, bank_names, channels)
    shape = (volume.shape[0], volume.shape[1], volume.shape[2])
    label = "<stdin>" if input_path == "-" else input_path
    check_memory(shape, banks, label=label, writing=_writing_cost(template, format_name,
                 to_stdout, int(depth)), **settings)  # fmt: skip
    if explain:
        for number, (bank, plan) in enumerate(zip(banks, plan_layers(shape, banks, **settings),
                                                  strict=True), start=1):  # fmt: skip
            console.status(f"layer {number} ({bank.name}): {plan.describe()}")
    options: dict[str, Any] = {
        "scale": scale, "depth": int(depth), "compress_level": compress_level,
    }  # fmt: skip
    if to_stdout:
        fmt = format_named(format_name or "png")
        check_encodable(fmt, len(names), int(depth), "standard output")
        result = run_layers(volume, banks, **settings)
        write_volume("-", result.volume, format=fmt.name, **options)
        return

    fields = {"stem": "stdin" if input_path == "-" else Path(input_path).stem,
              "bank": banks[-1].name}  # fmt: skip
    targets = (
        [template.format(name=name, index=index, **fields) for index, name in enumerate(names)]
        if split
        else [template.format(**fields)]
    )
    formats = [format_named(format_name) if format_name else format_for_path(t) for t in targets]
    _check_targets(targets, input_path, template)
    for target, fmt in zip(targets, formats, strict=True):
        check_encodable(fmt, 1 if split else len(names), int(depth), target)

    result = run_layers(volume, banks, **settings)
    with OutputSet() as outputs:
        jobs = [
            (target, result.volume[:, :, index : index + 1] if split else result.volume, fmt)
            for index, (target, fmt) in enumerate(zip(targets, formats, strict=True))
        ]
        outputs.write_all(jobs, **options)
    if not quiet:
        height, width, depth_out = result.volume.shape
        shown = targets[0] if len(targets) == 1 else f"{len(targets)} files ({targets[0]}, ...)"
        console.status(f"wrote {shown}: {height}×{width}×{depth_out} from {input_path}")


def _writing_cost(template: str, format_name: str | None, to_stdout: bool, depth: int) -> float:
    """Memory for writing the result, as a multiple of its float32 bytes (an estimate).

    An image takes its pixels, filtered rows and compressed bytes beside the result (up to
    3 bytes a value at 8 bits, 6 at 16); .npy is written straight from it; standard output
    holds the whole encoded file first.
    """
    name = format_name or ("png" if to_stdout else Path(template).suffix.lstrip("."))
    cost = 0.0 if name.lower() == "npy" else 6 / 4 if depth == 16 else 3 / 4
    return cost + (1.0 if to_stdout else 0.0)


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


def _check_template(template: str, split: bool) -> None:
    """Refuse a template that names unknown fields, converts, or maps channels to one file."""
    allowed = TEMPLATE_FIELDS if split else ("stem", "bank")
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
        template.format(name="x", index=0, stem="x", bank="x")  # format specs, e.g. {index:03d}
    except (ValueError, KeyError, IndexError) as error:
        raise click.BadParameter(f"{template!r}: {error}", param_hint="'-o'") from None
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
        if Path(target).is_dir():
            raise click.BadParameter(f"{target} is a directory", param_hint="'-o'")


def _same_file(first: str | Path, second: str | Path) -> bool:
    """True if both names are one file (a hard link too); False if either is missing."""
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


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
@max_kernel_option
def show_filter(bank_name: str, depth: int | None, max_kernel: int) -> None:
    """Print every filter of a bank, one table per channel layer.

    \b
    Example:
        convvol show-filter edges
    """
    bank = load_bank(bank_name, max_kernel=max_kernel)
    depth = depth or bank.default_channels
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


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


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
