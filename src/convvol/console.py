"""All human-facing output: the Rich consoles, messages, tables.

Status and errors go to stderr so stdout stays data. Rich is used only where a person
reads (a terminal); piped output gets plain, parsable text. Rich honours ``NO_COLOR``
(and ``FORCE_COLOR``, which gives Rich's output even when piped). User text is never
parsed as markup. Rich is imported only when something is drawn with it: its imports
would otherwise count against every run's start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import groupby
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Task
    from rich.table import Table
    from rich.text import Text

    from convvol.pictures import Picture


def stdout_console() -> Console:
    """A console on the current stdout (made per call, so tests' redirected stdout works)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False)


def stdout_is_terminal() -> bool:
    """True when a person reads stdout (so tables, not tab-separated lines)."""
    return sys.stdout.isatty()


def stderr_console() -> Console:
    """A console on the current stderr, for status and errors."""
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _plain_stderr() -> bool:
    """True when stderr is no terminal (and FORCE_COLOR does not ask for Rich anyway)."""
    return not (stderr_is_terminal() or os.environ.get("FORCE_COLOR"))


def error(message: str, hint: str | None = None) -> None:
    """One line naming the problem, and a hint line where one helps."""
    if _plain_stderr():
        sys.stderr.write(f"convvol: error: {message}\n" + (f"hint: {hint}\n" if hint else ""))
        return
    _print_error(stderr_console(), message, hint)


def _print_error(console: Console, message: str, hint: str | None) -> None:
    from rich.text import Text

    console.print(Text.assemble(("convvol: error: ", "bold red"), message))
    if hint:
        console.print(Text.assemble(("hint: ", "yellow"), hint))


@contextmanager
def native_messages_hidden() -> Iterator[None]:
    """Hide what C libraries print straight to stderr inside the block (libtiff's "TIFFRead
    Directory: ..." on a damaged file), so the user sees convvol's one line instead."""
    with suppress(OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hide
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def warning(message: str) -> None:
    """Something the run dropped or worked around, on one line; the run goes on."""
    if _plain_stderr():
        sys.stderr.write(f"convvol: warning: {message}\n")
        return
    _print_warning(stderr_console(), message)


def _print_warning(console: Console, message: str) -> None:
    from rich.text import Text

    console.print(Text.assemble(("convvol: warning: ", "yellow"), message))


def status(message: str) -> None:
    """A progress or summary line for people, on stderr."""
    if _plain_stderr():
        sys.stderr.write(message + "\n")
        return
    from rich.text import Text

    stderr_console().print(Text(message, style="dim"))


def stderr_is_terminal() -> bool:
    """True when a person watches stderr (so a progress bar is worth drawing)."""
    return sys.stderr.isatty()


def _rate_text(task: Task) -> Text:
    """Files per second, for the progress bar."""
    from rich.text import Text

    speed = task.finished_speed or task.speed
    return Text(f"{speed:.1f} files/s" if speed else "– files/s", style="progress.data.speed")


class BatchProgress:
    """Files done of total, rate and ETA on stderr while a batch runs; drawn only when
    ``enabled`` (a terminal, not --quiet). Errors print above the bar."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.counts = {"succeeded": 0, "failed": 0, "skipped": 0}
        self._progress: Any = None  # a rich.progress.Progress while drawn
        self._started = False
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            class RateColumn(ProgressColumn):
                def render(self, task: Task) -> Text:
                    return _rate_text(task)

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("files"), RateColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(),
                console=stderr_console(), transient=True,
            )  # fmt: skip
            self._task = self._progress.add_task("filtering", total=total)

    def __enter__(self) -> BatchProgress:
        return self

    def start(self) -> None:
        """Draw the bar (from here on a thread redraws it): called once the batch's
        workers exist, since a worker must not be forked from a process with threads."""
        if self._progress and not self._started:
            self._progress.start()
            self._started = True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress and self._started:
            self._progress.stop()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def warn(self, message: str) -> None:
        """A warning about one file, printed above the bar."""
        if self._progress:
            _print_warning(self._progress.console, message)
        else:
            warning(message)

    def advance(self, status: str, message: str = "", hint: str | None = None) -> None:
        """Count one finished file (``succeeded``, ``failed`` or ``skipped``); print a
        failure's message at once."""
        self.counts[status] += 1
        if status == "failed":
            if self._progress:
                _print_error(self._progress.console, message, hint)
            else:
                error(message, hint)
        if self._progress:
            failed = self.counts["failed"]
            self._progress.update(
                self._task, advance=1,
                description="filtering" + (f" ({failed} failed)" if failed else ""),
            )  # fmt: skip


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Rich table on stdout for a terminal; tab-separated lines (no header) when piped."""
    if not stdout_is_terminal():
        for row in rows:
            sys.stdout.write("\t".join(cell.replace("\t", " ") for cell in row) + "\n")
        return
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left", highlight=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))
    stdout_console().print(grid)


def format_weight(value: float) -> str:
    """A weight as short as it can be written without losing what matters."""
    return f"{value:.4g}" if value else "0"


def layer_table(title: str, layer: np.ndarray) -> Table:
    """One 2-D kernel layer as a grid of numbers, negatives in red, positives in green."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(
        title=title, title_justify="left", show_header=False, highlight=False,
        min_width=len(title) + 2,
    )  # fmt: skip
    for _ in range(layer.shape[1]):
        grid.add_column(justify="right")
    for row in layer:
        grid.add_row(
            *(
                Text(format_weight(v), style="red" if v < 0 else "green" if v > 0 else "dim")
                for v in row
            )
        )
    return grid


def show_layers(header: str, layers: Sequence[tuple[str, np.ndarray]]) -> None:
    """Print a filter's header and its named layers: tables on a terminal, plain text piped."""
    if stdout_is_terminal():
        from rich.columns import Columns
        from rich.text import Text

        console = stdout_console()
        console.print(Text(header, style="bold"))
        console.print(Columns([layer_table(name, layer) for name, layer in layers]))
        return
    lines = [header]
    for name, layer in layers:
        lines.append(f"  {name}:")
        lines.extend("    " + " ".join(format_weight(v) for v in row) for row in layer)
    sys.stdout.write("\n".join(lines) + "\n")


# --- pictures in the terminal -----------------------------------------------------------

HALF_BLOCK = "▀"  # upper half block: its foreground is the top pixel, its background the lower
SHADES = " ░▒▓█"  # brightness, darkest first, for terminals without colour (NO_COLOR)


def draw_pictures(
    target: Console,
    pictures: Sequence[Picture],
    *,
    columns: int | None = None,
    max_rows: int | None = None,
) -> None:
    """Draw pictures side by side as thumbnails on ``target``, each with its name under it.

    Each terminal row shows two rows of pixels with half blocks in true colour (Rich
    falls back to the nearest of 256 colours where the terminal has no true colour). On a
    console without colour (``NO_COLOR``, ``TERM=dumb``), each cell is a shade of the two
    pixels' mean brightness instead. ``columns`` defaults to the console's width;
    ``max_rows`` limits each thumbnail's height in rows (see :func:`pictures.thumbnails`).
    """
    from rich.text import Text

    from convvol.pictures import PREVIEW_GAP, thumbnails

    shaded = target.no_color or target.color_system is None
    for band in thumbnails(pictures, columns=columns or target.width, max_rows=max_rows):
        height = band[0].pixels.shape[0]
        gap = Text(" " * PREVIEW_GAP)
        for top in range(0, height, 2):
            rows = [_cells(picture.pixels[top : top + 2], shaded) for picture in band]
            target.print(gap.join(rows), soft_wrap=True)
        names = [
            Text(fit_text_cells(picture.label, picture.pixels.shape[1]), style="bold")
            for picture in band
        ]
        target.print(gap.join(names), soft_wrap=True)


def fit_text_cells(text: str, width: int) -> str:
    """``text`` cut with '…' to ``width`` terminal cells, padded to exactly that width."""
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.ljust(width)


def _cells(pixels: np.ndarray, shaded: bool) -> Text:
    """One terminal row of a thumbnail: its two pixel rows (or one, at an odd bottom)."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    upper = rgb[0].tolist()
    lower = rgb[1].tolist() if rgb.shape[0] > 1 else None
    if shaded:
        light = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        level = np.minimum((light.mean(axis=0) * len(SHADES) / 256).astype(int), len(SHADES) - 1)
        return Text("".join(SHADES[value] for value in level))
    pairs = zip(upper, lower or [None] * len(upper), strict=True)
    row = Text()
    for (colour, below), run in groupby(pairs):  # one style per run of equal cells
        background = Color.from_rgb(*below) if below is not None else None
        style = Style(color=Color.from_rgb(*colour), bgcolor=background)
        row.append(HALF_BLOCK * len(list(run)), style)
    return row


def preview(
    pictures: Sequence[Picture], *, stderr: bool = False, columns: int | None = None
) -> bool:
    """Draw thumbnails on stdout (or stderr) if, and only if, it is a terminal.

    They fill the terminal's width (or ``columns``), each thumbnail at most as many rows
    as the terminal has, less two (its name and the next prompt); with ``columns`` given,
    the height is not limited. Returns whether anything was drawn.
    """
    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        return False
    target = stderr_console() if stderr else stdout_console()
    max_rows = None if columns else max(1, target.size.height - 2)
    draw_pictures(target, pictures, columns=columns or target.width, max_rows=max_rows)
    return True
