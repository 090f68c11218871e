"""The ways of computing one band of output rows, each exact to float32 rounding.

Every method takes a *band*: the input rows (already padded by the border rule, and
wide enough for its blocks) that one stretch of output rows needs, and writes those
output rows. :mod:`convvol.engine` cuts the image into bands, runs them on a thread
pool, and chooses the method.

``gemm`` is the workhorse. A convolution with C channels and N filters is, per output
pixel, a dot product of length kh·kw·C, but BLAS is slow on such skinny products
(M×27 by 27×4 runs at a few GFLOP/s). So each GEMM row holds a *block* of B neighbouring
output pixels and the weights become a block-Toeplitz matrix: K = kh·span·C and
N' = B·N, where span = (B−1)·s + (kw−1)·d + 1 input pixels feed one block. The zeros
cost span/kw times the minimal work and buy shapes BLAS runs an order of magnitude
faster. B = 1 is plain im2col.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import as_strided


class Workspace:
    """Scratch arrays reused from band to band, one set per thread.

    Fresh multi-megabyte arrays cost a page fault per 4 KiB on first touch, which on
    this class of machine took longer than the arithmetic of a band (measured: a
    separable band ran in 3.8 ms on reused buffers, 11.6 ms on new ones). Between calls
    :func:`trim_workspaces` keeps at most a few MiB per thread.
    """

    _lock = threading.Lock()
    _by_thread: ClassVar[dict[int, Workspace]] = {}

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    @classmethod
    def current(cls) -> Workspace:
        """This thread's workspace."""
        ident = threading.get_ident()
        with cls._lock:
            return cls._by_thread.setdefault(ident, cls())

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """An uninitialised array of ``shape``, valid until the next request for ``name``."""
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = np.empty(max(size, 1), dtype)
            self.buffers[name] = buffer
        return buffer[:size].reshape(shape)


def trim_workspaces(keep_bytes: int = 32 * 2**20) -> None:
    """Free scratch arrays beyond ``keep_bytes`` per thread, and those of ended threads."""
    alive = {thread.ident for thread in threading.enumerate()}
    with Workspace._lock:
        for ident in list(Workspace._by_thread):
            if ident not in alive:
                del Workspace._by_thread[ident]
                continue
            buffers = Workspace._by_thread[ident].buffers
            kept = 0
            for name in sorted(buffers, key=lambda n: buffers[n].nbytes):
                kept += buffers[name].nbytes
                if kept > keep_bytes:
                    del buffers[name]


def add_bias(out: np.ndarray, bias: np.ndarray | None) -> None:
    """out += bias over an H×W×N band, with inner loops a whole row long (broadcasting
    the N values directly gives loops of length N: measured 10× slower for N = 3)."""
    if bias is None or not bias.any():
        return
    if out.strides[1:] != (out.shape[2] * out.itemsize, out.itemsize):  # rows not contiguous
        out += bias
        return
    rows = out.reshape(out.shape[0], -1)  # a view: each row's W'×N values are contiguous
    rows += np.tile(bias, out.shape[1])


@dataclass(frozen=True)
class BandShape:
    """How output rows map to band rows and columns, shared by all methods."""

    out_width: int  # W' of the whole output
    stride: int
    dilation: int
    kernel_height: int
    kernel_width: int


def rows_span(count: int, shape: BandShape) -> int:
    """Input rows that ``count`` consecutive output rows read (the vertical twin of
    :func:`block_span`)."""
    return (count - 1) * shape.stride + (shape.kernel_height - 1) * shape.dilation + 1


def channels_read(weights: np.ndarray) -> np.ndarray:
    """N × C: whether filter n has a non-zero layer on channel c."""
    return np.abs(weights).sum(axis=(2, 3)) > 0


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
    result = out if in_place else scratch.array("taps.result", out.shape)
    out_rows = result.reshape(rows, width * n_out)
    run = width * n_out
    chunk = max(1, min(rows, _TAP_CHUNK_VALUES // run))
    total_buffer = scratch.array("taps.sum", (chunk, run))
    product_buffer = scratch.array("taps.product", (chunk, run))
    weights = [
        (float(vector[0]) if np.all(vector == vector[0]) else np.tile(vector, width), offsets)
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
            if g == 0:
                if isinstance(weight, float) and weight == 1.0:
                    np.copyto(acc, total)
                else:
                    np.multiply(total, weight, out=acc)
            elif isinstance(weight, float) and weight == 1.0:
                acc += total
            elif isinstance(weight, float) and weight == -1.0:
                acc -= total
            else:
                acc += np.multiply(total, weight, out=product_buffer[: last - first])
    if not in_place:
        out[...] = result
    add_bias(out, bias)


def block_span(block: int, shape: BandShape) -> int:
    """Input pixels along a row that feed ``block`` neighbouring outputs."""
    return (block - 1) * shape.stride + (shape.kernel_width - 1) * shape.dilation + 1


def blocks_per_row(block: int, out_width: int) -> int:
    return -(-out_width // block)


def band_width(block: int, shape: BandShape) -> int:
    """Columns a band must have for ``gemm`` with this block (extra ones are ignored)."""
    blocks = blocks_per_row(block, shape.out_width)
    return (blocks - 1) * block * shape.stride + block_span(block, shape)


def toeplitz_weights(weights: np.ndarray, block: int, shape: BandShape) -> np.ndarray:
    """The (kh·span·C) × (B·N) matrix that maps a block's input window to its B outputs."""
    n_filters, channels, kh, kw = weights.shape
    span = block_span(block, shape)
    matrix = np.zeros((kh, span, channels, block, n_filters), np.float32)
    layers = weights.transpose(2, 3, 1, 0)  # kh×kw×C×N
    for q in range(block):
        for j in range(kw):
            matrix[:, q * shape.stride + j * shape.dilation, :, q, :] = layers[:, j]
    return matrix.reshape(kh * span * channels, block * n_filters)


def gemm(
    band: np.ndarray,
    matrix: np.ndarray,
    block: int,
    shape: BandShape,
    out: np.ndarray,
    bias: np.ndarray | None,
) -> None:
    """Block-Toeplitz GEMM: gather each block's input windows (im2row), one BLAS product.

    ``band`` has at least :func:`band_width` columns; ``out`` receives the rows it holds.
    """
    channels = band.shape[2]
    rows = out.shape[0]
    blocks = blocks_per_row(block, shape.out_width)
    span = block_span(block, shape)
    kh = shape.kernel_height
    gathered = Workspace.current().array("gemm.windows", (rows, blocks, kh, span * channels))
    row_stride, pixel_stride, item = band.strides
    for i in range(kh):
        start = band[i * shape.dilation :]
        # Rows of the view overlap (a block's window is wider than its step): as_strided
        # only reads, and the copy below makes the matrix BLAS needs.
        windows = as_strided(
            start,
            shape=(rows, blocks, span * channels),
            strides=(row_stride * shape.stride, pixel_stride * block * shape.stride, item),
            writeable=False,
        )
        gathered[:, :, i] = windows
    products = gathered.reshape(rows * blocks, kh * span * channels)
    n_filters = out.shape[2]
    if blocks * block == shape.out_width and out.flags.c_contiguous:
        target = out.reshape(rows * blocks, block * n_filters)
        np.matmul(products, matrix, out=target)
    else:
        result = Workspace.current().array("gemm.result", (rows * blocks, block * n_filters))
        np.matmul(products, matrix, out=result)
        out[...] = result.reshape(rows, blocks * block, n_filters)[:, : shape.out_width]
    add_bias(out, bias)


def fast_length(minimum: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ ``minimum``: sizes pocketfft transforms fastest."""
    best = 2 * minimum
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < minimum:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def fft_spectra(weights: np.ndarray, fft_shape: tuple[int, int], dilation: int) -> np.ndarray:
    """Conjugate spectra of the (dilated) layers, N×C×Fh×(Fw/2+1): correlation by FFT.

    Zero layers (a depthwise bank's off-diagonal) are not transformed: their spectra are 0.
    """
    n_filters, channels, kh, kw = weights.shape
    used = np.nonzero(channels_read(weights))
    dilated = np.zeros((len(used[0]), (kh - 1) * dilation + 1, (kw - 1) * dilation + 1))
    dilated[:, ::dilation, ::dilation] = weights[used]
    spectra = np.zeros((n_filters, channels, fft_shape[0], fft_shape[1] // 2 + 1), np.complex128)
    spectra[used] = np.conj(np.fft.rfft2(dilated, s=fft_shape, axes=(1, 2)))
    return spectra


def fft(
    band: np.ndarray,
    spectra: np.ndarray,
    fft_shape: tuple[int, int],
    shape: BandShape,
    out: np.ndarray,
    bias: np.ndarray | None,
) -> None:
    """Overlap-save in column tiles: each tile's circular cross-correlation, of which the
    valid part is exact.

    Band rows and tile columns fit ``fft_shape``, so wrapped-around terms fall only on
    positions outside the output. Transforms run in float64: NumPy's float32 FFT is about
    three times slower here, and float64 keeps large kernels exact to float32 rounding.
    """
    rows_in, cols_in, channels = band.shape
    rows, step = out.shape[0], shape.stride
    reach = (shape.kernel_width - 1) * shape.dilation + 1
    tile = (fft_shape[1] - reach) // step + 1  # output columns per transform
    planes = Workspace.current().array("fft.planes", (channels, *fft_shape), np.float64)
    planes[:, rows_in:] = 0
    for first in range(0, shape.out_width, tile):
        count = min(tile, shape.out_width - first)
        start = first * step
        stop = min(cols_in, start + (count - 1) * step + reach)
        planes[:, :rows_in, : stop - start] = band[:, start:stop].transpose(2, 0, 1)
        planes[:, :rows_in, stop - start :] = 0
        transformed = np.fft.rfft2(planes, axes=(1, 2))
        products = np.einsum("chw,nchw->nhw", transformed, spectra)
        correlation = np.fft.irfft2(products, s=fft_shape, axes=(1, 2))  # N × Fh × Fw
        valid = correlation[:, : (rows - 1) * step + 1 : step, : (count - 1) * step + 1 : step]
        out[:, first : first + count] = valid.transpose(1, 2, 0)
    add_bias(out, bias)


@dataclass(frozen=True)
class Separated:
    """A bank as sums of outer products ``u vᵀ`` of its layers (by SVD), ready to run.

    ``columns[c]`` holds channel c's distinct unit column vectors (Q_c × kh); for each
    filter, ``terms[n]`` lists (channel, column index) pairs and ``rows[n]`` the matching
    horizontal block-Toeplitz matrix (terms·span × B). Zero layers have no terms, so
    depthwise and channel-selective banks cost only what they use.
    """

    columns: dict[int, np.ndarray]
    terms: list[list[tuple[int, int]]]
    rows: list[np.ndarray]
    block: int
    vertical: dict[tuple[int, int], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )

    def vertical_matrix(self, channel: int, count: int, shape: BandShape) -> np.ndarray:
        """Channel's vertical Toeplitz matrix for ``count`` rows, built once per count."""
        key = (channel, count)
        if key not in self.vertical:  # a race only builds the same matrix twice
            self.vertical[key] = _vertical_toeplitz(self.columns[channel], count, shape)
        return self.vertical[key]

    @cached_property
    def stacked_rows(self) -> np.ndarray:
        """N × 1 × span × B: every filter's horizontal matrix (see one_each)."""
        return np.stack(self.rows)[:, np.newaxis]

    @cached_property
    def one_each(self) -> tuple[int, int] | None:
        """(first channel, channel count) if the used channels are consecutive, each with
        one column vector, and every filter is one term on a channel of its own, in
        channel order (a depthwise blur): then each pass runs as one stacked product."""
        channels = sorted(self.columns)
        if not channels or any(len(self.columns[c]) != 1 for c in channels):
            return None
        if channels != list(range(channels[0], channels[0] + len(channels))):
            return None
        if self.terms != [[(c, 0)] for c in channels]:
            return None
        return channels[0], len(channels)

    def stacked_vertical(self, count: int, shape: BandShape) -> np.ndarray:
        """C × 1 × count × span: every used channel's vertical matrix (see one_each)."""
        key = (-1, count)
        if key not in self.vertical:
            matrices = [self.vertical_matrix(c, count, shape) for c in sorted(self.columns)]
            self.vertical[key] = np.stack(matrices)[:, np.newaxis]
        return self.vertical[key]

    @property
    def rank(self) -> int:
        """Outer products in all: the number of horizontal passes."""
        return sum(len(terms) for terms in self.terms)


def rank_one_factors(
    layers: np.ndarray, tolerance: float = 1e-7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a stack of layers (..., kh, kw): (shown, u, r) with each layer = u·rᵀ where
    ``shown``, by the SVD's own criterion (σ₁ ≤ tolerance·σ₀), in O(kh·kw) per layer and
    without an SVD. Where ``shown`` is False the layer may still be rank one: the SVD
    decides.

    u is the layer's largest column, normalised, and r = uᵀ·layer. Since u is a unit
    vector, ‖r‖ ≤ σ₀; since u·rᵀ has rank one, σ₁ ≤ ‖layer − u·rᵀ‖₂, which is at most
    both the Frobenius norm and √(‖·‖₁‖·‖∞) of the residual. Each layer is first scaled
    by its largest magnitude (the criterion does not depend on scale), so tiny weights do
    not underflow. A 1025×1025 Gaussian is checked in milliseconds where its SVD takes a
    third of a second.
    """
    with np.errstate(all="ignore"):  # non-finite layers are simply not shown
        return _rank_one_factors(np.asarray(layers, np.float64), tolerance)


def _rank_one_factors(
    layers: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    peak = np.abs(layers).max(axis=(-2, -1), keepdims=True)
    usable = np.isfinite(peak) & (peak > 0)
    scaled = layers / np.where(usable, peak, 1.0)
    largest = np.argmax(np.abs(scaled).sum(axis=-2), axis=-1)
    column = np.take_along_axis(scaled, largest[..., np.newaxis, np.newaxis], axis=-1)[..., 0]
    length = np.linalg.norm(column, axis=-1, keepdims=True)
    u = column / np.where(length > 0, length, 1.0)
    r = np.einsum("...i,...ij->...j", u, scaled)
    residual = np.abs(scaled - u[..., :, np.newaxis] * r[..., np.newaxis, :])
    bound = np.minimum(
        np.sqrt((residual * residual).sum(axis=(-2, -1))),
        np.sqrt(residual.sum(axis=-2).max(axis=-1) * residual.sum(axis=-1).max(axis=-1)),
    )
    shown = usable[..., 0, 0] & (bound <= tolerance * np.linalg.norm(r, axis=-1))
    return shown, u, r * peak[..., 0]


_RANK_CHUNK_VALUES = 1 << 20  # weights per batched rank-one check: 8 MiB of float64


def svd_flops(kernel_height: int, kernel_width: int) -> float:
    """Work of one layer's singular values (LAPACK's bidiagonalisation, 4mn² − 4n³/3),
    plus what a call costs whatever the size: a batch of 262 144 3×3 layers took 0.3 s,
    about 5 000 flops' worth each at the planner's rate."""
    m, n = max(kernel_height, kernel_width), min(kernel_height, kernel_width)
    return 4.0 * m * n * n - 4.0 * n**3 / 3 + 5000.0


def layer_ranks(
    weights: np.ndarray, tolerance: float = 1e-7, svd_budget: float = math.inf
) -> np.ndarray:
    """N×C numerical ranks of the layers: singular values above tolerance·σ₀.

    Zero layers are rank 0 and rank-one layers are recognised without an SVD (see
    :func:`rank_one_factors`); the rest take one batched SVD, unless that would cost
    more than ``svd_budget`` flops, when they are assumed of full rank (min(kh, kw)): a
    planner need not spend longer looking for a shortcut than the plain way takes.
    """
    n_filters, channels, kh, kw = weights.shape
    ranks = np.zeros((n_filters, channels), np.int64)
    used = np.nonzero(channels_read(weights))
    shown = np.zeros(len(used[0]), bool)
    chunk = max(1, _RANK_CHUNK_VALUES // (kh * kw))
    for first in range(0, len(shown), chunk):
        batch = tuple(index[first : first + chunk] for index in used)
        shown[first : first + len(batch[0])] = rank_one_factors(weights[batch], tolerance)[0]
    ranks[tuple(index[shown] for index in used)] = 1
    rest = tuple(index[~shown] for index in used)
    if rest[0].size and rest[0].size * svd_flops(kh, kw) > svd_budget:
        ranks[rest] = min(kh, kw)
    elif rest[0].size:
        sigma = np.linalg.svd(weights[rest].astype(np.float64), compute_uv=False)
        ranks[rest] = (sigma > tolerance * sigma[:, :1]).sum(axis=-1)
    return ranks


def _rank_one_terms(layer: np.ndarray, tolerance: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(column, row) pairs, one per singular value above tolerance·σ₀, whose outer
    products sum to the layer; rank-one layers without an SVD."""
    shown, u, r = rank_one_factors(layer, tolerance)
    if shown:
        return [(u, r)]
    left, sigma, right = np.linalg.svd(np.asarray(layer, np.float64))
    kept = np.flatnonzero(sigma > tolerance * sigma[0])
    return [(left[:, k], right[k] * sigma[k]) for k in kept]


def separate(
    weights: np.ndarray, block: int, shape: BandShape, tolerance: float = 1e-7
) -> Separated:
    """Split every layer into rank-one terms and build both passes' matrices."""
    n_filters, _, _, kw = weights.shape
    columns: dict[int, list[np.ndarray]] = {}
    terms: list[list[tuple[int, int]]] = [[] for _ in range(n_filters)]
    row_vectors: list[list[np.ndarray]] = [[] for _ in range(n_filters)]
    for n, c in zip(*np.nonzero(channels_read(weights)), strict=True):
        for column, row in _rank_one_terms(weights[n, c], tolerance):
            sign = np.sign(column[np.argmax(np.abs(column) > 1e-12)])
            column, row = column * sign, row * sign
            known = columns.setdefault(int(c), [])
            index = next(
                (i for i, seen in enumerate(known) if np.allclose(seen, column, rtol=0, atol=1e-7)),
                None,
            )
            if index is None:
                known.append(column)
                index = len(known) - 1
            terms[n].append((int(c), index))
            row_vectors[n].append(row)
    span = block_span(block, shape)
    taps = np.arange(kw) * shape.dilation
    rows = []
    for vectors in row_vectors:
        matrix = np.zeros((len(vectors), span, block), np.float32)
        for t, row in enumerate(vectors):
            for q in range(block):
                matrix[t, q * shape.stride + taps, q] = row
        rows.append(matrix.reshape(-1, block))
    stacked = {c: np.array(vectors, np.float32) for c, vectors in columns.items()}
    return Separated(stacked, terms, rows, block)


def separable_flops(ranks: np.ndarray, shape: BandShape, out_height: int, block: int) -> float:
    """Work of both passes (an upper bound: shared column vectors are counted per use)."""
    chunk = vertical_chunk(shape)
    span_v = rows_span(chunk, shape)
    width = band_width(block, shape)
    vertical = 2.0 * float(ranks.sum()) * span_v * width * out_height
    blocks = blocks_per_row(block, shape.out_width)
    horizontal = 2.0 * out_height * blocks * block * block_span(block, shape) * ranks.sum()
    return vertical + float(horizontal)


def vertical_chunk(shape: BandShape) -> int:
    """Output rows per vertical Toeplitz product. Each costs 2·(chunk + kh − 1) flops per
    output; 8 rows measured fastest for 15×15 (26 ms on W4 against 29 ms for 15 rows and
    31 ms for 30): fewer zeros outweigh BLAS's lower speed on short products."""
    del shape
    return 8


def _vertical_toeplitz(vectors: np.ndarray, count: int, shape: BandShape) -> np.ndarray:
    """(Q·count) × span: row (q, y) holds column vector q at input rows y·s + i·d."""
    span = rows_span(count, shape)
    matrix = np.zeros((len(vectors), count, span), np.float32)
    taps = np.arange(shape.kernel_height) * shape.dilation
    for y in range(count):
        matrix[:, y, y * shape.stride + taps] = vectors
    return matrix.reshape(-1, span)


STRIP_OUTPUTS = 512  # output columns per strip of ``separable``: its passes stay in cache
WRITE_ROWS = 64  # rows per interleaving write of ``separable``: 64 × 512 × N floats in cache


def separable(
    planes: np.ndarray,
    separated: Separated,
    shape: BandShape,
    out: np.ndarray,
    bias: np.ndarray | None,
) -> None:
    """Vertical pass per channel (banded Toeplitz from the left), then horizontal passes
    per term (block-Toeplitz from the right), strip by strip of a few hundred columns so
    that each strip's passes are still in cache when the horizontal products read them.

    ``planes`` is the band as C × rows × cols.
    """
    rows, out_width, _ = out.shape
    step = shape.stride
    block = separated.block
    span = block_span(block, shape)
    all_blocks = blocks_per_row(block, out_width)
    strip_blocks = max(1, STRIP_OUTPUTS // block)
    chunk = min(vertical_chunk(shape), rows)
    whole = rows // chunk
    rest = rows - whole * chunk
    total = sum(len(vectors) for vectors in separated.columns.values())
    scratch = Workspace.current()
    stacked = separated.one_each
    for first_block in range(0, all_blocks, strip_blocks):
        blocks = min(strip_blocks, all_blocks - first_block)
        first_column = first_block * block
        columns = min(blocks * block, out_width - first_column)  # outputs kept
        width = (blocks - 1) * block * step + span  # input columns the strip reads
        left = first_column * step
        all_passes = scratch.array("separable.passes", (total, rows, width))
        results = scratch.array("separable.result", (len(separated.terms), rows, blocks * block))
        if stacked is not None:  # one product per pass for every channel at once
            _stacked_passes(planes, separated, shape, stacked, left, all_passes, results)
            _interleave(results, out, first_column, columns)
            continue
        passes: dict[int, np.ndarray] = {}
        offset = 0
        for channel, vectors in separated.columns.items():
            count = len(vectors)
            passed = all_passes[offset : offset + count]
            offset += count
            passes[channel] = passed
            plane = planes[channel, :, left : left + width]
            if whole:
                full = separated.vertical_matrix(channel, chunk, shape)
                windows = _chunk_windows(plane, whole, chunk, full.shape[1], step)
                if count == 1:  # the products are these rows of the pass: write in place
                    target = passed[0, : whole * chunk].reshape(whole, chunk, width)
                    np.matmul(full, windows, out=target)
                else:
                    product = scratch.array("separable.product", (whole, count * chunk, width))
                    np.matmul(full, windows, out=product)
                    passed[:, : whole * chunk] = (
                        product.reshape(whole, count, chunk, width)
                        .transpose(1, 0, 2, 3)
                        .reshape(count, whole * chunk, width)
                    )
            if rest:
                matrix = separated.vertical_matrix(channel, rest, shape)
                start = whole * chunk * step
                product = np.matmul(matrix, plane[start : start + matrix.shape[1]])
                passed[:, whole * chunk :] = product.reshape(count, rest, width)
        term_result = scratch.array("separable.term", (rows, blocks * block))
        for n, terms in enumerate(separated.terms):
            if not terms:
                results[n] = 0
            for t, (channel, index) in enumerate(terms):
                windows = _block_windows(passes[channel][index], blocks, span, block, step)
                target = _blocked(results[n] if t == 0 else term_result, blocks, block)
                np.matmul(windows, separated.rows[n][t * span : (t + 1) * span], out=target)
                if t:
                    results[n] += term_result
        _interleave(results, out, first_column, columns)
    add_bias(out, bias)


def _interleave(results: np.ndarray, out: np.ndarray, first_column: int, columns: int) -> None:
    """results[n] into out[..., n] for a strip of columns, a few dozen rows at a time and
    every filter in turn, so each output cache line is fetched once, not once per filter."""
    rows = out.shape[0]
    for low in range(0, rows, WRITE_ROWS):
        high = min(low + WRITE_ROWS, rows)
        for n in range(results.shape[0]):
            out[low:high, first_column : first_column + columns, n] = results[n, low:high, :columns]


def _stacked_passes(
    planes: np.ndarray,
    separated: Separated,
    shape: BandShape,
    stacked: tuple[int, int],
    left: int,
    passes: np.ndarray,
    results: np.ndarray,
) -> None:
    """Both passes of a strip for a bank that is ``one_each``: one stacked product per
    pass over all channels (per-channel matrices broadcast), so a depthwise blur costs
    two calls into NumPy per strip instead of two per channel (each call's hand-over
    of the GIL is what keeps two threads from running twice as fast)."""
    first_channel, count = stacked
    _, rows, width = passes.shape
    step = shape.stride
    block = separated.block
    span = block_span(block, shape)
    chunk = min(vertical_chunk(shape), rows)
    whole, rest = divmod(rows, chunk)
    source = planes[first_channel : first_channel + count, :, left : left + width]
    if whole:
        matrices = separated.stacked_vertical(chunk, shape)
        windows = _chunk_windows(source, whole, chunk, matrices.shape[3], step)
        target = passes[:, : whole * chunk].reshape(count, whole, chunk, width)
        np.matmul(matrices, windows, out=target)
    if rest:
        matrices = separated.stacked_vertical(rest, shape)[:, 0]
        start = whole * chunk * step
        passes[:, whole * chunk :] = np.matmul(
            matrices, source[:, start : start + matrices.shape[2]]
        )
    blocks = results.shape[2] // block
    windows = _block_windows(passes, blocks, span, block, step)
    np.matmul(windows, separated.stacked_rows, out=_blocked(results, blocks, block))


def _chunk_windows(planes: np.ndarray, whole: int, chunk: int, span: int, step: int) -> np.ndarray:
    """A (..., whole, span, cols) view: for each of ``whole`` chunks of ``chunk`` output
    rows, the ``span`` input rows it reads (leading axes, such as channels, kept)."""
    *lead, row_stride, pixel_stride = planes.strides
    return as_strided(
        planes, shape=(*planes.shape[:-2], whole, span, planes.shape[-1]),
        strides=(*lead, row_stride * step * chunk, row_stride, pixel_stride), writeable=False,
    )  # fmt: skip


def _block_windows(passes: np.ndarray, blocks: int, span: int, block: int, step: int) -> np.ndarray:
    """A (..., blocks, rows, span) view: each block's ``span`` input columns, every row,
    read in place by BLAS (a gathered copy took as long as the product)."""
    *lead, row_stride, pixel_stride = passes.strides
    return as_strided(
        passes, shape=(*passes.shape[:-2], blocks, passes.shape[-2], span),
        strides=(*lead, pixel_stride * block * step, row_stride, pixel_stride), writeable=False,
    )  # fmt: skip


def _blocked(target: np.ndarray, blocks: int, block: int) -> np.ndarray:
    """A writable (..., blocks, rows, block) view of the first blocks·block columns."""
    *lead, row_stride, pixel_stride = target.strides
    return as_strided(
        target, shape=(*target.shape[:-2], blocks, target.shape[-2], block),
        strides=(*lead, pixel_stride * block, row_stride, pixel_stride),
    )  # fmt: skip
