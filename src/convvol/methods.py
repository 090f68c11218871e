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

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


@dataclass(frozen=True)
class BandShape:
    """How output rows map to band rows and columns, shared by all methods."""

    out_width: int  # W' of the whole output
    stride: int
    dilation: int
    kernel_height: int
    kernel_width: int


def direct(band: np.ndarray, weights: np.ndarray, shape: BandShape, out: np.ndarray) -> None:
    """Per-tap accumulation: one (rows·W' × C) @ (C × N) product per kernel tap.

    Used for tiny problems and as the plainest second implementation; ``out`` must hold
    the bias (or zeros) already.
    """
    rows = out.shape[0]
    step, reach = shape.stride, shape.dilation
    taps = weights.transpose(2, 3, 1, 0)  # kh×kw×C×N
    for i in range(shape.kernel_height):
        for j in range(shape.kernel_width):
            window = band[
                i * reach : i * reach + (rows - 1) * step + 1 : step,
                j * reach : j * reach + (shape.out_width - 1) * step + 1 : step,
            ]
            out += window @ taps[i, j]


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
    rows, _, channels = band.shape
    rows = out.shape[0]
    blocks = blocks_per_row(block, shape.out_width)
    span = block_span(block, shape)
    kh = shape.kernel_height
    gathered = np.empty((rows, blocks, kh, span * channels), np.float32)
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
        result = products @ matrix
        out[...] = result.reshape(rows, blocks * block, n_filters)[:, : shape.out_width]
    if bias is not None:
        out += bias


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
    """Conjugate spectra of the (dilated) layers, N×C×Fh×(Fw/2+1): correlation by FFT."""
    n_filters, channels, kh, kw = weights.shape
    dilated = np.zeros((n_filters, channels, (kh - 1) * dilation + 1, (kw - 1) * dilation + 1))
    dilated[:, :, ::dilation, ::dilation] = weights
    return np.conj(np.fft.rfft2(dilated, s=fft_shape, axes=(2, 3)))


def fft(
    band: np.ndarray,
    spectra: np.ndarray,
    fft_shape: tuple[int, int],
    shape: BandShape,
    out: np.ndarray,
    bias: np.ndarray | None,
) -> None:
    """Overlap-save: the band's circular cross-correlation, of which the valid part is exact.

    The band is at most ``fft_shape`` in size, so wrapped-around terms fall only on
    positions outside the output. Transforms run in float64: NumPy's float32 FFT is about
    three times slower here, and float64 keeps large kernels exact to float32 rounding.
    """
    rows_in, cols_in, channels = band.shape
    planes = np.empty((channels, *fft_shape))  # float64, planar, already transform-sized
    planes[:, :rows_in, :cols_in] = band.transpose(2, 0, 1)
    planes[:, rows_in:] = 0
    planes[:, :rows_in, cols_in:] = 0
    transformed = np.fft.rfft2(planes, axes=(1, 2))
    products = np.einsum("chw,nchw->nhw", transformed, spectra)
    correlation = np.fft.irfft2(products, s=fft_shape, axes=(1, 2))  # N × Fh × Fw
    rows, step = out.shape[0], shape.stride
    valid = correlation[
        :, : (rows - 1) * step + 1 : step, : (shape.out_width - 1) * step + 1 : step
    ]
    out[...] = valid.transpose(1, 2, 0)
    if bias is not None:
        out += bias
