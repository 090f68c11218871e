"""The exceptions convvol raises: one base class, one subclass per kind of problem.

The library raises these; the CLI turns them into one line on stderr and an exit code
(``exit_code``): 2 for invalid input or usage (Click's convention), 1 for other failures.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class ConvvolError(Exception):
    """Base class of every error convvol reports to the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BankError(ConvvolError):
    """A filter bank file is missing, unreadable or invalid."""

    exit_code = 2


class KernelError(BankError):
    """A built-in kernel name or its parameters are invalid."""


class VolumeError(ConvvolError):
    """An input image or volume cannot be read or has an unusable shape."""

    exit_code = 2


class ParameterError(ConvvolError):
    """A convolution or output parameter is invalid, or does not fit the data."""

    exit_code = 2


class OutputError(ConvvolError):
    """A result cannot be written (permissions, full disk, unsupported depth for a format)."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[object]) -> str | None:
    """Return a "did you mean ...?" hint for a misspelt ``word``, or None if nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


# What other libraries call our border modes, for hints.
BORDER_SYNONYMS = {
    "mirror": "reflect", "reflect_101": "reflect", "reflect101": "reflect",
    "nearest": "edge", "replicate": "edge", "clamp": "edge",
    "circular": "wrap", "periodic": "wrap", "grid-wrap": "wrap",
    "zeros": "constant", "fill": "constant", "grid-constant": "constant",
}  # fmt: skip


def choice_hint(value: object, choices: tuple[str, ...]) -> str | None:
    """A "did you mean", knowing other libraries' names for border modes."""
    if value in BORDER_SYNONYMS and BORDER_SYNONYMS[str(value)] in choices:
        ours = BORDER_SYNONYMS[str(value)]
        return f"did you mean {ours!r}? ({value!r} elsewhere is {ours!r} here)"
    return did_you_mean(str(value), choices)


def debug_requested() -> bool:
    """Whether ``CONVVOL_DEBUG`` asks for tracebacks (any value but empty or 0), as
    ``convvol --debug`` does for the command itself."""
    return os.environ.get("CONVVOL_DEBUG", "0") not in ("", "0")
