"""Banks as layers of a CNN: plan the stack once, check its memory, run it.

:func:`plan_stack` is the one place a stack of banks is planned over a volume: each bank
resolved for the depth before it, its settings merged (the caller's, else the bank's
``defaults:``, else the engine's; :meth:`~convvol.settings.Settings.for_bank`), and planned
by the engine. ``--explain``, memory estimates, output names, in-memory runs, out-of-core
strips, Dask and batch workers all use the plans it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convvol.bank import Bank, BankWeights
from convvol.engine import DEFAULT_MEMORY_LIMIT, LayerPlan, as_volume, plan_layer
from convvol.engine.cost import physical_memory
from convvol.engine.integer import integer_plan
from convvol.errors import BankError, ParameterError
from convvol.limits import available_memory, gib
from convvol.normalize import fold
from convvol.scaling import check_scale, pixels_into, sample_type, to_pixels
from convvol.settings import Settings


def plan_stack(
    shape: tuple[int, ...],
    banks: Sequence[Bank],
    settings: Settings | None = None,
    *,
    labels: Sequence[str] | None = None,
    input_hint: str = "",
    has_missing: bool = False,
    alpha_channel: int | None = None,
    alpha_weight: int | None = None,
) -> list[LayerPlan]:
    """Plan banks in order over a volume of ``shape``, each on the previous one's output.

    ``labels`` name the banks as the user gave them (``-f`` arguments) and ``input_hint``
    adds to the hint when the first bank does not fit the input's depth. ``has_missing``
    (the volume holds NaN) and ``alpha_channel`` (its alpha, for an image read with
    ``channels="keep"``) decide, with the settings, how missing pixels and transparency
    are filtered (:meth:`~convvol.settings.Settings.missing_rule`); a layer whose input
    may hold NaN filters them as missing too. ``alpha_weight`` is the alpha of an image
    read as RGB (``info.alpha_weight``): the first bank sees the other channels only, and
    the alpha weighs their colours (premultiplied, by default).
    """
    if not banks:
        raise ParameterError("no filter bank given")
    settings = settings or Settings()
    height, width, channels = (int(size) for size in shape)
    layers: list[LayerPlan] = []
    missing = has_missing
    seen = channels - (alpha_weight is not None)  # the channels the first bank sees
    stack = resolve_stack(banks, seen, labels=labels, input_hint=input_hint)
    for number, (bank, resolved) in enumerate(zip(banks, stack, strict=True), start=1):
        weights = resolved.weights
        try:
            rule = settings.missing_rule(
                channels, has_missing=missing, alpha_channel=alpha_channel, first=number == 1,
                alpha_weight=alpha_weight,
            )  # fmt: skip
            layer_settings = settings.for_bank(bank.defaults)
            bias, pad_values = resolved.bias, None
            if bank.input is not None:  # the network's normalisation, folded into the layer
                weights, bias, pad_values = fold(weights, bias, bank.input, layer_settings.cval,
                                                 layer_settings.border == "constant")  # fmt: skip
            if number == 1 and alpha_weight is not None:  # no filter reads the alpha itself
                weights = np.insert(weights, alpha_weight, np.float32(0), axis=1)
                if pad_values is not None:
                    pad_values = np.insert(pad_values, alpha_weight, layer_settings.cval)
            slopes = (
                resolved.prelu_slopes(layer_settings.slope)
                if layer_settings.activation == "prelu"
                else None
            )
            layer = plan_layer(
                (height, width, channels), weights, bias, layer_settings,
                threads=settings.threads, memory_limit=settings.memory_limit,
                names=resolved.names, bank_name=bank.name, slopes=slopes, pad_values=pad_values,
                combine=resolved.combine, missing=rule,
            )  # fmt: skip
        except ParameterError as error:
            raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None
        # What this layer writes may be missing (NaN) where its rule says so.
        missing = rule is not None and (
            rule.alpha_channel is None or not rule.alpha_kept or rule.min_valid > 0
        )
        layers.append(layer)
        height, width, channels = layer.out_shape
    return layers


def resolve_stack(
    banks: Sequence[Bank],
    channels: int,
    *,
    labels: Sequence[str] | None = None,
    input_hint: str = "",
) -> list[BankWeights]:
    """Each bank completed for the depth before it (the input's ``channels`` first), its
    expressions checked: what :func:`plan_stack` plans. Raises BankError naming the layer
    (see :func:`check_stack` for what can be checked before the depth is known)."""
    stack: list[BankWeights] = []
    for number, bank in enumerate(banks, start=1):
        try:
            stack.append(bank.resolve(channels))
        except BankError as error:
            raise _depth_error(error, number, channels, banks, labels, input_hint) from None
        channels = len(stack[-1].outputs)
    return stack


def check_stack(banks: Sequence[Bank], *, labels: Sequence[str] | None = None) -> None:
    """What can be checked of a stack before its input is read, when the input's depth
    is not known yet (a ``.npy`` or TIFF stack keeps its own, whatever ``--channels``
    says): expressions reading names that no depth gives. :func:`plan_stack` checks the
    rest once the depth is known, still before anything is written. Raises BankError
    naming the layer."""
    for number, bank in enumerate(banks, start=1):
        try:
            bank.check_names()
        except BankError as error:
            prefix = _layer_prefix(number, banks, labels)
            raise BankError(prefix + error.message, hint=error.hint) from None


def holds_nan(volume: np.ndarray) -> bool:
    """Whether a volume has missing pixels (NaN; integer pixels never have)."""
    return volume.dtype.kind == "f" and bool(np.isnan(np.add.reduce(volume, axis=None)))


def _depth_error(
    error: BankError,
    number: int,
    depth: int,
    banks: Sequence[Bank],
    labels: Sequence[str] | None,
    input_hint: str,
) -> BankError:
    """Name the layer and what came before it; the error's own hint (a "did you mean")
    comes first."""
    names = list(labels) if labels else [bank.name for bank in banks]
    channels = f"{depth} channel{'' if depth == 1 else 's'}"
    hint = (
        f"the input has {channels}{input_hint}"
        if number == 1
        else f"layer {number - 1} (-f {names[number - 2]}) outputs {channels}"
    )
    if error.hint:
        hint = f"{error.hint} ({hint})"
    return BankError(_layer_prefix(number, banks, labels) + error.message, hint=hint)


def _layer_prefix(number: int, banks: Sequence[Bank], labels: Sequence[str] | None) -> str:
    """``layer 2 (-f edges): `` in a stack of several banks, else nothing."""
    if len(banks) < 2:
        return ""
    names = list(labels) if labels else [bank.name for bank in banks]
    return f"layer {number} (-f {names[number - 1]}): "


def estimate_memory(
    layers: Sequence[LayerPlan], *, input_bytes: int | None = None, output_bytes: float = 4
) -> list[tuple[int, int]]:
    """For each layer, the bytes a run holds at its peak and the bytes of its output.

    At layer k the run holds the input (``input_bytes``; float32 by default), layer k−1's
    float32 output, layer k's output (the last one ``output_bytes`` a value: 4 as float32,
    1 or 2 as pixels rendered band by band), the weights (float32, and once more as the
    method transforms them), a masked layer's values, mask and their outputs, and the
    engine's working set.
    """
    height, width, channels = layers[0].in_shape
    source = 4 * height * width * channels if input_bytes is None else input_bytes
    held, needs = source, []
    for number, layer in enumerate(layers, start=1):
        values = int(np.prod(layer.out_shape, dtype=np.int64))
        output = int(values * (output_bytes if number == len(layers) else 4))
        working = 2 * 4 * layer.weights.size  # the weights, and once more transformed
        if layer.masking is not None:  # the values and the mask beside the input, and theirs
            rows, columns, depth = layer.in_shape
            extra_in, extra_out = layer.masking.working_values(depth)
            working += 4 * (rows * columns * extra_in + values // layer.out_shape[2] * extra_out)
        needs.append((held + output + working + DEFAULT_MEMORY_LIMIT, output))
        held = source + output
    return needs


def check_memory(
    layers: Sequence[LayerPlan],
    *,
    label: str | None = None,
    input_bytes: int | None = None,
    output_bytes: float = 4,
    writing: float = 0.0,
) -> None:
    """Refuse, before any work, a run that would need more memory than is available.

    The input (``input_bytes``) is already in memory; ``output_bytes`` is how the last
    output is held (see :func:`estimate_memory`); ``writing`` is what writing it takes, as
    a multiple of its bytes (the caller knows the format). ``label`` (the input's name)
    starts the message.
    """
    needs = estimate_memory(layers, input_bytes=input_bytes, output_bytes=output_bytes)
    room = available_memory()
    if room is not None:
        _check_room(layers, needs, room, label, input_bytes, writing)
    check_bands(layers, label)


def check_bands(layers: Sequence[LayerPlan], label: str | None = None) -> None:
    """The engine's band check (the rows one band of output reads must fit this machine),
    said in terms of the settings that cause it; ``label`` (the input) starts the message."""
    for layer in layers:
        try:
            layer.plan.check_band()
        except ParameterError:
            height, width, _ = layer.in_shape
            settings = layer.settings
            memory = physical_memory() or 0
            change = (
                f"use a dilation of at most {max(height, width)} (the image's size), a "
                "smaller padding, or a smaller kernel"
                if settings.dilation > 1
                else "use a smaller padding or a smaller kernel"
            )
            raise ParameterError(
                (f"{label}: " if label else "")
                + f"bank {layer.bank_name!r} with dilation {settings.dilation} and padding "
                f"{settings.padding} reads {layer.reach:,} input rows of "
                f"{layer.geometry.left + width + layer.geometry.right:,} pixels for each "
                f"row of output: even one band of them would need "
                f"{gib(layer.plan.smallest_band)} of memory, more than this machine's "
                f"{gib(memory)}",
                hint=change,
            ) from None


def _check_room(
    layers: Sequence[LayerPlan],
    needs: list[tuple[int, int]],
    room: int,
    label: str | None,
    input_bytes: int | None,
    writing: float,
) -> None:
    height, width, channels = layers[0].in_shape
    source = 4 * height * width * channels if input_bytes is None else input_bytes
    last_need, last_output = needs[-1]
    needs[-1] = (max(last_need, source + int(last_output * (1 + writing))), last_output)
    for number, (need, output) in enumerate(needs, start=1):
        if need - source <= room:
            continue
        name = layers[number - 1].bank_name
        where = f"layer {number} (bank {name!r})" if len(layers) > 1 else f"bank {name!r}"
        raise ParameterError(
            (f"{label}: " if label else "")
            + f"the result is too large for memory: {where} would need about "
            f"{gib(need - source)} more (its output alone is {gib(output)}), but only "
            f"{gib(room)} is available",
            hint="use a larger --stride (2 quarters the output), --padding valid, fewer "
            "filters or a smaller image; an output takes H'×W'×filters×4 bytes",
        )


def run_plans(
    volume: np.ndarray,
    layers: Sequence[LayerPlan],
    *,
    divisor: float = 1.0,
    threads: int | None = None,
) -> np.ndarray:
    """Run planned layers over an in-memory volume, each on the previous one's output.

    ``divisor`` divides the first volume's values as they are read (stored pixels, as
    :func:`convvol.read_pixels` gives them).
    """
    for layer in layers:
        volume = layer.run(volume, divisor=divisor, threads=threads)
        divisor = 1.0
    return volume


def render_plans(
    volume: np.ndarray,
    layers: Sequence[LayerPlan],
    *,
    scale: str = "clip",
    depth: int | str = 8,
    divisor: float = 1.0,
    threads: int | None = None,
    transfer: Callable[[np.ndarray], np.ndarray] | None = None,
    values: str = "unit",
) -> np.ndarray:
    """Run planned layers and turn the last output into pixels, band by band.

    The same pixels as ``to_pixels(run_plans(...), scale, depth, values=values)``, but the
    last layer's float output is never held whole (except for ``minmax``, which needs
    every value first). ``depth`` is 8, 16 or an integer sample type's name.
    ``transfer`` maps the last layer's values before they become pixels (``--linear``
    encodes them back to sRGB: ``scaling.linear_to_srgb``).
    """
    *earlier, last = layers
    integer = (
        integer_plan(last, volume, divisor, scale)
        if not earlier and transfer is None and values == "unit" and depth in (8, 16)
        else None
    )
    if integer is not None:  # integer pixels through integer taps: exact sums, no floats
        check_scale(scale, depth)
        pixels = np.empty(last.out_shape, sample_type(depth))
        integer.render(volume, pixels, threads)
        return pixels
    source = run_plans(volume, earlier, divisor=divisor, threads=threads) if earlier else volume
    source_divisor = 1.0 if earlier else divisor
    if scale == "minmax":
        result = last.run(source, divisor=source_divisor, threads=threads)
        return to_pixels(result if transfer is None else transfer(result), scale, depth,
                         values=values)  # fmt: skip
    check_scale(scale, depth)
    pixels = np.empty(last.out_shape, sample_type(depth))

    def render(first: int, band: np.ndarray) -> None:
        if transfer is not None:
            band = transfer(band)
        pixels_into(band, pixels[first : first + band.shape[0]], scale, overwrite=True,
                    values=values)  # fmt: skip

    last.run_bands(source, render, divisor=source_divisor, threads=threads)
    return pixels


@dataclass(frozen=True, eq=False)
class LayerResult:
    """One bank's output volume with the names of its channels."""

    bank: Bank
    names: tuple[str, ...]
    volume: np.ndarray


@dataclass(frozen=True, eq=False)
class RenderedResult:
    """The last layer's output as the pixels an image file stores, with channel names."""

    bank: Bank
    names: tuple[str, ...]
    pixels: np.ndarray


def run_layers(
    volume: np.ndarray,
    banks: Sequence[Bank],
    settings: Settings | None = None,
    *,
    divisor: float = 1.0,
    **options: Any,
) -> LayerResult:
    """Apply banks in order, each to the previous one's output; return the last layer.

    ``settings`` (or the same as keywords: ``stride=2``) beat each bank's ``defaults:``.
    ``divisor`` divides ``volume``'s values as they are read (stored pixels). A run
    estimated to need more memory than is available is refused up front (ParameterError).
    """
    volume = as_volume(volume)
    layers = plan_stack(volume.shape, banks, Settings.given(settings, options),
                        has_missing=holds_nan(volume))  # fmt: skip
    check_memory(layers, input_bytes=volume.nbytes)
    return LayerResult(banks[-1], layers[-1].names, run_plans(volume, layers, divisor=divisor))


def apply_bank(
    volume: np.ndarray, bank: Bank, settings: Settings | None = None, **options: Any
) -> np.ndarray:
    """Apply a bank to an H×W×C volume; return the H'×W'×N float32 response.

    ``settings`` (or keywords: ``padding``, ``border``, ``cval``, ``stride``, ``dilation``,
    ``activation``, ``flip``, ``method``, ``threads``, ``memory_limit``) beat the bank's
    ``defaults:``.

    >>> import numpy as np
    >>> from convvol import load_bank
    >>> apply_bank(np.zeros((4, 5, 3), np.float32), load_bank("edges")).shape
    (4, 5, 3)
    """
    return run_layers(volume, [bank], settings, **options).volume


def render_layers(
    volume: np.ndarray,
    banks: Sequence[Bank],
    settings: Settings | None = None,
    *,
    scale: str = "clip",
    depth: int = 8,
    divisor: float = 1.0,
    **options: Any,
) -> RenderedResult:
    """Apply banks in order and turn the last output into pixels (``to_pixels``), band by
    band: the same pixels as ``to_pixels(run_layers(...).volume, scale, depth)`` without
    holding the last layer's float output."""
    volume = as_volume(volume)
    layers = plan_stack(volume.shape, banks, Settings.given(settings, options),
                        has_missing=holds_nan(volume))  # fmt: skip
    check_memory(layers, input_bytes=volume.nbytes,
                 output_bytes=4 if scale == "minmax" else depth // 8)  # fmt: skip
    pixels = render_plans(volume, layers, scale=scale, depth=depth, divisor=divisor)
    return RenderedResult(banks[-1], layers[-1].names, pixels)
