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
    BandSink,
    Plan,
    apply_activation,
    as_volume,
    check_activation,
    check_output_memory,
    convolve_bands,
    plan_convolution,
    plan_geometry,
)
from convvol.errors import ParameterError, did_you_mean
from convvol.limits import available_memory, gib
from convvol.output import DEPTHS, check_scale, pixels_into, to_pixels

SETTINGS = ("padding", "border", "cval", "stride", "dilation", "activation", "flip", "method")
# Passed through to the engine (convolve_bands), never taken from a bank: how many threads
# run its bands, and the bytes of its working set (its results do not depend on either).
ENGINE_KNOBS = ("threads", "memory_limit")
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
        if key not in SETTINGS and key not in ENGINE_KNOBS:
            raise ParameterError(
                f"unknown setting {key!r}; settings are {', '.join(SETTINGS)}",
                hint=did_you_mean(key, SETTINGS + ENGINE_KNOBS),
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
    volume: np.ndarray, bank: Bank, *, divisor: float = 1.0, **overrides: Any
) -> LayerResult:
    """Apply one bank to an H×W×C volume; the output channels keep the filters' names.

    ``divisor`` divides the volume's values as they are read (stored pixels, as
    :func:`convvol.volume.read_pixels` gives them).
    """
    volume = as_volume(volume)
    layer = _prepare_layer(volume.shape, bank, overrides)
    response = np.empty(layer.out_shape, np.float32)

    def activate(first: int, band: np.ndarray) -> None:
        apply_activation(band, layer.activation)

    _convolve_bands(volume, layer.resolved, bank, activate, divisor, layer.settings, out=response)
    return LayerResult(bank, layer.resolved.names, response)


@dataclass(frozen=True)
class _Layer:
    """One bank made ready for a volume: engine settings, weights, activation, output shape."""

    settings: dict[str, Any]  # the engine's keywords (the activation taken out)
    resolved: BankWeights
    activation: str
    out_shape: tuple[int, int, int]


def _prepare_layer(shape: tuple[int, ...], bank: Bank, overrides: dict[str, Any]) -> _Layer:
    """Settings, resolved weights and output shape; the output's memory checked before any
    allocation, errors named after the bank."""
    settings = settings_for(bank, overrides)
    resolved: BankWeights = bank.resolve(shape[2])
    activation = check_activation(settings.pop("activation"))
    weights = resolved.weights
    try:
        geometry = plan_geometry(
            shape[0], shape[1], *weights.shape[2:], padding=settings["padding"],
            stride=settings["stride"], dilation=settings["dilation"],
        )  # fmt: skip
        check_output_memory(geometry, weights.shape[0])
    except ParameterError as error:
        raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None
    out_shape = (geometry.out_height, geometry.out_width, len(resolved.names))
    return _Layer(settings, resolved, activation, out_shape)


def _convolve_bands(
    volume: np.ndarray,
    resolved: BankWeights,
    bank: Bank,
    sink: BandSink,
    divisor: float,
    settings: dict[str, Any],
    out: np.ndarray | None = None,
) -> None:
    try:
        convolve_bands(
            volume, resolved.weights, resolved.bias, sink=sink, divisor=divisor, out=out,
            **settings,
        )  # fmt: skip
    except ParameterError as error:
        raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None


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
                threads=settings.get("threads"),
                memory_limit=settings.get("memory_limit"),
            )
        )
        height, width, channels = geometry.out_height, geometry.out_width, weights.shape[0]
    return plans


def estimate_memory(
    shape: tuple[int, ...],
    banks: Sequence[Bank],
    *,
    input_bytes: int | None = None,
    output_bytes: float = 4,
    **overrides: Any,
) -> list[tuple[int, int]]:
    """For each layer, the bytes a run holds at its peak and the bytes of its output.

    At layer k the run holds the input (``input_bytes``; float32 by default), layer k−1's
    float32 output, layer k's output (the last one ``output_bytes`` a value: 4 as float32,
    1 or 2 as pixels rendered band by band), the weights (float32, and once more as the
    method transforms them) and the engine's working set (256 MiB). Raises ParameterError
    for an empty output.
    """
    height, width, channels = shape
    source = 4 * height * width * channels if input_bytes is None else input_bytes
    held, needs = source, []
    for number, bank in enumerate(banks, start=1):
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
        values = geometry.out_height * geometry.out_width * outputs
        output = int(values * (output_bytes if number == len(banks) else 4))
        weights = 2 * 4 * outputs * channels * kh * kw
        needs.append((held + output + weights + DEFAULT_MEMORY_LIMIT, output))
        held = source + output
        height, width, channels = geometry.out_height, geometry.out_width, outputs
    return needs


def check_memory(
    shape: tuple[int, ...],
    banks: Sequence[Bank],
    *,
    label: str | None = None,
    input_bytes: int | None = None,
    output_bytes: float = 4,
    writing: float = 0.0,
    **overrides: Any,
) -> None:
    """Refuse, before any work, a run that would need more memory than is available.

    The input (``shape``, ``input_bytes``) is already in memory; ``output_bytes`` is how
    the last output is held (see :func:`estimate_memory`); ``writing`` is what writing it
    takes, as a multiple of its bytes (the caller knows the format). ``label`` (the input's
    name) starts the message.
    """
    try:
        needs = estimate_memory(
            shape, banks, input_bytes=input_bytes, output_bytes=output_bytes, **overrides
        )
    except ParameterError as error:  # an empty output, say: name the input too
        if not label:
            raise
        raise ParameterError(f"{label}: {error.message}", hint=error.hint) from None
    room = available_memory()
    if room is None or not needs:
        return
    source = 4 * shape[0] * shape[1] * shape[2] if input_bytes is None else input_bytes
    last_need, last_output = needs[-1]
    needs[-1] = (max(last_need, source + int(last_output * (1 + writing))), last_output)
    for number, (need, output) in enumerate(needs, start=1):
        if need - source <= room:
            continue
        where = f"layer {number} (bank {banks[number - 1].name!r})" if len(banks) > 1 else (
            f"bank {banks[0].name!r}"
        )  # fmt: skip
        raise ParameterError(
            (f"{label}: " if label else "")
            + f"the result is too large for memory: {where} would need about "
            f"{gib(need - source)} more (its output alone is {gib(output)}), but only "
            f"{gib(room)} is available",
            hint="use a larger --stride (2 quarters the output), --padding valid, fewer "
            "filters or a smaller image; an output takes H'×W'×filters×4 bytes",
        )


def run_layers(
    volume: np.ndarray, banks: Sequence[Bank], *, divisor: float = 1.0, **overrides: Any
) -> LayerResult:
    """Apply banks in order, each to the previous one's output; return the last layer.

    ``divisor`` applies to ``volume`` (stored pixels), as in :func:`run_layer`. A run
    estimated to need more memory than is available is refused up front (ParameterError).
    """
    if not banks:
        raise ParameterError("no filter bank given")
    volume = as_volume(volume)
    check_memory(volume.shape, banks, input_bytes=volume.nbytes, **overrides)
    result = None
    for bank in banks:
        if result is None:
            result = run_layer(volume, bank, divisor=divisor, **overrides)
        else:
            result = run_layer(result.volume, bank, **overrides)
    assert result is not None
    return result


@dataclass(frozen=True, eq=False)
class RenderedResult:
    """The last layer's output as the pixels an image file stores, with channel names."""

    bank: Bank
    names: tuple[str, ...]
    pixels: np.ndarray


def render_layers(
    volume: np.ndarray,
    banks: Sequence[Bank],
    *,
    scale: str = "clip",
    depth: int = 8,
    divisor: float = 1.0,
    **overrides: Any,
) -> RenderedResult:
    """Apply banks in order and turn the last output into pixels (``to_pixels``).

    The same pixels as ``to_pixels(run_layers(...).volume, scale, depth)``, but the last
    layer's float output is never held whole: each band is activated and scaled as soon
    as it is computed (except for ``minmax``, which needs every value first). With
    ``divisor``, stored pixels go in without a float copy either.
    """
    if not banks:
        raise ParameterError("no filter bank given")
    volume = as_volume(volume)
    check_memory(volume.shape, banks, input_bytes=volume.nbytes,
                 output_bytes=4 if scale == "minmax" else depth // 8, **overrides)  # fmt: skip
    *earlier, last = banks
    source, source_divisor = volume, divisor
    if earlier:
        source = run_layers(volume, earlier, divisor=divisor, **overrides).volume
        source_divisor = 1.0
    if scale == "minmax":
        result = run_layer(source, last, divisor=source_divisor, **overrides)
        return RenderedResult(last, result.names, to_pixels(result.volume, scale, depth))
    check_scale(scale, depth)
    layer = _prepare_layer(source.shape, last, overrides)
    pixels = np.empty(layer.out_shape, DEPTHS[depth])

    def render(first: int, band: np.ndarray) -> None:
        apply_activation(band, layer.activation)
        pixels_into(band, pixels[first : first + band.shape[0]], scale, overwrite=True)

    _convolve_bands(source, layer.resolved, last, render, source_divisor, layer.settings)
    return RenderedResult(last, layer.resolved.names, pixels)
