"""Running banks over volumes, as layers of a CNN: resolve, convolve, activate, repeat.

Settings come from three places, the first that gives one wins: the caller's overrides
(the CLI's options), the bank's ``defaults:``, the engine's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convvol.bank import Bank, BankWeights
from convvol.engine import (
    Plan,
    apply_activation,
    as_volume,
    convolve,
    plan_convolution,
    plan_geometry,
)
from convvol.errors import ParameterError, did_you_mean

SETTINGS = ("padding", "border", "cval", "stride", "dilation", "activation", "flip", "method")
ENGINE_DEFAULTS: dict[str, Any] = {
    "padding": "same",
    "border": "reflect",
    "cval": 0.0,
    "stride": 1,
    "dilation": 1,
    "activation": "none",
    "flip": False,
    "method": "auto",
}


def settings_for(bank: Bank, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge overrides (None means "not given") over the bank's defaults and the engine's."""
    for key in overrides:
        if key not in SETTINGS:
            raise ParameterError(
                f"unknown setting {key!r}; settings are {', '.join(SETTINGS)}",
                hint=did_you_mean(key, SETTINGS),
            )
    given = {key: value for key, value in overrides.items() if value is not None}
    return {**ENGINE_DEFAULTS, **bank.defaults, **given}


@dataclass(frozen=True, eq=False)
class LayerResult:
    """One bank's output volume with the names of its channels."""

    bank: Bank
    names: tuple[str, ...]
    volume: np.ndarray


def run_layer(
    volume: np.ndarray,
    bank: Bank,
    *,
    threads: int | None = None,
    memory_limit: int | None = None,
    **overrides: Any,
) -> LayerResult:
    """Apply one bank to an H×W×C volume; the output channels keep the filters' names.

    ``threads`` and ``memory_limit`` go to the engine (:func:`~convvol.convolve`).
    """
    volume = as_volume(volume)
    settings = settings_for(bank, overrides)
    resolved: BankWeights = bank.resolve(volume.shape[2])
    activation = settings.pop("activation")
    try:
        response = convolve(volume, resolved.weights, resolved.bias, threads=threads,
                            memory_limit=memory_limit, **settings)  # fmt: skip
    except ParameterError as error:
        raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None
    return LayerResult(bank, resolved.names, apply_activation(response, activation))


def apply_bank(volume: np.ndarray, bank: Bank, **overrides: Any) -> np.ndarray:
    """Apply a bank to an H×W×C volume; return the H'×W'×N float32 response.

    ``overrides`` are ``padding``, ``border``, ``cval``, ``stride``, ``dilation``,
    ``activation``, ``flip`` and ``method``; each beats the bank's ``defaults:``.

    >>> import numpy as np
    >>> from convvol import load_bank
    >>> apply_bank(np.zeros((4, 5, 3), np.float32), load_bank("edges")).shape
    (4, 5, 3)
    """
    return run_layer(volume, bank, **overrides).volume


def plan_layers(
    shape: tuple[int, int, int],
    banks: Sequence[Bank],
    *,
    memory_limit: int | None = None,
    **overrides: Any,
) -> list[Plan]:
    """How each layer would run on a volume of ``shape``, without running it (--explain)."""
    plans = []
    height, width, channels = shape
    for bank in banks:
        settings = settings_for(bank, overrides)
        weights = bank.resolve(channels).weights
        if settings["flip"]:
            weights = weights[:, :, ::-1, ::-1]
        geometry = plan_geometry(
            height, width, *weights.shape[2:], padding=settings["padding"],
            stride=settings["stride"], dilation=settings["dilation"],
        )  # fmt: skip
        plans.append(
            plan_convolution(
                (height, width, channels),
                weights,
                geometry,
                stride=settings["stride"],
                dilation=settings["dilation"],
                method=settings["method"],
                memory_limit=memory_limit,
            )
        )
        height, width, channels = geometry.out_height, geometry.out_width, weights.shape[0]
    return plans


def run_layers(
    volume: np.ndarray,
    banks: Sequence[Bank],
    *,
    threads: int | None = None,
    memory_limit: int | None = None,
    **overrides: Any,
) -> LayerResult:
    """Apply banks in order, each to the previous one's output; return the last layer."""
    if not banks:
        raise ParameterError("no filter bank given")
    result = None
    for bank in banks:
        result = run_layer(volume if result is None else result.volume, bank, threads=threads,
                           memory_limit=memory_limit, **overrides)  # fmt: skip
    assert result is not None
    return result
