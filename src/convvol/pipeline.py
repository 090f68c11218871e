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
    DEFAULT_MEMORY_LIMIT,
    Plan,
    apply_activation,
    as_volume,
    convolve,
    plan_convolution,
    plan_geometry,
)
from convvol.errors import ParameterError, did_you_mean
from convvol.limits import available_memory, gib

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


def run_layer(volume: np.ndarray, bank: Bank, **overrides: Any) -> LayerResult:
    """Apply one bank to an H×W×C volume; the output channels keep the filters' names."""
    volume = as_volume(volume)
    settings = settings_for(bank, overrides)
    resolved: BankWeights = bank.resolve(volume.shape[2])
    activation = settings.pop("activation")
    try:
        response = convolve(volume, resolved.weights, resolved.bias, **settings)
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


def plan_layers(shape: tuple[int, int, int], banks: Sequence[Bank], **overrides: Any) -> list[Plan]:
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
            )
        )
        height, width, channels = geometry.out_height, geometry.out_width, weights.shape[0]
    return plans


def estimate_memory(
    shape: tuple[int, int, int], banks: Sequence[Bank], **overrides: Any
) -> list[tuple[int, int]]:
    """For each layer, the bytes a run holds at its peak and the bytes of its output.

    At layer k the run holds the input volume, layer k−1's output, layer k's output, the
    weights (float32, and once more as the method transforms them) and the engine's working
    set (``memory_limit``, default 256 MiB). Raises ParameterError for an empty output.
    """
    height, width, channels = shape
    held = input_bytes = 4 * height * width * channels
    needs = []
    for bank in banks:
        settings = settings_for(bank, overrides)
        kh, kw = bank.kernel_shape
        outputs = sum(channels if f.depthwise else 1 for f in bank.filters)
        try:
            geometry = plan_geometry(
                height, width, kh, kw, padding=settings["padding"],
                stride=settings["stride"], dilation=settings["dilation"],
            )  # fmt: skip
        except ParameterError as error:
            raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None
        output = 4 * geometry.out_height * geometry.out_width * outputs
        weights = 2 * 4 * outputs * channels * kh * kw
        needs.append((held + output + weights + DEFAULT_MEMORY_LIMIT, output))
        held = input_bytes + output
        height, width, channels = geometry.out_height, geometry.out_width, outputs
    return needs


def check_memory(
    shape: tuple[int, int, int],
    banks: Sequence[Bank],
    *,
    label: str | None = None,
    writing: float = 0.0,
    **overrides: Any,
) -> None:
    """Refuse, before any work, a run that would need more memory than is available.

    ``shape`` is the input's (already in memory); ``writing`` is what writing the result
    takes, as a multiple of its float32 bytes (the caller knows the format). ``label``
    (the input's name) starts the message.
    """
    try:
        needs = estimate_memory(shape, banks, **overrides)
    except ParameterError as error:  # an empty output, say: name the input too
        if not label:
            raise
        raise ParameterError(f"{label}: {error.message}", hint=error.hint) from None
    room = available_memory()
    if room is None or not needs:
        return
    input_bytes = 4 * shape[0] * shape[1] * shape[2]
    last_need, last_output = needs[-1]
    needs[-1] = (max(last_need, input_bytes + int(last_output * (1 + writing))), last_output)
    for number, (need, output) in enumerate(needs, start=1):
        if need - input_bytes <= room:
            continue
        where = f"layer {number} (bank {banks[number - 1].name!r})" if len(banks) > 1 else (
            f"bank {banks[0].name!r}"
        )  # fmt: skip
        raise ParameterError(
            (f"{label}: " if label else "")
            + f"the result is too large for memory: {where} would need about "
            f"{gib(need - input_bytes)} more (its output alone is {gib(output)}), but only "
            f"{gib(room)} is available",
            hint="use a larger --stride (2 quarters the output), --padding valid, fewer "
            "filters or a smaller image; an output takes H'×W'×filters×4 bytes",
        )


def run_layers(volume: np.ndarray, banks: Sequence[Bank], **overrides: Any) -> LayerResult:
    """Apply banks in order, each to the previous one's output; return the last layer.

    Refuses up front (ParameterError) a run whose estimated memory is more than is available.
    """
    if not banks:
        raise ParameterError("no filter bank given")
    volume = as_volume(volume)
    check_memory(volume.shape, banks, **overrides)
    result = None
    for bank in banks:
        result = run_layer(volume if result is None else result.volume, bank, **overrides)
    assert result is not None
    return result
