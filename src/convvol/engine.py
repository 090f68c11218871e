"""The convolution engine: convolution over volume, as in a CNN layer.

``out[y, x, n] = bias[n] + Σ_c Σ_i Σ_j W[n, c, i, j] · V[y·s + i·d − top, x·s + j·d − left, c]``

One public entry point, :func:`convolve`. It validates its arguments, plans the output
geometry (:func:`plan_geometry`), pads the volume as numpy.pad does, and hands the work
to the method that computes it. Faster methods slot in behind :func:`convolve` without
changing its contract.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from convvol import methods
from convvol.errors import ParameterError, choice_hint

PADDINGS = ("same", "valid", "full")
BORDERS = ("reflect", "symmetric", "edge", "wrap", "constant")
ACTIVATIONS = ("none", "relu", "abs")

Padding = str | int


@dataclass(frozen=True)
class Geometry:
    """Where the padded area goes and how large the output is, for one image and kernel."""

    top: int
    bottom: int
    left: int
    right: int
    out_height: int
    out_width: int


def _check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(
            f"{what} must be one of {', '.join(choices)}; got {value!r}",
            hint=choice_hint(value, choices),
        )
    return value


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ParameterError(f"{what} must be an integer ≥ 1; got {value!r}")
    return int(value)


def check_padding(padding: object) -> Padding:
    """Return ``padding`` if it is 'same', 'valid', 'full' or an integer ≥ 0, else raise."""
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool):
        if padding < 0:
            raise ParameterError(f"padding must be ≥ 0; got {padding}")
        return int(padding)
    return _check_choice(padding, PADDINGS, "padding")


def _axis_geometry(
    size: int, kernel: int, padding: Padding, stride: int, dilation: int
) -> tuple[int, int, int]:
    """(before, after, output length) along one axis."""
    reach = dilation * (kernel - 1)  # the dilated kernel spans reach + 1 pixels
    if padding == "same":
        # Pad as for stride 1 (extra row/column at the end for even kernels, as PyTorch
        # does), then keep every stride-th output from the first: ceil(size / stride).
        before, after = reach // 2, reach - reach // 2
        return before, after, -(-size // stride)
    if padding == "valid":
        before = after = 0
    elif padding == "full":
        before = after = reach
    else:
        before = after = int(padding)
    span = size + before + after - reach
    return before, after, (span - 1) // stride + 1 if span > 0 else 0


def plan_geometry(
    height: int,
    width: int,
    kernel_height: int,
    kernel_width: int,
    *,
    padding: Padding = "same",
    stride: int = 1,
    dilation: int = 1,
) -> Geometry:
    """Plan the padding and output size of a convolution; raise if the output would be empty."""
    padding = check_padding(padding)
    stride = _check_positive_int(stride, "stride")
    dilation = _check_positive_int(dilation, "dilation")
    top, bottom, out_h = _axis_geometry(height, kernel_height, padding, stride, dilation)
    left, right, out_w = _axis_geometry(width, kernel_width, padding, stride, dilation)
    if out_h < 1 or out_w < 1:
        reach_h = dilation * (kernel_height - 1) + 1
        reach_w = dilation * (kernel_width - 1) + 1
        raise ParameterError(
            f"the kernel covers {reach_h}×{reach_w} pixels (with dilation {dilation}), more "
            f"than the {height}×{width} image padded with padding={padding!r}: "
            "the output would be empty",
            hint="use padding 'same' or 'full', a smaller kernel or a smaller dilation",
        )
    return Geometry(top, bottom, left, right, out_h, out_w)


def as_volume(volume: np.ndarray) -> np.ndarray:
    """The array as H×W×C (an H×W array is one channel); ParameterError if not 2- or 3-D."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[:, :, np.newaxis]
    if volume.ndim != 3:
        raise ParameterError(f"volume must be H×W×C (3-D); got shape {volume.shape}")
    return volume


def check_activation(activation: object) -> str:
    """Return ``activation`` if it is ``none``, ``relu`` or ``abs``, else raise."""
    return _check_choice(activation, ACTIVATIONS, "activation")


def apply_activation(volume: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``none``, ``relu`` or ``abs`` in place and return the volume."""
    activation = check_activation(activation)
    if activation == "relu":
        np.maximum(volume, 0, out=volume)
    elif activation == "abs":
        np.abs(volume, out=volume)
    return volume


METHODS = ("auto", "direct", "gemm", "fft", "separable")
DEFAULT_MEMORY_LIMIT = 256 * 2**20  # bytes of working set beyond input and output
# A band's gathered windows: large enough that each numpy call's work dwarfs the time it
# holds the GIL (measured: 1–2 MiB bands ran 2× slower on two threads than 8 MiB ones).
_BAND_TARGET_BYTES = 8 * 2**20
_GEMM_RATE = 40e9  # float32 FLOP/s one core reaches on block-Toeplitz GEMMs (measured)
_DIRECT_RATE = 30e9  # per core: planar Toeplitz products, zeros included (measured)
_TAPS_RATE = 4e9  # per core: values per second of one elementwise pass over a cached chunk
_COPY_RATE = 3e9  # per core: values per second copied into strided stacks (direct)
_FFT_RATE = 2e9  # per core: 5·n·log2(n) flops of float64 pocketfft, plus spectrum products
_SEPARABLE_RATE = 40e9  # per core: both passes' Toeplitz products and the band gather
_CALL_SECONDS = 10e-6  # one call into NumPy from a method's inner loop, views included
_INTERLEAVE_RATE = 1e9  # values per second written from planes into the H×W×N output
_SVD_RATE = 5e9  # flops per second of LAPACK's singular values (1.6–22 GFLOP/s, 63² to 1025²)


def available_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def border_indices(size: int, before: int, after: int, border: str) -> np.ndarray:
    """For each padded position along an axis, the source index (−1: the constant).

    The same rules as numpy.pad, including pads wider than the axis (reflections repeat).
    """
    positions = np.arange(-before, size + after)
    if border == "constant":
        return np.where((positions >= 0) & (positions < size), positions, -1)
    if border == "edge":
        return np.clip(positions, 0, size - 1)
    if border == "wrap":
        return positions % size
    if border == "symmetric":
        period = 2 * size
        folded = positions % period
        return np.where(folded < size, folded, period - 1 - folded)
    if size == 1:  # reflect on a single pixel repeats it
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = positions % period
    return np.where(folded < size, folded, period - folded)


def _gather(
    volume: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    cval: float,
    scratch: bool = False,
    planar: bool = False,
    divisor: float = 1.0,
) -> np.ndarray:
    """volume[rows][:, cols] / divisor as float32, with index −1 meaning the constant ``cval``.

    The image's own columns are copied as one slice; only the padded edges go through
    index maps, so a band costs about a memcpy. ``planar`` returns it as C × rows × cols
    (the layout of the planar methods) in the same one pass.
    """
    channels = volume.shape[2]
    shape = (channels, rows.size, cols.size) if planar else (rows.size, cols.size, channels)
    band = (
        methods.Workspace.current().array("band", shape) if scratch else np.empty(shape, np.float32)
    )
    if planar:  # fill the planes through an H×W×C view of them
        band = band.transpose(1, 2, 0)
    inside_rows = rows >= 0
    if not inside_rows.any() or not (cols >= 0).any():  # only the constant border
        band[...] = cval
        return band.transpose(2, 0, 1) if planar else band
    first, last = int(np.argmax(inside_rows)), rows.size - int(np.argmax(inside_rows[::-1]))
    width = volume.shape[1]
    start = int(np.argmax(cols == 0)) if (cols == 0).any() else 0
    straight = start + width <= cols.size and np.array_equal(
        cols[start : start + width], np.arange(width)
    )
    edges = np.r_[0:start, start + width : cols.size] if straight else np.arange(cols.size)
    edge_columns = np.clip(cols[edges], 0, None)
    for low, high, source_rows in _row_runs(rows, first, last):
        source = volume[source_rows]
        if straight:
            _scaled_copy(band[low:high, start : start + width], source, divisor)
        if edges.size:
            edge_values = source[:, edge_columns]
            if divisor != 1.0:
                edge_values = np.divide(edge_values, np.float32(divisor))
            band[low:high, edges] = edge_values
    band[~inside_rows] = cval
    band[:, cols < 0] = cval
    return band.transpose(2, 0, 1) if planar else band


def _row_runs(rows: np.ndarray, first: int, last: int) -> list[tuple[int, int, slice | np.ndarray]]:
    """Band rows [first, last) as the longest run of consecutive source rows (a slice: read
    in place) and the rows before and after it (index arrays: the reflected halo at an
    edge), so an edge band does not copy all its rows through an index array first."""
    if last <= first:
        return []
    inside = rows[first:last]
    bounds = np.r_[0, np.flatnonzero(np.diff(inside) != 1) + 1, inside.size]
    longest = int(np.argmax(np.diff(bounds)))
    low, high = first + int(bounds[longest]), first + int(bounds[longest + 1])
    runs: list[tuple[int, int, slice | np.ndarray]] = []
    if low > first:
        runs.append((first, low, rows[first:low]))
    runs.append((low, high, slice(int(rows[low]), int(rows[low]) + high - low)))
    if last > high:
        runs.append((high, last, rows[high:last]))
    return runs


def _scaled_copy(target: np.ndarray, source: np.ndarray, divisor: float) -> None:
    """target[...] = source / divisor in float32: the same values as read_volume gives."""
    if divisor == 1.0:
        target[...] = source
    else:
        np.divide(source, np.float32(divisor), out=target, casting="unsafe")


@dataclass(frozen=True)
class Plan:
    """How a convolution will run: the method, its parameters, and why."""

    method: str
    block: int  # outputs per GEMM row (gemm)
    band_rows: int  # output rows per band
    fft_shape: tuple[int, int]  # transform size per band (fft)
    threads: int
    estimated_seconds: float
    reason: str
    estimates: dict[str, float] = field(default_factory=dict)
    separated: methods.Separated | None = field(default=None, repr=False)
    groups: list[methods.DirectGroup] | None = field(default=None, repr=False)
    taps: methods.Taps | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line for --explain."""
        others = ", ".join(
            f"{name} {seconds:.3g} s" for name, seconds in self.estimates.items()
            if name != self.method
        )  # fmt: skip
        detail = {
            "gemm": f" (B = {self.block})",
            "fft": f" ({self.fft_shape[0]}×{self.fft_shape[1]} transforms)",
            "separable": f" ({self.separated.rank if self.separated else 0} rank-one terms, "
            f"B = {self.block})",
            "direct": f" (per-tap sums, {self.taps.passes} passes)"
            if self.taps
            else " (Toeplitz products)",
        }.get(self.method, "")
        return (
            f"{self.method}{detail}: estimated {self.estimated_seconds:.3g} s on "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, bands of "
            f"{self.band_rows} rows; {self.reason}" + (f"; others: {others}" if others else "")
        )


def _choose_block(shape: methods.BandShape, n_filters: int) -> int:
    """Outputs per GEMM row: enough columns (B·N ≥ 64) for BLAS, with at most 2× waste."""
    block = 1
    if shape.kernel_width == 1:  # 1×1 kernels: blocks would only add zeros
        return block
    while block * n_filters < 64 and methods.block_span(2 * block, shape) <= 2 * (
        (shape.kernel_width - 1) * shape.dilation + 1
    ):
        block *= 2
    return block


_SEPARABLE_BLOCK = 16  # horizontal outputs per product of ``separable`` (see below)


def _separable_block(shape: methods.BandShape) -> int:
    """Outputs per horizontal Toeplitz product of ``separable``: 16, one AVX-512 register
    of float32. Measured on products of 128 rows by (B + k − 1) × B, k = 3 to 15: B = 16
    ran at 100 GFLOP/s, B = 8 at 45, B = 4 at 20 (0.40, 0.56 and 0.80 ns per output at
    k = 5), and 32 or 64 gained no speed for their extra zeros. 1×1 kernels: 1."""
    return 1 if shape.kernel_width == 1 else _SEPARABLE_BLOCK


def _separable_row_bytes(ranks: np.ndarray, shape: methods.BandShape, block: int) -> int:
    """Working set of ``separable`` per band row: its passes and the filters' results."""
    terms = int(ranks.sum()) + 2 * int(ranks.sum(axis=1).max(initial=0))
    return max(1, 4 * methods.band_width(block, shape) * terms)


def _band_rows(row_bytes: int, budget: int, out_height: int, threads: int) -> int:
    """Output rows per band: as many as ``budget`` bytes of working set hold, but at least
    four bands per thread when the image is tall enough, to keep every thread busy."""
    rows = max(1, min(out_height, budget // max(row_bytes, 1)))
    if out_height >= 4 * threads:
        rows = min(rows, -(-out_height // (4 * threads)))
    return rows


def _separable_calls(
    ranks: np.ndarray, shape: methods.BandShape, out_height: int, block: int, band_rows: int
) -> int:
    """Calls into NumPy ``separable`` makes: per band and strip, two per channel (the
    vertical products), two per term (a horizontal product and its sum) and one per
    filter and 64 rows (the interleaving writes). A bank of many small terms is
    dominated by these, not by its flops: 16 filters of rank-one 5×5 layers on 1024²
    ran 0.21 s on one thread where its flops alone predict 0.06 s."""
    bands = -(-out_height // band_rows)
    strip_blocks = max(1, methods.STRIP_OUTPUTS // block)
    strips = -(-methods.blocks_per_row(block, shape.out_width) // strip_blocks)
    channels = int((ranks.sum(axis=0) > 0).sum())
    writes = ranks.shape[0] * -(-band_rows // methods.WRITE_ROWS)
    per_strip = 2 * channels + 2 * int(ranks.sum()) + writes
    return bands * strips * per_strip


def plan_convolution(
    volume_shape: tuple[int, ...],
    weights: np.ndarray,
    geometry: Geometry,
    *,
    stride: int = 1,
    dilation: int = 1,
    method: str = "auto",
    threads: int | None = None,
    memory_limit: int | None = None,
) -> Plan:
    """Choose how to run a convolution, by a cost model of each method on this machine.

    ``weights`` are the N×C×kh×kw filters (their ranks decide whether ``separable`` pays).
    """
    method = _check_choice(method, METHODS, "method")
    weights = np.asarray(weights)
    _, _, channels = volume_shape
    n_filters, _, kh, kw = weights.shape
    outputs = geometry.out_height * geometry.out_width
    flops = 2.0 * outputs * n_filters * channels * kh * kw
    threads = max(1, min(threads or available_threads(), geometry.out_height))
    shape = methods.BandShape(geometry.out_width, stride, dilation, kh, kw)
    block = _choose_block(shape, n_filters)
    waste = methods.block_span(block, shape) / kw
    fft_shape, fft_rows, tiles = _fft_band(volume_shape, geometry, (kh, kw), dilation, stride,
                                           threads, memory_limit)  # fmt: skip
    bands = -(-geometry.out_height // fft_rows)
    size = fft_shape[0] * fft_shape[1]
    fft_flops = (
        bands
        * tiles
        * ((channels + n_filters) * 2.5 * size * np.log2(size) + 4 * n_filters * channels * size)
    )
    groups = methods.direct_groups(weights)
    # (more than 64 taps: a pass each would never beat the products, so no plan at all)
    taps = methods.tap_plan(weights) if stride == 1 and kh * kw <= 64 else None
    # depthwise banks: one pass per tap group over the output, instead of BLAS products
    taps_seconds = (
        taps.passes * outputs * n_filters / (_TAPS_RATE * threads) if taps else float("inf")
    )
    toeplitz_seconds = (
        methods.direct_flops(groups, shape, outputs) / _DIRECT_RATE
        + methods.direct_copies(groups, shape, outputs) / _COPY_RATE
    ) / threads
    # gemm copies each block's windows into its product matrix: kh·span·C values per block
    gemm_copies = outputs / block * kh * methods.block_span(block, shape) * channels
    used_layers = int(methods.channels_read(weights).sum())
    spectra_seconds = used_layers * 2.5 * size * np.log2(size) / _FFT_RATE  # once, one thread
    estimates = {
        "gemm": (flops * waste / _GEMM_RATE + gemm_copies / _COPY_RATE) / threads,
        "direct": min(taps_seconds, toeplitz_seconds),
        "fft": fft_flops / (_FFT_RATE * threads) + spectra_seconds,
    }
    # Looking for a separable shortcut may cost at most what the plain way would take.
    svd_budget = min(estimates.values()) * _SVD_RATE
    ranks = methods.layer_ranks(weights, svd_budget=svd_budget)
    sep_block = _separable_block(shape)
    sep_flops = methods.separable_flops(ranks, shape, geometry.out_height, sep_block)
    decomposed = int((ranks > 1).sum())  # layers whose terms need a full SVD (U, Σ, V)
    budget = min(_BAND_TARGET_BYTES, (memory_limit or DEFAULT_MEMORY_LIMIT) // threads)
    sep_row_bytes = _separable_row_bytes(ranks, shape, sep_block)
    sep_rows = _band_rows(sep_row_bytes, budget, geometry.out_height, threads)
    estimates["separable"] = (
        sep_flops / _SEPARABLE_RATE
        + _separable_calls(ranks, shape, geometry.out_height, sep_block, sep_rows) * _CALL_SECONDS
        + outputs * n_filters / _INTERLEAVE_RATE
    ) / threads + decomposed * 2.5 * methods.svd_flops(kh, kw) / _SVD_RATE
    if method == "auto":
        method = min(estimates, key=estimates.__getitem__)
        reason = "lowest estimated time"
    else:
        reason = "forced with method=" + method
    row_bytes = methods.blocks_per_row(block, geometry.out_width) * kh * (
        methods.block_span(block, shape) * channels + block * n_filters
    ) * 4  # fmt: skip
    # One output row reads the kernel's whole reach of input rows: the smallest band.
    reach = (kh - 1) * dilation + 1
    width = volume_shape[1] + geometry.left + geometry.right
    separated = None
    if method == "separable":
        block = sep_block
        separated = methods.separate(weights, block, shape)
        row_bytes = sep_row_bytes
    if taps_seconds > toeplitz_seconds:
        taps = None
    if method == "direct" and taps is not None:  # the band and the output, per output row
        expanded = width * n_filters if taps.channels is not None else 0  # band[..., channels]
        row_bytes = 4 * (width * channels + expanded + geometry.out_width * n_filters)
    elif method == "direct":  # the stacked shifted rows and the results, per output row
        chunk = methods.direct_chunk(shape)
        span = methods.rows_span(chunk, shape)
        row_bytes = 4 * geometry.out_width * (kw * channels * span // chunk + 2 * n_filters)
    if method in ("gemm", "separable"):
        width = max(width, methods.band_width(block, shape))
    smallest_band = threads * (reach * width * channels * 4 + row_bytes)
    _check_fits(smallest_band, "the input rows one band of output reads")
    band_rows = _band_rows(row_bytes, budget, geometry.out_height, threads)
    if method == "fft":
        band_rows = fft_rows
    if method == "direct" and taps is None:  # whole chunks: the same products whatever the bands
        chunk = methods.direct_chunk(shape)
        band_rows = max(chunk, band_rows // chunk * chunk)
    return Plan(
        method, block, band_rows, fft_shape, threads, estimates[method], reason, estimates,
        separated, groups if method == "direct" and taps is None else None,
        taps if method == "direct" else None,
    )  # fmt: skip


def _fft_band(
    volume_shape: tuple[int, ...],
    geometry: Geometry,
    kernel: tuple[int, int],
    dilation: int,
    stride: int,
    threads: int,
    memory_limit: int | None,
) -> tuple[tuple[int, int], int, int]:
    """Transform size, output rows per band and column tiles per band for the FFT method.

    Tiles of a few hundred pixels a side: larger transforms waste less on the halo
    (reach − 1 pixels per tile) but run slower per point once they leave the cache
    (measured: 27 ns per output at 320×320, 35 ns at 576×2160, for a 31×31×3 filter).
    """
    channels = volume_shape[2]
    reach_h, reach_w = ((k - 1) * dilation + 1 for k in kernel)
    budget = (memory_limit or DEFAULT_MEMORY_LIMIT) // threads
    side = methods.fast_length(max(320, 6 * max(reach_h, reach_w)))
    while True:
        height = min(side, methods.fast_length((geometry.out_height - 1) * stride + reach_h))
        width = min(side, methods.fast_length((geometry.out_width - 1) * stride + reach_w))
        # planes, their spectra, products and result, per thread
        if height * width * 8 * (3 * channels + 2) <= budget or side <= 2 * max(reach_h, reach_w):
            break
        side = methods.fast_length(side * 3 // 4)
    rows = (height - reach_h) // stride + 1
    tile = (width - reach_w) // stride + 1
    return (height, width), rows, -(-geometry.out_width // tile)


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
    geometry = _output_geometry(volume, weights, padding, stride, dilation)
    check_output_memory(geometry, np.shape(weights)[0])
    out = np.empty((geometry.out_height, geometry.out_width, np.shape(weights)[0]), np.float32)

    def keep(first: int, band: np.ndarray) -> None:
        del first, band  # the bands are slices of ``out`` already

    convolve_bands(
        volume, weights, bias, sink=keep, out=out, padding=padding, border=border, cval=cval,
        stride=stride, dilation=dilation, flip=flip, method=method, threads=threads,
        memory_limit=memory_limit,
    )  # fmt: skip
    return out


BandSink = Callable[[int, np.ndarray], None]


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
    volume, weights, bias, geometry, cval = _validate(
        volume, weights, bias, padding, stride, dilation, cval
    )
    border = _check_choice(border, BORDERS, "border")
    if not (np.isfinite(divisor) and divisor > 0):
        raise ParameterError(f"divisor must be a positive number; got {divisor!r}")
    expected = (geometry.out_height, geometry.out_width, weights.shape[0])
    if out is not None and (out.shape != expected or out.dtype != np.float32):
        raise ParameterError(
            f"out must be a float32 array of shape {expected}; got {out.dtype} {out.shape}"
        )
    if flip:
        weights = weights[:, :, ::-1, ::-1]
    plan = plan_convolution(
        volume.shape, weights, geometry, stride=stride, dilation=dilation,
        method=method, threads=threads, memory_limit=memory_limit,
    )  # fmt: skip
    _run(volume, weights, bias, geometry, border, cval, int(stride), int(dilation), plan,
         sink, float(divisor), out)  # fmt: skip
    return geometry


def _output_geometry(
    volume: np.ndarray, weights: np.ndarray, padding: Padding, stride: int, dilation: int
) -> Geometry:
    """The output's geometry, from shapes alone (validation proper is _validate's)."""
    volume_shape, weight_shape = np.shape(as_volume(volume)), np.shape(weights)
    if len(weight_shape) != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weight_shape}")
    return plan_geometry(
        volume_shape[0], volume_shape[1], weight_shape[2], weight_shape[3],
        padding=padding, stride=stride, dilation=dilation,
    )  # fmt: skip


def _validate(
    volume: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    padding: Padding,
    stride: int,
    dilation: int,
    cval: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Geometry, float]:
    volume = as_volume(volume)
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ParameterError(f"weights must be N×C×kh×kw (4-D); got shape {weights.shape}")
    height, width, channels = volume.shape
    n_filters, weight_channels, kh, kw = weights.shape
    if weight_channels != channels:
        raise ParameterError(
            f"the filters have {weight_channels} layers but the volume has {channels} channels"
        )
    if 0 in weights.shape or 0 in volume.shape:
        raise ParameterError(
            f"empty volume or weights (volume {volume.shape}, weights {weights.shape})"
        )
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ParameterError(f"volume must hold real numbers; got dtype {volume.dtype}")
    geometry = plan_geometry(
        height, width, kh, kw, padding=padding, stride=stride, dilation=dilation
    )
    try:
        cval = float(cval)
    except (TypeError, ValueError):
        raise ParameterError(f"cval must be a number; got {cval!r}") from None
    if not np.isfinite(cval):
        raise ParameterError(f"cval must be a finite number; got {cval}")
    if bias is not None:
        bias = np.asarray(bias, np.float32).reshape(-1)
        if bias.shape != (n_filters,):
            raise ParameterError(f"bias must hold {n_filters} values; got {bias.size}")
    return volume, finite_weights(weights), bias, geometry, cval


def finite_weights(weights: np.ndarray) -> np.ndarray:
    """The weights as float32; a ParameterError naming the first layer that holds NaN or
    an infinity (also after rounding to float32): methods that skip zero layers would
    otherwise give different results for it."""
    with np.errstate(over="ignore"):  # too large for float32: reported below
        weights32 = weights.astype(np.float32, copy=False)
    finite = np.isfinite(weights32)
    if not finite.all():
        n, c = (int(i) for i in np.argwhere(~finite)[0][:2])
        raise ParameterError(
            f"weights must be finite float32 numbers; filter {n}, channel {c} holds "
            f"{weights[n, c][~finite[n, c]].flat[0]}"
        )
    return weights32


def check_output_memory(geometry: Geometry, n_filters: int) -> None:
    """Refuse, before allocating, an output larger than this machine's memory."""
    _check_fits(4 * geometry.out_height * geometry.out_width * n_filters, "the output")


def _check_fits(needed: int, what: str) -> None:
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on this platform: let NumPy try
        return
    if needed > available:
        raise ParameterError(
            f"{what} would need {needed / 2**30:.1f} GiB, more than this machine's "
            f"{available / 2**30:.1f} GiB of memory",
            hint="check the padding and dilation, or use a smaller image or a larger stride",
        )


def _run(
    volume: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    geometry: Geometry,
    border: str,
    cval: float,
    stride: int,
    dilation: int,
    plan: Plan,
    sink: BandSink,
    divisor: float,
    out: np.ndarray | None,
) -> None:
    """Cut the output into row bands, compute them on a thread pool, give each to ``sink``."""
    height, width, _ = volume.shape
    n_filters, _, kh, kw = weights.shape
    shape = methods.BandShape(geometry.out_width, stride, dilation, kh, kw)
    cols = border_indices(width, geometry.left, geometry.right, border)
    all_rows = border_indices(height, geometry.top, geometry.bottom, border)
    if plan.method in ("gemm", "separable"):
        extra = methods.band_width(plan.block, shape) - cols.size
        if extra > 0:  # columns only blocks past the edge read; their outputs are dropped
            cols = np.concatenate([cols, np.full(extra, -1)])
    if plan.method == "gemm":
        matrix = methods.toeplitz_weights(weights, plan.block, shape)
    elif plan.method == "fft":
        spectra = methods.fft_spectra(weights, plan.fft_shape, dilation)

    def compute(first: int) -> None:
        last = min(first + plan.band_rows, geometry.out_height)
        reach = (last - 1 - first) * stride + (kh - 1) * dilation + 1
        planar = plan.method == "separable" or (plan.method == "direct" and not plan.taps)
        band_rows = all_rows[first * stride : first * stride + reach]
        band = _gather(volume, band_rows, cols, cval, scratch=True, planar=planar,
                       divisor=divisor)  # fmt: skip
        target = (
            out[first:last]
            if out is not None
            else methods.Workspace.current().array(
                "output", (last - first, geometry.out_width, n_filters)
            )
        )
        if plan.method == "gemm":
            methods.gemm(band, matrix, plan.block, shape, target, bias)
        elif plan.method == "fft":
            methods.fft(band, spectra, plan.fft_shape, shape, target, bias)
        elif plan.method == "separable":
            assert plan.separated is not None
            methods.separable(band, plan.separated, shape, target, bias)
        elif plan.taps is not None:
            methods.taps(band, plan.taps, shape, target, bias)
        else:
            assert plan.groups is not None
            methods.direct(band, plan.groups, shape, target, bias)
        sink(first, target)

    starts = range(0, geometry.out_height, plan.band_rows)
    try:
        # Bands are sized for one core each: BLAS threads on top would only fight (and
        # on the small products here they cost more than they bring even on one band).
        with threadpool_limits(1, user_api="blas"):
            if plan.threads == 1 or len(starts) == 1:
                for first in starts:
                    compute(first)
            else:
                for done in _pool(plan.threads).map(compute, starts):
                    del done
    finally:
        methods.trim_workspaces()


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A lasting pool per thread count, so each worker keeps its scratch buffers warm."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="convvol")
        return _POOLS[threads]
