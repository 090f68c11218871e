"""All human-facing output: the Rich consoles, messages, tables.

Status and errors go to stderr so stdout stays data. Rich is used only where a person
reads (a terminal); piped stdout gets plain, parsable text. Rich honours ``NO_COLOR``.
User text is never parsed as markup.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

import numpy as np
from rich.columns import Columns
from rich.console import Console
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


def status(message: str) -> None:
    """A progress or summary line for people, on stderr."""
    stderr_console().print(Text(message, style="dim"))


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
