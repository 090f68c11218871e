"""The engine's product: one layer planned and validated once, then run whole, band by
band, or strip by strip, bit-identical in every case.

The float32 results of a convolution depend, in the last bit, on where the bands fall
(BLAS sums long products in blocks, differently for different shapes). So every path
(in memory, out-of-core strips, Dask chunks, batch workers with fewer threads) runs the
same :class:`LayerPlan`, and a strip made of whole bands of it comes out exactly as the
whole volume does, whatever memory, chunking or thread count it runs with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol

import numpy as np

from convvol.engine.bands import BandSink, run_bands
from convvol.engine.cost import check_fits
from convvol.engine.gather import gather_band
from convvol.engine.geometry import Geometry, as_volume, border_indices, plan_geometry
from convvol.engine.missing import Masking, check_preserve, prepare_masking
from convvol.engine.plan import Plan, plan_convolution
from convvol.engine.weights import finite_weights
from convvol.engine.workspace import Workspace
from convvol.errors import ParameterError
from convvol.settings import LayerSettings, MissingRule, Padding


def apply_activation(
    volume: np.ndarray, activation: str, slopes: np.ndarray | float | None = None
) -> np.ndarray:
    """Apply an activation of :data:`~convvol.settings.ACTIVATIONS` in place to an
    H×W×N volume (or band) and return it.

    ``slopes`` is the negative slope of ``leaky_relu`` and ``prelu``: one number, or one
    per output channel (the last axis); PyTorch's 0.01 when not given.
    """
    if activation == "relu":
        np.maximum(volume, 0, out=volume)
    elif activation == "abs":
        np.abs(volume, out=volume)
    elif activation in ("leaky_relu", "prelu"):
        slope = np.float32(0.01) if slopes is None else np.asarray(slopes, np.float32)
        np.multiply(volume, slope, out=volume, where=volume < 0)
    elif activation == "tanh":
        np.tanh(volume, out=volume)
    elif activation == "sigmoid":  # 1/(1+e^−x) as ½·tanh(x/2) + ½: no overflow for any x
        volume *= np.float32(0.5)
        np.tanh(volume, out=volume)
        volume *= np.float32(0.5)
        volume += np.float32(0.5)
    return volume


def check_output_memory(geometry: Geometry, n_filters: int) -> None:
    """Refuse, before allocating, an output larger than this machine's memory."""
    check_fits(4 * geometry.out_height * geometry.out_width * n_filters, "the output")


class OutputCombine(Protocol):
    """Per-pixel expressions after the filters (:class:`convvol.expressions.Combine`)."""

    @property
    def names(self) -> tuple[str, ...]:
        """The output channels it makes."""
        ...

    def __call__(self, filters: np.ndarray, inputs: np.ndarray, out: np.ndarray) -> None:
        """Fill ``out`` (rows×W'×len(names)) from a band of the filters' outputs (rows×W'×N)
        and of the layer's input at the same output pixels (rows×W'×C)."""
        ...


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One layer (a bank, or plain weights) planned for a volume of ``in_shape``.

    With ``combine``, each band of the filters' outputs (activation applied) goes through
    it, with the input at the same pixels, and its channels are the layer's output.
    """

    in_shape: tuple[int, int, int]
    names: tuple[str, ...]  # the output channels' names
    bias: np.ndarray | None
    settings: LayerSettings
    plan: Plan = field(repr=False)
    bank_name: str | None = None
    combine: OutputCombine | None = field(default=None, repr=False)
    # Missing pixels or alpha: ``plan`` then runs the combined problem (engine/missing.py).
    masking: Masking | None = field(default=None, repr=False)
    # leaky_relu's and prelu's negative slope per output channel (None: the settings' slope)
    slopes: np.ndarray | None = None
    # The constant border's value per input channel, when an input normalisation was
    # folded into the weights (the raw value that normalises to cval); None: cval.
    pad_values: np.ndarray | None = None

    @property
    def weights(self) -> np.ndarray:
        """N×C×kh×kw float32, already flipped for true convolution."""
        return self.masking.weights if self.masking is not None else self.plan.problem.weights

    @property
    def geometry(self) -> Geometry:
        return self.plan.problem.geometry

    @property
    def stride(self) -> int:
        return self.settings.stride

    @property
    def cval(self) -> float | np.ndarray:
        """The value of the padded area's constant rows: a number, or one per channel."""
        return self.settings.cval if self.pad_values is None else self.pad_values

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """H'×W'×N of the layer's output (N: the expressions' channels, if any)."""
        channels = len(self.combine.names) if self.combine else int(self.weights.shape[0])
        return (self.geometry.out_height, self.geometry.out_width, channels)

    @property
    def band_rows(self) -> int:
        """Output rows per band of the plan: strips start at multiples of it."""
        return self.plan.band_rows

    @property
    def reach(self) -> int:
        """Input rows one output row reads: (kh − 1)·dilation + 1."""
        return (int(self.weights.shape[2]) - 1) * self.settings.dilation + 1

    def describe(self) -> str:
        """One line for --explain: the method, its estimate, its bands, and why."""
        described = self.plan.describe()
        if self.masking is not None:
            described += f"; {self.masking.rule.describe()}"
        if self.combine is not None:
            described += f"; then expressions give {counted_channels(len(self.combine.names))}"
        return described

    @cached_property
    def padded_rows(self) -> np.ndarray:
        """For each row of the padded input, the input row it shows (−1: the constant)."""
        height = self.in_shape[0]
        return border_indices(height, self.geometry.top, self.geometry.bottom, self.settings.border)

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
        if self.masking is not None:  # the mask's rows and outputs come beside them
            extra_in, extra_out = self.masking.working_values(channels)
            return 4 * (reading * width * (channels + extra_in)
                        + rows * out_width * (filters + extra_out))  # fmt: skip
        return 4 * (reading * width * channels + rows * out_width * filters)

    def strip_rows(self, budget: int) -> int:
        """The most output rows, in whole bands, whose strip fits ``budget`` bytes (≥ 1 band)."""
        one = self.strip_bytes(self.band_rows)
        per_band = max(self.strip_bytes(2 * self.band_rows) - one, 1)  # the halo is paid once
        bands = 1 + max(0, budget - one) // per_band
        return int(min(self.out_shape[0], bands * self.band_rows))

    def run(
        self,
        volume: np.ndarray,
        *,
        divisor: float = 1.0,
        out: np.ndarray | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """The whole output, activation applied, for an in-memory ``volume`` of ``in_shape``
        (into ``out`` if given). ``divisor`` divides the values as they are read (stored
        pixels need no float copy)."""
        if out is None:
            check_output_memory(self.geometry, self.out_shape[2])
            out = np.empty(self.out_shape, np.float32)

        def keep(first: int, band: np.ndarray) -> None:
            del first, band  # the bands are slices of ``out`` already

        self.run_bands(volume, keep, divisor=divisor, out=out, threads=threads)
        return out

    def run_bands(
        self,
        volume: np.ndarray,
        sink: BandSink,
        *,
        divisor: float = 1.0,
        out: np.ndarray | None = None,
        threads: int | None = None,
    ) -> None:
        """Each band of output rows, activation applied, to ``sink(first_row, band)``.

        ``sink`` is called from the worker threads, once per band, with an H_band×W'×N
        float32 array that is reused afterwards (copy what you keep) unless ``out`` is
        given, in which case the bands are its slices. Bands may complete in any order.
        """
        volume = self._check_volume(volume)
        if not (np.isfinite(divisor) and divisor > 0):
            raise ParameterError(f"divisor must be a positive number; got {divisor!r}")
        if out is not None and (out.shape != self.out_shape or out.dtype != np.float32):
            raise ParameterError(
                f"out must be a float32 array of shape {self.out_shape}; got {out.dtype} "
                f"{out.shape}"
            )
        try:
            self._run(volume, self.geometry, sink, float(divisor), out, threads)
        finally:  # a whole run is over: its matrices or spectra need not stay with the plan
            self.plan.kernel.release()

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
        # band loop then cuts the same bands and fills them with the same values as it
        # does for the whole volume.
        geometry = replace(self.geometry, top=0, bottom=0, out_height=last - first)
        out = np.empty((last - first, *self.out_shape[1:]), np.float32)

        def keep(first: int, band: np.ndarray) -> None:
            del first, band

        self._run(padded, geometry, keep, 1.0, out, threads)
        return out

    def _check_volume(self, volume: np.ndarray) -> np.ndarray:
        volume = as_volume(volume)
        if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
            raise ParameterError(f"volume must hold real numbers; got dtype {volume.dtype}")
        if volume.shape != self.in_shape:
            raise ParameterError(
                f"this layer was planned for a {self.in_shape} volume; got {volume.shape}"
            )
        return volume

    def _run(
        self,
        volume: np.ndarray,
        geometry: Geometry,
        sink: BandSink,
        divisor: float,
        out: np.ndarray | None,
        threads: int | None,
    ) -> None:
        self.plan.check_band()
        filtered, filtered_out = sink, out
        if self.combine is not None:
            filtered, filtered_out = self._combining(volume, geometry, sink, divisor, out), None
        if self.masking is not None:
            self._run_masked(self.masking, volume, geometry, filtered, divisor, filtered_out,
                             threads)  # fmt: skip
            return
        activation = self.settings.activation
        slopes = self.settings.slope if self.slopes is None else self.slopes

        def activate(first: int, band: np.ndarray) -> None:
            apply_activation(band, activation, slopes)
            filtered(first, band)

        run_bands(self.plan, volume, self.bias, geometry, self.settings.border, self.cval,
                  activate if activation != "none" else filtered, divisor=divisor,
                  out=filtered_out, threads=threads)  # fmt: skip

    def _combining(
        self,
        volume: np.ndarray,
        geometry: Geometry,
        sink: BandSink,
        divisor: float,
        out: np.ndarray | None,
    ) -> BandSink:
        """A sink for bands of the filters' outputs that runs the expressions on each.

        The layer's input at an output pixel is the input pixel under the kernel's centre
        tap (where ``identity`` has its 1; after --flip, where the flipped one has it),
        read through the border rule: exactly what a filter ``kernel: identity`` of the
        bank's size gives, without computing it.
        """
        combine = self.combine
        assert combine is not None
        _, _, kh, kw = self.weights.shape
        centre_y, centre_x = (kh - 1) // 2, (kw - 1) // 2
        if self.settings.flip:
            centre_y, centre_x = kh - 1 - centre_y, kw - 1 - centre_x
        stride, dilation = self.stride, self.settings.dilation
        height, width, _ = volume.shape
        border = self.settings.border
        rows = border_indices(height, geometry.top, geometry.bottom, border)[
            np.arange(geometry.out_height) * stride + centre_y * dilation
        ]
        cols = border_indices(width, geometry.left, geometry.right, border)[
            np.arange(geometry.out_width) * stride + centre_x * dilation
        ]
        channels = len(combine.names)

        def combined(first: int, band: np.ndarray) -> None:
            count = band.shape[0]
            inputs = gather_band(volume, rows[first : first + count], cols, self.cval,
                                 divisor=divisor)  # fmt: skip
            target = (
                out[first : first + count]
                if out is not None
                else Workspace.current().array("combined", (count, geometry.out_width, channels))
            )
            combine(band, inputs, target)
            sink(first, target)

        return combined

    def _run_masked(
        self,
        masking: Masking,
        volume: np.ndarray,
        geometry: Geometry,
        sink: BandSink,
        divisor: float,
        out: np.ndarray | None,
        threads: int | None,
    ) -> None:
        """The plan over the values and the mask (paired: twice, the values' output held
        for the mask's bands; else once over the combined volume), each band combined into
        the layer's; whole or strip, the same bits: the steps around the plan are per pixel."""
        cval = self.settings.cval  # one number: plan_layer refuses per-channel pad values
        parts = masking.volumes(volume, divisor, cval)
        cvals = masking.cvals(cval, volume.shape[2])
        filters = self.weights.shape[0]  # before any expressions
        slopes = self.settings.slope if self.slopes is None else self.slopes
        activation = self.settings.activation
        border = self.settings.border
        # Output row r reads input row r + offset of ``volume`` (preserve: same grid only).
        offset = self.geometry.top - geometry.top
        preserve = masking.rule.preserve and volume.dtype.kind == "f"
        held = None
        if masking.paired:
            held = out if out is not None else np.empty(
                (geometry.out_height, geometry.out_width, filters), np.float32
            )  # fmt: skip

            def hold(first: int, band: np.ndarray) -> None:
                del first, band  # the bands are slices of ``held``

            run_bands(self.plan, parts[0], None, geometry, border, cvals[0], hold, out=held,
                      threads=threads)  # fmt: skip

        def combine(first: int, band: np.ndarray) -> None:
            rows = band.shape[0]
            if held is not None:
                target = held[first : first + rows]
                bands = [target, band]
            else:
                target = (
                    out[first : first + rows]
                    if out is not None
                    else Workspace.current().array("missing.output", (rows, band.shape[1], filters))
                )
                bands = [band]
            here = (
                np.isnan(volume[first + offset : first + offset + rows, : band.shape[1]])
                if preserve
                else None
            )
            masking.combine(bands, target, self.bias, here)
            apply_activation(target, activation, slopes)
            sink(first, target)

        run_bands(self.plan, parts[-1], None, geometry, border, cvals[-1], combine,
                  threads=threads)  # fmt: skip


def counted_channels(number: int) -> str:
    return f"{number} channel{'' if number == 1 else 's'}"


def plan_layer(
    shape: tuple[int, ...],
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    settings: LayerSettings | None = None,
    *,
    threads: int | None = None,
    memory_limit: int | None = None,
    names: Sequence[str] | None = None,
    bank_name: str | None = None,
    combine: OutputCombine | None = None,
    missing: MissingRule | None = None,
    slopes: np.ndarray | None = None,
    pad_values: np.ndarray | None = None,
) -> LayerPlan:
    """Plan N×C×kh×kw ``weights`` (PyTorch's layout) over a volume of ``shape``.

    ``settings`` (default: the engine's) say how: padding, border, stride, ..., and the
    activation applied after the bias. ``threads`` and ``memory_limit`` are the engine's
    knobs; results never depend on them. The output's size is not checked against this
    machine's memory here: a plan may be run a strip at a time. ``combine`` runs
    expressions after the filters; ``names`` are then its output channels. ``missing``
    (see :meth:`convvol.Settings.missing_rule`) makes NaN in the volume missing pixels,
    filtered by its rule (:mod:`convvol.engine.missing`); without it NaN are plain values.
    ``slopes`` (N values) are ``prelu``'s per output channel; ``pad_values`` (C values) fill the
    constant border per input channel instead of ``settings.cval``.
    """
    settings = settings or LayerSettings()
    if len(shape) != 3:
        raise ParameterError(f"volume must be H×W×C (3-D); got shape {tuple(shape)}")
    height, width, channels = (int(size) for size in shape)
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weights.shape}")
    if weights.shape[1] != channels:
        raise ParameterError(
            f"the filters have {weights.shape[1]} layers but the volume has {channels} channels"
        )
    if 0 in weights.shape or 0 in (height, width, channels):
        raise ParameterError(
            f"empty volume or weights (volume {tuple(shape)}, weights {weights.shape})"
        )
    n_filters, _, kh, kw = weights.shape
    if bias is not None:
        bias = np.asarray(bias, np.float32).reshape(-1)
        if bias.shape != (n_filters,):
            raise ParameterError(f"bias must hold {n_filters} values; got {bias.size}")
    geometry = plan_geometry(height, width, kh, kw, padding=settings.padding,
                             stride=settings.stride, dilation=settings.dilation)  # fmt: skip
    weights = finite_weights(weights)
    if settings.flip:
        weights = weights[:, :, ::-1, ::-1]
    masking = None
    planned, planned_channels = weights, channels
    if missing is not None:
        if pad_values is not None:
            raise ParameterError(
                "missing pixels or alpha with an input normalisation and --border constant "
                "are not supported together",
                hint="use another --border, or fill the missing pixels first (--missing fill "
                "needs no normalised border either way)",
            )
        check_preserve(missing, settings.padding, settings.stride)
        masking = prepare_masking(np.ascontiguousarray(weights), missing)
        planned, planned_channels = masking.combined, masking.planned_channels
    plan = plan_convolution(
        (height, width, planned_channels), planned, geometry, stride=settings.stride,
        dilation=settings.dilation, method=settings.method, threads=threads,
        memory_limit=memory_limit,
    )  # fmt: skip
    if combine is not None:
        names = combine.names
    return LayerPlan(
        in_shape=(height, width, channels),
        names=tuple(names) if names is not None else tuple(map(str, range(n_filters))),
        bias=bias,
        settings=settings,
        plan=plan,
        bank_name=bank_name,
        combine=combine,
        masking=masking,
        slopes=None if slopes is None else np.asarray(slopes, np.float32).reshape(n_filters),
        pad_values=(
            None if pad_values is None else np.asarray(pad_values, np.float32).reshape(channels)
        ),
    )


def convolve(
    volume: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    padding: Padding = "same",
    border: str = "reflect",
    cval: float = 0.0,
    stride: int = 1,
    dilation: int = 1,
    flip: bool = False,
    method: str = "auto",
    threads: int | None = None,
    memory_limit: int | None = None,
) -> np.ndarray:
    """Convolve an H×W×C volume with a bank of N filters; return an H'×W'×N float32 volume.

    Parameters
    ----------
    volume : ndarray
        H×W×C (an H×W array is taken as C = 1). Computed in float32.
    weights : ndarray
        N×C×kh×kw, PyTorch's layout: one kh×kw layer per input channel per filter.
    bias : ndarray, optional
        N values added to the output channels.
    padding : {'same', 'valid', 'full'} or int
        'same' keeps H×W at stride 1 (for even kernels the extra row and column go at the
        bottom and right, as in PyTorch; with stride s the output is ceil(H/s)×ceil(W/s));
        'valid' uses no padding; 'full' pads the kernel's whole reach; an integer pads that
        many pixels on every side.
    border : {'reflect', 'symmetric', 'edge', 'wrap', 'constant'}
        How the padded area is filled, with numpy.pad's meanings; ``cval`` for 'constant'.
    stride, dilation : int
        Step between outputs and between kernel taps (≥ 1).
    flip : bool
        False (default) gives cross-correlation, as in CNNs; True rotates each layer 180°
        in space (true convolution). The channel axis is never flipped.
    method : {'auto', 'direct', 'gemm', 'fft', 'separable'}
        How to compute; 'auto' picks by a cost model (see :func:`plan_convolution`).
        Every method gives the same result to float32 rounding.
    threads : int, optional
        Worker threads for row bands (default: every core this process may use).
    memory_limit : int, optional
        Bytes of working memory beyond the input and output (default 256 MiB).

    Examples
    --------
    A 3×3 impulse through the identity kernel comes back unchanged:

    >>> import numpy as np
    >>> impulse = np.zeros((3, 3, 1), np.float32); impulse[1, 1] = 1
    >>> identity = np.zeros((1, 1, 3, 3)); identity[0, 0, 1, 1] = 1
    >>> convolve(impulse, identity)[..., 0]
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    volume = as_volume(volume)
    settings = LayerSettings(padding=padding, border=border, cval=cval, stride=stride,
                             dilation=dilation, flip=flip, method=method)  # fmt: skip
    # The output's size from shapes alone, refused before any planning or allocation.
    weight_shape = np.shape(weights)
    if len(weight_shape) != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weight_shape}")
    geometry = plan_geometry(volume.shape[0], volume.shape[1], *weight_shape[2:],
                             padding=padding, stride=stride, dilation=dilation)  # fmt: skip
    check_output_memory(geometry, weight_shape[0])
    layer = plan_layer(volume.shape, weights, bias, settings, threads=threads,
                       memory_limit=memory_limit)  # fmt: skip
    return layer.run(volume)


def convolve_bands(
    volume: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    sink: BandSink,
    divisor: float = 1.0,
    out: np.ndarray | None = None,
    padding: Padding = "same",
    border: str = "reflect",
    cval: float = 0.0,
    stride: int = 1,
    dilation: int = 1,
    flip: bool = False,
    method: str = "auto",
    threads: int | None = None,
    memory_limit: int | None = None,
) -> Geometry:
    """:func:`convolve`, streamed: each band of output rows goes to ``sink`` when done.

    ``sink(first_row, band)`` is called from the worker threads, once per band, with an
    H_band×W'×N float32 array that is reused afterwards (copy what you keep) unless
    ``out`` is given, in which case the bands are its slices. Bands cover the output
    rows in order of ``first_row`` but may complete in any order. ``divisor`` divides
    the volume's values in float32 as they are read (what :func:`convvol.read_volume`
    does to stored pixels), so integer pixels need no float copy of the whole image.
    Peak memory is the input, ``out`` if given, and the working set. Returns the
    output geometry.
    """
    volume = as_volume(volume)
    settings = LayerSettings(padding=padding, border=border, cval=cval, stride=stride,
                             dilation=dilation, flip=flip, method=method)  # fmt: skip
    layer = plan_layer(volume.shape, weights, bias, settings, threads=threads,
                       memory_limit=memory_limit)  # fmt: skip
    layer.run_bands(volume, sink, divisor=divisor, out=out)
    return layer.geometry
