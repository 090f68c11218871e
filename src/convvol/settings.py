"""The convolution settings: one vocabulary, validated in one place, merged in one function.

Two frozen types:

- :class:`Settings` is what a caller asks for (the CLI's options, a Python caller's
  keywords): every field ``None`` unless given, plus the engine's knobs (``threads``,
  ``memory_limit``), which never change a result.
- :class:`LayerSettings` is every setting decided for one layer: the caller's value, else
  the bank's ``defaults:``, else the engine's default (:meth:`Settings.for_bank`).

Both validate on construction, so a value that reaches the engine is always a good one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from convvol.errors import ParameterError, choice_hint, did_you_mean

PADDINGS = ("same", "valid", "full")
BORDERS = ("reflect", "symmetric", "edge", "wrap", "constant")
ACTIVATIONS = ("none", "relu", "abs", "leaky_relu", "prelu", "sigmoid", "tanh")
# leaky_relu's negative slope, and prelu's for filters without their own (PyTorch's default).
DEFAULT_SLOPE = 0.01
# How missing pixels (NaN) are filtered, and how an alpha channel weighs the colours.
MISSING = ("interpolate", "propagate", "fill")
ALPHAS = ("premultiplied", "straight", "ignore")

Padding = str | int

# The keys a bank's ``defaults:`` may give (the engine's knobs and method are the caller's).
BANK_SETTINGS = ("padding", "border", "cval", "stride", "dilation", "activation", "slope")
# Integers beyond this are never meant: no image is 2³¹ pixels along one axis.
MAX_STEP = 2**31 - 1


def methods() -> tuple[str, ...]:
    """'auto' and the engine's methods, read off its registry (the one list of them)."""
    from convvol.engine.methods import REGISTRY  # imported late: the engine imports this

    return ("auto", *REGISTRY)


def __getattr__(name: str) -> object:
    """``METHODS``: the same as :func:`methods`, for ``from convvol.settings import METHODS``."""
    if name == "METHODS":
        return methods()
    raise AttributeError(f"module 'convvol.settings' has no attribute {name!r}")


def check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``; else a ParameterError with a hint."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(
            f"{what} must be one of {', '.join(choices)}; got {value!r}",
            hint=choice_hint(value, choices),
        )
    return value


def check_positive_int(value: object, what: str) -> int:
    """``value`` as an int if it is an integer in 1..2³¹−1; else a ParameterError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{what} must be an integer ≥ 1; got {value!r}")
    return _at_most_max_step(int(value), what)


def _at_most_max_step(value: int, what: str) -> int:
    if value > MAX_STEP:
        raise ParameterError(
            f"{what} must be at most {MAX_STEP}; got {value}",
            hint="no image is that large; check the number",
        )
    return value


def check_padding(padding: object) -> Padding:
    """``padding`` if it is 'same', 'valid', 'full' or an integer ≥ 0, else raise."""
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool):
        if padding < 0:
            raise ParameterError(f"padding must be ≥ 0; got {padding}")
        return _at_most_max_step(int(padding), "padding")
    return check_choice(padding, PADDINGS, "padding")


def check_cval(cval: object) -> float:
    """``cval`` as a finite float, else raise."""
    try:
        number = float(cval)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"cval must be a number; got {cval!r}") from None
    if not math.isfinite(number):
        raise ParameterError(f"cval must be a finite number; got {number}")
    return number


def check_activation(activation: object) -> str:
    """``activation`` if it is one of :data:`ACTIVATIONS`, else raise."""
    return check_choice(activation, ACTIVATIONS, "activation")


def check_slope(slope: object) -> float:
    """``slope`` as a finite float, else raise."""
    if isinstance(slope, bool) or not isinstance(slope, int | float | np.floating):
        raise ParameterError(f"slope must be a number; got {slope!r}")
    if not math.isfinite(float(slope)):
        raise ParameterError(f"slope must be a finite number; got {slope!r}")
    return float(slope)


@dataclass(frozen=True)
class LayerSettings:
    """Every setting of one layer, decided and validated (the engine's defaults here)."""

    padding: Padding = "same"
    border: str = "reflect"
    cval: float = 0.0
    stride: int = 1
    dilation: int = 1
    activation: str = "none"
    flip: bool = False
    method: str = "auto"
    slope: float = DEFAULT_SLOPE  # leaky_relu's negative slope (prelu's default)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "padding", check_padding(self.padding))
        set_(self, "border", check_choice(self.border, BORDERS, "border"))
        set_(self, "cval", check_cval(self.cval))
        set_(self, "stride", check_positive_int(self.stride, "stride"))
        set_(self, "dilation", check_positive_int(self.dilation, "dilation"))
        set_(self, "activation", check_activation(self.activation))
        set_(self, "flip", bool(self.flip))
        set_(self, "method", check_choice(self.method, methods(), "method"))
        set_(self, "slope", check_slope(self.slope))


SETTINGS = tuple(f.name for f in fields(LayerSettings))
# Passed through to the engine, never taken from a bank: how many threads run its bands,
# and the bytes of its working set (its results do not depend on either).
ENGINE_KNOBS = ("threads", "memory_limit")
# What the caller says about missing pixels and alpha (never a bank's: they describe the
# input, not the filters); :meth:`Settings.missing_rule` turns them into a MissingRule.
MISSING_SETTINGS = ("missing", "preserve_missing", "min_valid", "alpha")


@dataclass(frozen=True)
class MissingRule:
    """How one layer treats missing input pixels (NaN) and transparency.

    ``treatment`` is ``interpolate`` (normalised convolution per filter layer),
    ``propagate`` (an output that reads a missing pixel is missing) or ``fill`` (missing
    pixels read as the layer's ``cval``); ``min_valid`` marks outputs missing where less
    than that share of the kernel's weight (Σ|w|) fell on valid pixels; ``preserve``
    keeps missing input pixels missing in the output; ``alpha_channel`` (premultiplied
    alpha) is the channel whose opacity weighs the other channels' values. With
    ``alpha_kept`` (an image read with its alpha) the alpha is filtered as it is and an
    output with no opacity under the kernel is colour 0 (transparent anyway); without it
    (an image read as RGB, whose alpha only weighs the colours and is no channel of the
    result) such an output is missing.
    """

    treatment: str = "propagate"
    min_valid: float = 0.0
    preserve: bool = False
    alpha_channel: int | None = None
    alpha_kept: bool = True

    def __post_init__(self) -> None:
        check_choice(self.treatment, MISSING, "missing")
        object.__setattr__(self, "min_valid", check_min_valid(self.min_valid))

    def describe(self) -> str:
        """A few words for --explain."""
        if self.alpha_channel is not None:
            words = f"colours weighted by alpha (channel {self.alpha_channel}), premultiplied"
            words += "" if self.alpha_kept else ", alpha not written"
        else:
            words = f"missing pixels: {self.treatment}"
        if self.min_valid:
            words += f", at least {self.min_valid:g} of the weight valid"
        return words + (", missing kept missing" if self.preserve else "")


def check_min_valid(value: object) -> float:
    """``value`` as a float in [0, 1], else raise."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"min_valid must be a number; got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ParameterError(
            f"min_valid must be a fraction between 0 and 1; got {value!r}",
            hint="0.5 marks outputs missing where less than half the kernel's weight is valid",
        )
    return number


@dataclass(frozen=True)
class Settings:
    """What the caller asks for: ``None`` means "not given" (the bank's default, then the
    engine's, applies); ``threads`` and ``memory_limit`` are the engine's knobs."""

    padding: Padding | None = None
    border: str | None = None
    cval: float | None = None
    stride: int | None = None
    dilation: int | None = None
    activation: str | None = None
    flip: bool | None = None
    method: str | None = None
    slope: float | None = None
    threads: int | None = None
    memory_limit: int | None = None
    missing: str | None = None
    preserve_missing: bool | None = None
    min_valid: float | None = None
    alpha: str | None = None

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in SETTINGS if getattr(self, name) is not None}
        LayerSettings(**given)  # validates each value given
        if self.missing is not None:
            check_choice(self.missing, MISSING, "missing")
        if self.alpha is not None:
            check_choice(self.alpha, ALPHAS, "alpha")
        if self.min_valid is not None:
            object.__setattr__(self, "min_valid", check_min_valid(self.min_valid))
        if self.threads is not None:
            check_positive_int(self.threads, "threads")
        if self.memory_limit is not None and (
            isinstance(self.memory_limit, bool)
            or not isinstance(self.memory_limit, int | np.integer)
            or self.memory_limit < 1
        ):
            raise ParameterError(f"memory_limit must be bytes ≥ 1; got {self.memory_limit!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Settings from keywords (``apply_bank(volume, bank, stride=2)``); an unknown
        name is a ParameterError with a "did you mean"."""
        for key in options:
            if key not in SETTINGS + ENGINE_KNOBS + MISSING_SETTINGS:
                raise ParameterError(
                    f"unknown setting {key!r}; settings are "
                    f"{', '.join(SETTINGS + MISSING_SETTINGS)}",
                    hint=did_you_mean(key, SETTINGS + ENGINE_KNOBS + MISSING_SETTINGS),
                )
        return cls(**options)

    @classmethod
    def given(cls, settings: Settings | None, options: Mapping[str, Any]) -> Settings:
        """The caller's settings, given either as a Settings or as keywords (the Python
        API's convenience), not both."""
        if settings is not None and options:
            raise ParameterError("give settings either as a Settings or as keywords, not both")
        return settings if settings is not None else cls.from_options(options)

    def for_bank(self, defaults: Mapping[str, Any]) -> LayerSettings:
        """The one merge: what the caller gave, else the bank's ``defaults:``, else the
        engine's default."""
        given = {name: getattr(self, name) for name in SETTINGS if getattr(self, name) is not None}
        return LayerSettings(**{**defaults, **given})

    def with_knobs(
        self, *, threads: int | None = None, memory_limit: int | None = None
    ) -> Settings:
        """These settings with the engine's knobs replaced where given."""
        return replace(
            self,
            threads=self.threads if threads is None else threads,
            memory_limit=self.memory_limit if memory_limit is None else memory_limit,
        )

    def missing_rule(
        self,
        channels: int,
        *,
        has_missing: bool,
        alpha_channel: int | None = None,
        first: bool = True,
        alpha_weight: int | None = None,
    ) -> MissingRule | None:
        """The one decision about missing pixels and alpha for a layer with ``channels``
        input channels: None when it filters plainly (no missing pixels, nothing asked).

        ``has_missing``: its input holds NaN; ``alpha_channel``: the input's alpha channel
        (an image read with ``channels="keep"``), premultiplied by default (colours
        weighted by opacity, so transparent pixels' colours never bleed in); with
        ``alpha="premultiplied"`` and no ``alpha_channel`` the last channel is the alpha.
        ``alpha_weight``: the alpha of an image read as RGB, which only weighs the colours
        (premultiplied, the default; ``straight`` and ``ignore`` leave it unread).
        ``first`` is False for the layers after the first (alpha belongs to the input).
        A ``missing`` other than ``interpolate`` is refused with premultiplied alpha only
        when the input has missing pixels: without any, every treatment is the same.
        """
        alpha = None
        kept = True
        if first and alpha_weight is not None:
            if self.alpha in (None, "premultiplied"):
                alpha, kept = alpha_weight, False
        elif first and self.alpha == "premultiplied":
            alpha = channels - 1 if alpha_channel is None else alpha_channel
            if channels < 2:
                raise ParameterError(
                    "alpha 'premultiplied' needs a colour channel and an alpha channel; the "
                    "input has 1 channel",
                    hint="read images with --channels keep to keep their alpha",
                )
        elif first and self.alpha is None and alpha_channel is not None:
            alpha = alpha_channel
        if alpha is not None and has_missing and self.missing not in (None, "interpolate"):
            raise ParameterError(
                f"missing {self.missing!r} does not apply with premultiplied alpha: a missing "
                "pixel is transparent there, and colours are weighted by opacity",
                hint="use --missing interpolate, or --alpha straight to filter alpha as a "
                "channel like the others",
            )
        asked = self.missing is not None or self.min_valid is not None or self.preserve_missing
        if alpha is None and not asked and not has_missing:
            return None
        return MissingRule(
            "interpolate" if alpha is not None else self.missing or "propagate",
            self.min_valid or 0.0, bool(self.preserve_missing), alpha, kept,
        )  # fmt: skip
