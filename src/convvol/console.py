"""All human-facing output: the Rich consoles, messages, tables.

Status and errors go to stderr so stdout stays data. Rich is used only where a person
reads (a terminal); piped stdout gets plain, parsable text. Rich honours ``NO_COLOR``.
User text is never parsed as markup.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType

import numpy as np
from rich.columns import Columns
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def stdout_console() -> Console:
    """A console on the current stdout (made per call, so tests' redirected stdout works)."""
    return Console(file=sys.stdout, highlight=False)


def stdout_is_terminal() -> bool:
    """True when a person reads stdout (so tables, not tab-separated lines)."""
    return sys.stdout.isatty()


def stderr_console() -> Console:
    """A console on the current stderr, for status and errors."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def error(message: str, hint: str | None = None) -> None:
    """One line naming the problem, and a hint line where one helps."""
    console = stderr_console()
    console.print(Text.assemble(("convvol: error: ", "bold red"), message))
    if hint:
        console.print(Text.assemble(("hint: ", "yellow"), hint))


def status(message: str) -> None:
    """A progress or summary line for people, on stderr."""
    stderr_console().print(Text(message, style="dim"))


def stderr_is_terminal() -> bool:
    """True when a person watches stderr (so a progress bar is worth drawing)."""
    return sys.stderr.isatty()


class _RateColumn(ProgressColumn):
    """Files per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} files/s" if speed else "– files/s", style="progress.data.speed")


class BatchProgress:
    """Files done of total, rate and ETA on stderr while a batch runs; drawn only when
    ``enabled`` (a terminal, not --quiet). Errors print above the bar."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.counts = {"succeeded": 0, "failed": 0, "skipped": 0}
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("files"), _RateColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(),
                console=stderr_console(), transient=True,
            )  # fmt: skip
            self._task = self._progress.add_task("filtering", total=total)

    def __enter__(self) -> BatchProgress:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress:
            self._progress.stop()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def advance(self, status: str, message: str = "", hint: str | None = None) -> None:
        """Count one finished file (``succeeded``, ``failed`` or ``skipped``); print a
        failure's message at once."""
        self.counts[status] += 1
        if status == "failed":
            console = self._progress.console if self._progress else stderr_console()
            console.print(Text.assemble(("convvol: error: ", "bold red"), message))
            if hint:
                console.print(Text.assemble(("hint: ", "yellow"), hint))
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
        console = stdout_console()
        console.print(Text(header, style="bold"))
        console.print(Columns([layer_table(name, layer) for name, layer in layers]))
        return
    lines = [header]
    for name, layer in layers:
        lines.append(f"  {name}:")
        lines.extend("    " + " ".join(format_weight(v) for v in row) for row in layer)
    sys.stdout.write("\n".join(lines) + "\n")
