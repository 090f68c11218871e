"""``direct``: the taps as they are, without the zeros of blocks. Two ways, chosen by cost:

- *per-tap sums* for banks whose filters each read one channel, at stride 1: every tap is
  a shifted view of the interleaved band, and taps that share a weight vector are summed
  before one product (a 3×3 sharpen takes 5 passes, not 17);
- *planar vertical Toeplitz products* otherwise: per chunk of output rows and group of
  filters, one product whose right-hand side stacks the shifted input rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convvol.engine import cost
from convvol.engine.geometry import BandShape, rows_span
from convvol.engine.weights import channels_read
from convvol.engine.workspace import Workspace, add_bias

NAME = "direct"
MAX_TAPS = 64  # more taps than this: a pass each would never beat the products


def estimate(problem: cost.Problem, cheapest: float) -> cost.Estimate:
    """The cheaper of per-tap sums (when the bank allows them) and Toeplitz products."""
    del cheapest
    shape = problem.shape
    weights = problem.weights
    n_filters, channels, kh, kw = weights.shape
    outputs, threads = problem.outputs, problem.threads
    groups = direct_groups(weights)
    plan = tap_plan(weights) if problem.stride == 1 and kh * kw <= MAX_TAPS else None
    taps_seconds = (
        plan.passes * outputs * n_filters / (cost.TAPS_RATE * threads) if plan else float("inf")
    )
    toeplitz_seconds = (
        direct_flops(groups, shape, outputs) / cost.DIRECT_RATE
        + direct_copies(groups, shape, outputs) / cost.COPY_RATE
    ) / threads
    if plan is not None and taps_seconds <= toeplitz_seconds:
        # the band, its channels picked out in filter order, and the output, per row
        width = problem.padded_width
        expanded = width * n_filters if plan.channels is not None else 0
        row_bytes = 4 * (width * channels + expanded + shape.out_width * n_filters)
        return cost.Estimate(taps_seconds, row_bytes, plan)
    # the stacked shifted rows and the results, per output row; whole chunks per band,
    # so the products are the same whatever the bands
    chunk = direct_chunk(shape)
    span = rows_span(chunk, shape)
    row_bytes = 4 * shape.out_width * (kw * channels * span // chunk + 2 * n_filters)
    return cost.Estimate(toeplitz_seconds, row_bytes, groups, row_multiple=chunk)


@dataclass(frozen=True, eq=False)
class Kernel:
    """Per-tap sums over the interleaved band (``taps``), or planar vertical Toeplitz
    products per group of filters (``groups``, which build their matrices on first use)."""

    shape: BandShape
    taps: Taps | None = None
    groups: list[DirectGroup] | None = field(default=None, repr=False)
    columns = 0

    @property
    def planar(self) -> bool:
        return self.taps is None

    @property
    def blas(self) -> bool:
        return self.taps is None  # Toeplitz products; per-tap sums are NumPy's own loops

    def ready(self) -> None:
        """Nothing to build up front: a group's matrix depends on the chunk's rows."""

    def release(self) -> None:
        """The groups' matrices are a few rows of weights: kept."""

    def detail(self) -> str:
        if self.taps is not None:
            return f" (per-tap sums, {self.taps.passes} passes)"
        return " (Toeplitz products)"

    def run(self, band: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> None:
        if self.taps is not None:
            taps(band, self.taps, self.shape, out, bias)
        else:
            assert self.groups is not None
            direct(band, self.groups, self.shape, out, bias)


def prepare(problem: cost.Problem, setup: Taps | list[DirectGroup]) -> Kernel:
    """The way the estimate chose."""
    if isinstance(setup, Taps):
        return Kernel(problem.shape, taps=setup)
    return Kernel(problem.shape, groups=setup)


def direct_chunk(shape: BandShape) -> int:
    """Output rows per product of :func:`direct`: a few more than the kernel is tall.

    Taller chunks multiply more zeros ((chunk + kh − 1)/kh times the minimal work), shorter
    ones give BLAS too few rows; measured best on 3×3 to 7×7 kernels.
    """
    return max(4, shape.kernel_height + 1)


@dataclass(frozen=True)
class DirectGroup:
    """Filters that read the same channels, and their stacked vertical Toeplitz matrix."""

    filters: tuple[int, ...]
    channels: tuple[int, int]  # the range [first, last) of channels they read
    layers: np.ndarray  # len(filters) × (last − first) × kh × kw
    matrices: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def matrix(self, count: int, shape: BandShape) -> np.ndarray:
        """The stacked Toeplitz matrix for chunks of ``count`` rows, built once per count."""
        if count not in self.matrices:  # a race only builds the same matrix twice
            self.matrices[count] = _direct_matrix(self.layers, count, shape)
        return self.matrices[count]


def direct_groups(weights: np.ndarray) -> list[DirectGroup]:
    """Group filters by the channels their non-zero layers touch (depthwise: one each).

    A group spans the range from its first to its last channel, so each group's product
    reads one contiguous slice of the band's stacked planes.
    """
    used = channels_read(weights)
    by_range: dict[tuple[int, int], list[int]] = {}
    for n, row in enumerate(used):
        nonzero = np.flatnonzero(row)
        span = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 1)
        by_range.setdefault(span, []).append(n)
    return [
        DirectGroup(tuple(filters), span, weights[filters, span[0] : span[1]].astype(np.float32))
        for span, filters in sorted(by_range.items())
    ]


def direct_flops(groups: list[DirectGroup], shape: BandShape, outputs: int) -> float:
    """Multiply-adds of :func:`direct`, zeros of the Toeplitz matrices included."""
    chunk = direct_chunk(shape)
    span = rows_span(chunk, shape)
    per_output = sum(
        2 * len(g.filters) * (g.channels[1] - g.channels[0]) * shape.kernel_width * span
        for g in groups
    )
    return float(per_output) * outputs


def direct_copies(groups: list[DirectGroup], shape: BandShape, outputs: int) -> float:
    """Values :func:`direct` copies into its stacks of shifted rows: kw·span per channel
    and chunk of rows. For depthwise banks this copying costs as much as the products."""
    chunk = direct_chunk(shape)
    span = rows_span(chunk, shape)
    used = max(g.channels[1] for g in groups) - min(g.channels[0] for g in groups)
    return float(used * shape.kernel_width * span) / chunk * outputs


def _direct_matrix(layers: np.ndarray, count: int, shape: BandShape) -> np.ndarray:
    """(G·count) × (S·kw·span): row (g, y) holds filter g's taps at input rows y·s + i·d."""
    n_filters, channels, kh, kw = layers.shape
    span = rows_span(count, shape)
    matrix = np.zeros((n_filters, count, channels, kw, span), np.float32)
    taps = np.arange(kh) * shape.dilation
    for y in range(count):
        matrix[:, y, :, :, y * shape.stride + taps] = layers.transpose(2, 0, 1, 3)
    return matrix.reshape(n_filters * count, channels * kw * span)


def direct(
    planes: np.ndarray,
    groups: list[DirectGroup],
    shape: BandShape,
    out: np.ndarray,
    bias: np.ndarray | None,
) -> None:
    """Planar vertical Toeplitz products, no im2col: for each chunk of output rows and each
    group of filters, (G·chunk × S·kw·span) @ (S·kw·span × W'), whose right-hand side
    stacks, per channel and kernel column, the input rows the chunk reads, shifted.

    ``planes`` is the band as C × rows × cols. Filters only multiply the channels they
    read, so depthwise banks do no work on zero layers.
    """
    rows, width, _ = out.shape
    step, reach = shape.stride, shape.dilation
    kh, kw = shape.kernel_height, shape.kernel_width
    chunk = min(direct_chunk(shape), rows)
    whole = rows // chunk * chunk
    pieces = [(0, whole // chunk, chunk)]
    if whole < rows:
        pieces.append((whole, 1, rows - whole))
    used = (min(g.channels[0] for g in groups), max(g.channels[1] for g in groups))
    scratch = Workspace.current()
    for first, chunks, count in pieces:
        span = (count - 1) * step + (kh - 1) * reach + 1
        stack = scratch.array("direct.stack", (chunks, used[1] - used[0], kw, span, width))
        for c in range(*used):
            plane = planes[c, first * step :]
            row_stride, pixel_stride = plane.strides
            for j in range(kw):
                stack[:, c - used[0], j] = as_strided(
                    plane[:, j * reach :],
                    shape=(chunks, span, width),
                    strides=(row_stride * step * count, row_stride, pixel_stride * step),
                    writeable=False,
                )
        target = out[first : first + chunks * count].reshape(chunks, count, width, -1)
        for group in groups:
            lo, hi = group.channels[0] - used[0], group.channels[1] - used[0]
            matrix = group.matrix(count, shape)
            result = scratch.array("direct.result", (chunks, matrix.shape[0], width))
            np.matmul(matrix, stack[:, lo:hi].reshape(chunks, -1, width), out=result)
            result = result.reshape(chunks, len(group.filters), count, width)
            for g, n in enumerate(group.filters):
                target[..., n] = result[:, g]
    add_bias(out, bias)


_TAP_CHUNK_VALUES = 1 << 17  # values per pass of ``taps``: 512 KiB of float32, in cache


@dataclass(frozen=True)
class Taps:
    """A bank whose filters each read one channel, as groups of taps that share weights.

    ``channels[n]`` is the channel filter n reads (None: filter n reads channel n). Each
    group holds the N weights of its taps (one per filter) and their (row, column)
    offsets, so a sharpen kernel's four −1 taps cost one sum and one subtraction.
    """

    channels: tuple[int, ...] | None
    groups: tuple[tuple[np.ndarray, tuple[tuple[int, int], ...]], ...]

    @property
    def passes(self) -> int:
        """Whole passes over the output: the additions, the products and the copy."""
        sums = sum(len(offsets) - 1 for _, offsets in self.groups)
        # the first group is copied or multiplied in; later ones added (2 passes if scaled)
        later = sum(1 if _unit(vector) else 2 for vector, _ in self.groups[1:])
        return sums + 1 + later + (self.channels is not None)


def _unit(vector: np.ndarray) -> bool:
    """True if every weight is 1 or every weight is −1: an addition or subtraction."""
    return bool(np.all(vector == 1) or np.all(vector == -1))


def tap_plan(weights: np.ndarray) -> Taps | None:
    """Group a bank's taps by their weights, or None if some filter reads two channels."""
    n_filters, channels, kh, kw = weights.shape
    used = channels_read(weights)
    if (used.sum(axis=1) > 1).any():
        return None
    reads = tuple(int(np.argmax(row)) for row in used)  # an all-zero filter: channel 0
    layers = weights[np.arange(n_filters), list(reads)].astype(np.float32)  # N × kh × kw
    grouped: dict[bytes, tuple[np.ndarray, list[tuple[int, int]]]] = {}
    for i in range(kh):
        for j in range(kw):
            vector = layers[:, i, j]
            if vector.any():
                grouped.setdefault(vector.tobytes(), (vector.copy(), []))[1].append((i, j))
    identity = n_filters == channels and reads == tuple(range(channels))
    # A scaled group first: its product is the first write, where later ones would need a
    # product and an addition (sharpen: 5·centre, then −(sum of four): 5 passes, not 6).
    ordered = sorted(grouped.values(), key=lambda group: _unit(group[0]))
    groups = tuple((vector, tuple(offsets)) for vector, offsets in ordered)
    return Taps(None if identity else reads, groups)


def taps(
    band: np.ndarray, plan: Taps, shape: BandShape, out: np.ndarray, bias: np.ndarray | None
) -> None:
    """Per-tap accumulation for stride 1: out = Σ_groups w · Σ_taps (shifted band).

    ``band`` is rows × cols × C, interleaved as the image is; every shifted copy is a
    view, and each pass runs over row-long runs of a cache-sized chunk of output rows,
    every filter at once (the weights are tiled along the row). For depthwise banks
    this does only the useful work, where BLAS products would multiply mostly zeros.
    """
    rows, width, n_out = out.shape
    reach = shape.dilation
    source = band if plan.channels is None else band[:, :, list(plan.channels)]
    flat = source.reshape(source.shape[0], -1)
    scratch = Workspace.current()
    # A caller's ``out`` may be a view whose rows are not contiguous: sum into a scratch
    # copy then (reshaping such a view would copy it, and the sums would be lost).
    in_place = out.flags.c_contiguous
    result = out if in_place else scratch.array("taps.result", out.shape, out.dtype)
    out_rows = result.reshape(rows, width * n_out)
    run = width * n_out
    chunk = max(1, min(rows, _TAP_CHUNK_VALUES // run))
    total_buffer = scratch.array("taps.sum", (chunk, run), out.dtype)
    product_buffer = scratch.array("taps.product", (chunk, run), out.dtype)
    # A weight shared by every filter is a Python number (float, or int for integer taps).
    weights = [
        (vector[0].item() if np.all(vector == vector[0]) else np.tile(vector, width), offsets)
        for vector, offsets in plan.groups
    ]
    if not weights:
        result[...] = 0
    for first in range(0, rows, chunk):
        last = min(first + chunk, rows)
        acc = out_rows[first:last]

        def view(offset: tuple[int, int], first: int = first, last: int = last) -> np.ndarray:
            i, j = offset
            column = j * reach * n_out
            return flat[first + i * reach : last + i * reach, column : column + run]

        for g, (weight, offsets) in enumerate(weights):
            total = view(offsets[0])
            if len(offsets) > 1:
                total = np.add(total, view(offsets[1]), out=total_buffer[: last - first])
                for offset in offsets[2:]:
                    total += view(offset)
            scalar = not isinstance(weight, np.ndarray)
            if g == 0:
                if scalar and weight == 1:
                    np.copyto(acc, total)
                else:
                    np.multiply(total, weight, out=acc)
            elif scalar and weight == 1:
                acc += total
            elif scalar and weight == -1:
                acc -= total
            else:
                acc += np.multiply(total, weight, out=product_buffer[: last - first])
    if not in_place:
        out[...] = result
    add_bias(out, bias)
