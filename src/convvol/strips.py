"""Any strip of a layer's output rows, computed exactly as the in-memory engine computes it.

The engine (:func:`convvol.engine.convolve`) cuts its output into bands of rows and runs
each band on the input rows it needs. Its float32 results depend, in the last bit, on
where the bands fall (BLAS sums long products in blocks, differently for different
shapes). So the paths that never hold a whole volume (out-of-core files, Dask chunks,
batch workers with fewer threads) plan each layer once for the whole volume, exactly as
the engine would (:func:`plan_layers`), and compute whole bands of that plan at a time
(:meth:`LayerPlan.compute`): a strip made of whole bands comes out bit-identical to the
in-memory result, whatever memory, chunking or thread count it runs with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from convvol import engine
from convvol.bank import Bank
from convvol.engine import BORDERS, Geometry, Plan
from convvol.errors import BankError, ParameterError, choice_hint
from convvol.pipeline import settings_for


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One layer (a bank, or plain weights) planned for a volume of ``in_shape``."""

    in_shape: tuple[int, int, int]
    names: tuple[str, ...]  # the output channels' names
    weights: np.ndarray  # N×C×kh×kw float32, already flipped for true convolution
    bias: np.ndarray | None
    geometry: Geometry
    border: str
    cval: float
    stride: int
    dilation: int
    activation: str
    plan: Plan
    bank_name: str | None = None

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """H'×W'×N of the layer's output."""
        return (self.geometry.out_height, self.geometry.out_width, int(self.weights.shape[0]))

    @property
    def band_rows(self) -> int:
        """Output rows per band of the engine's plan: strips start at multiples of it."""
        return self.plan.band_rows

    @property
    def reach(self) -> int:
        """Input rows one output row reads: (kh − 1)·dilation + 1."""
        return (int(self.weights.shape[2]) - 1) * self.dilation + 1

    @cached_property
    def padded_rows(self) -> np.ndarray:
        """For each row of the padded input, the input row it shows (−1: the constant)."""
        height = self.in_shape[0]
        return engine.border_indices(height, self.geometry.top, self.geometry.bottom, self.border)

    def input_rows(self, first: int, last: int) -> np.ndarray:
        """The input rows (−1: the constant) that output rows first..last−1 read, in order."""
        start = first * self.stride
        return self.padded_rows[start : (last - 1) * self.stride + self.reach]

    def strip_bytes(self, rows: int) -> int:
        """float32 bytes of ``rows`` output rows and the input rows they read."""
        _, width, channels = self.in_shape
        height, out_width, filters = self.out_shape
        rows = min(rows, height)
        reading = min((rows - 1) * self.stride + self.reach, self.padded_rows.size)
        return 4 * (reading * width * channels + rows * out_width * filters)

    def strip_rows(self, budget: int) -> int:
        """The most output rows, in whole bands, whose strip fits ``budget`` bytes (≥ 1 band)."""
        one = self.strip_bytes(self.band_rows)
        per_band = max(self.strip_bytes(2 * self.band_rows) - one, 1)  # the halo is paid once
        bands = 1 + max(0, budget - one) // per_band
        return int(min(self.out_shape[0], bands * self.band_rows))

    def compute(
        self, padded: np.ndarray, first: int, last: int, *, threads: int | None = None
    ) -> np.ndarray:
        """Output rows ``first``..``last − 1``, activation applied, as a float32 array.

        ``padded`` holds the rows :meth:`input_rows` ``(first, last)`` names, in order,
        constant rows filled with ``cval`` (H×W×C, float32). ``first`` must start a band of
        the plan. ``threads`` (default: the plan's) only says how many bands run at once;
        the result does not depend on it.
        """
        height = self.out_shape[0]
        if first % self.band_rows or not 0 <= first < last <= height:
            raise ParameterError(
                f"rows {first}..{last} do not start a band of {self.band_rows} rows "
                f"of a {height}-row output"
            )
        expected = (last - 1 - first) * self.stride + self.reach
        if padded.shape[0] != expected:
            raise ParameterError(
                f"rows {first}..{last} read {expected} rows, not {padded.shape[0]}"
            )
        # The strip as a whole convolution of its own rows, already padded vertically: the
        # engine's own band loop then cuts the same bands and fills them with the same
        # values as it does for the whole volume.
        geometry = replace(self.geometry, top=0, bottom=0, out_height=last - first)
        return self._run(padded, geometry, threads)

    def run(self, volume: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """The whole output for an in-memory ``volume`` of ``in_shape``."""
        return self._run(volume, self.geometry, threads)

    def _run(self, volume: np.ndarray, geometry: Geometry, threads: int | None) -> np.ndarray:
        out = np.empty((geometry.out_height, *self.out_shape[1:]), np.float32)
        bands = -(-geometry.out_height // self.band_rows)
        plan = replace(self.plan, threads=max(1, min(threads or self.plan.threads, bands)))

        def keep(first: int, band: np.ndarray) -> None:
            del first, band  # the bands are slices of ``out`` already

        # The engine's own band loop (private, but the one thing that must not be copied).
        engine._run(volume, self.weights, self.bias, geometry, self.border, self.cval,
                    self.stride, self.dilation, plan, keep, 1.0, out)  # fmt: skip
        return engine.apply_activation(out, self.activation)


def plan_layer(
    shape: tuple[int, int, int],
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    padding: engine.Padding = "same",
    border: str = "reflect",
    cval: float = 0.0,
    stride: int = 1,
    dilation: int = 1,
    flip: bool = False,
    activation: str = "none",
    method: str = "auto",
    threads: int | None = None,
    memory_limit: int | None = None,
    names: Sequence[str] | None = None,
    bank_name: str | None = None,
) -> LayerPlan:
    """Plan plain N×C×kh×kw ``weights`` over a volume of ``shape`` as :func:`convolve` would.

    Arguments mean what they mean for :func:`convvol.engine.convolve`; ``activation`` is
    applied after the bias, as by a bank. Only the output's size is not checked against
    this machine's memory: the point of a plan is to compute it a strip at a time.
    """
    height, width, channels = shape
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weights.shape}")
    if weights.shape[1] != channels:
        raise ParameterError(
            f"the filters have {weights.shape[1]} layers but the volume has {channels} channels"
        )
    if 0 in weights.shape or 0 in shape:
        raise ParameterError(f"empty volume or weights (volume {shape}, weights {weights.shape})")
    if border not in BORDERS:
        raise ParameterError(
            f"border must be one of {', '.join(BORDERS)}; got {border!r}",
            hint=choice_hint(border, BORDERS),
        )
    try:
        cval = float(cval)
    except (TypeError, ValueError):
        raise ParameterError(f"cval must be a number; got {cval!r}") from None
    if not math.isfinite(cval):
        raise ParameterError(f"cval must be a finite number; got {cval}")
    n_filters, _, kh, kw = weights.shape
    if bias is not None:
        bias = np.asarray(bias, np.float32).reshape(-1)
        if bias.shape != (n_filters,):
            raise ParameterError(f"bias must hold {n_filters} values; got {bias.size}")
    geometry = engine.plan_geometry(
        height, width, kh, kw, padding=padding, stride=stride, dilation=dilation
    )
    weights = engine.finite_weights(weights)
    if flip:
        weights = weights[:, :, ::-1, ::-1]
    plan = engine.plan_convolution(
        shape, weights, geometry, stride=stride, dilation=dilation, method=method,
        threads=threads, memory_limit=memory_limit,
    )  # fmt: skip
    if activation not in engine.ACTIVATIONS:
        raise ParameterError(
            f"activation must be one of {', '.join(engine.ACTIVATIONS)}; got {activation!r}",
            hint=choice_hint(activation, engine.ACTIVATIONS),
        )
    return LayerPlan(
        in_shape=(height, width, channels),
        names=tuple(names) if names is not None else tuple(map(str, range(n_filters))),
        weights=weights,
        bias=bias,
        geometry=geometry,
        border=border,
        cval=cval,
        stride=int(stride),
        dilation=int(dilation),
        activation=activation,
        plan=plan,
        bank_name=bank_name,
    )


def plan_layers(
    shape: tuple[int, int, int],
    banks: Sequence[Bank],
    *,
    labels: Sequence[str] | None = None,
    **overrides: Any,
) -> list[LayerPlan]:
    """Plan banks in order over a volume of ``shape``, as :func:`~convvol.run_layers` runs them.

    ``overrides`` are the settings :func:`~convvol.apply_bank` takes, and the engine's
    ``threads`` and ``memory_limit``. ``labels`` name the banks as the user gave them (``-f``
    arguments), for errors about depths that do not fit.
    """
    if not banks:
        raise ParameterError("no filter bank given")
    layers: list[LayerPlan] = []
    for number, bank in enumerate(banks, start=1):
        settings = settings_for(bank, overrides)
        try:
            resolved = bank.resolve(shape[2])
        except BankError as error:
            raise _depth_error(error, number, shape[2], banks, labels) from None
        try:
            layer = plan_layer(shape, resolved.weights, resolved.bias, names=resolved.names,
                               bank_name=bank.name, **settings)  # fmt: skip
        except ParameterError as error:
            raise ParameterError(f"bank {bank.name!r}: {error.message}", hint=error.hint) from None
        layers.append(layer)
        shape = layer.out_shape
    return layers


def _depth_error(
    error: BankError, number: int, depth: int, banks: Sequence[Bank], labels: Sequence[str] | None
) -> BankError:
    """Name the layer and what came before, as the single-file command does."""
    names = list(labels) if labels else [bank.name for bank in banks]
    channels = f"{depth} channel{'' if depth == 1 else 's'}"
    hint = (
        f"the input has {channels}"
        if number == 1
        else f"layer {number - 1} (-f {names[number - 2]}) outputs {channels}"
    )
    prefix = f"layer {number} (-f {names[number - 1]}): " if len(banks) > 1 else ""
    return BankError(prefix + error.message, hint=hint)


def run_plans(
    volume: np.ndarray, layers: Sequence[LayerPlan], *, threads: int | None = None
) -> np.ndarray:
    """Run planned layers over an in-memory volume: the same values as run_layers."""
    for layer in layers:
        volume = layer.run(volume, threads=threads)
    return volume
