"""``separable``: layers as sums of rank-one terms u·vᵀ, run as a vertical pass per
channel and a horizontal pass per term. Blurs (Gaussians, boxes) are rank one: their
cost grows with kh + kw, not kh·kw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convvol.engine import cost
from convvol.engine.geometry import BandShape, band_width, block_span, blocks_per_row, rows_span
from convvol.engine.weights import channels_read, layer_ranks, rank_one_factors, svd_flops
from convvol.engine.workspace import Workspace, add_bias

NAME = "separable"
BLOCK = 16  # horizontal outputs per product: one AVX-512 register of float32


def block_for(shape: BandShape) -> int:
    """Outputs per horizontal Toeplitz product: :data:`BLOCK` (smaller blocks ran BLAS far
    below its speed, larger ones gained nothing for their zeros; see benchmarks/), or 1
    for 1×1 kernels."""
    return 1 if shape.kernel_width == 1 else BLOCK


def estimate(problem: cost.Problem, cheapest: float) -> cost.Estimate:
    """Both passes' products, the calls into NumPy they take, the interleaving writes,
    and the SVDs of layers of rank above one. Looking for the rank-one shortcut may cost
    at most ``cheapest``, what the plain way would take."""
    shape = problem.shape
    _, _, kh, kw = problem.weights.shape
    out_height, threads = problem.geometry.out_height, problem.threads
    ranks = layer_ranks(problem.weights, svd_budget=cheapest * cost.SVD_RATE)
    block = block_for(shape)
    flops = separable_flops(ranks, shape, out_height, block)
    decomposed = int((ranks > 1).sum())  # layers whose terms need a full SVD (U, Σ, V)
    row_bytes = _row_bytes(ranks, shape, block)
    rows = cost.band_rows_for(row_bytes, problem.budget, out_height, threads)
    seconds = (
        flops / cost.SEPARABLE_RATE
        + _calls(ranks, shape, out_height, block, rows) * cost.CALL_SECONDS
        + problem.outputs * problem.n_filters / cost.INTERLEAVE_RATE
    ) / threads + decomposed * 2.5 * svd_flops(kh, kw) / cost.SVD_RATE
    return cost.Estimate(seconds, row_bytes, block, columns=band_width(block, shape))


def _row_bytes(ranks: np.ndarray, shape: BandShape, block: int) -> int:
    """Working set per band row: its passes and the filters' results."""
    terms = int(ranks.sum()) + 2 * int(ranks.sum(axis=1).max(initial=0))
    return max(1, 4 * band_width(block, shape) * terms)


def _calls(ranks: np.ndarray, shape: BandShape, out_height: int, block: int, band_rows: int) -> int:
    """Calls into NumPy per run: per band and strip, two per channel (the vertical
    products), two per term (a horizontal product and its sum) and one per filter and
    64 rows (the interleaving writes). A bank of many small terms is dominated by these,
    not by its flops."""
    bands = -(-out_height // band_rows)
    strip_blocks = max(1, STRIP_OUTPUTS // block)
    strips = -(-blocks_per_row(block, shape.out_width) // strip_blocks)
    channels = int((ranks.sum(axis=0) > 0).sum())
    writes = ranks.shape[0] * -(-band_rows // WRITE_ROWS)
    per_strip = 2 * channels + 2 * int(ranks.sum()) + writes
    return bands * strips * per_strip


@dataclass(frozen=True, eq=False)
class Kernel:
    """The bank's rank-one terms and both passes' matrices."""

    separated: Separated = field(repr=False)
    shape: BandShape
    planar = True
    blas = True  # both passes are Toeplitz products

    @property
    def block(self) -> int:
        return self.separated.block

    @property
    def columns(self) -> int:
        return band_width(self.block, self.shape)

    def ready(self) -> None:
        """Nothing more to build: the vertical matrices depend on the chunk's rows."""

    def release(self) -> None:
        """The terms are the plan itself: kept."""

    def detail(self) -> str:
        return f" ({self.separated.rank} rank-one terms, B = {self.block})"

    def run(self, band: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> None:
        separable(band, self.separated, self.shape, out, bias)


def prepare(problem: cost.Problem, block: int) -> Kernel:
    """Split every layer into its terms (an SVD only for layers not shown rank one)."""
    return Kernel(separate(problem.weights, block, problem.shape), problem.shape)


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
    output; short chunks carry fewer zeros, which outweighs BLAS's lower speed on short
    products (8 rows ran fastest for 15×15 Gaussians; see benchmarks/README.md)."""
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
