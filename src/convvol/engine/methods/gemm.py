"""``gemm``: block-Toeplitz products, the workhorse for dense banks.

A convolution with C channels and N filters is, per output pixel, a dot product of length
kh·kw·C, but BLAS is slow on such skinny products (M×27 by 27×4). So each GEMM row holds a
*block* of B neighbouring output pixels and the weights become a block-Toeplitz matrix:
K = kh·span·C and N' = B·N, where span = (B−1)·s + (kw−1)·d + 1 input pixels feed one
block. The zeros cost span/kw times the minimal work and buy shapes BLAS runs an order of
magnitude faster. B = 1 is plain im2col.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convvol.engine import cost
from convvol.engine.geometry import BandShape, band_width, block_span, blocks_per_row
from convvol.engine.methods.built import BuiltOnce
from convvol.engine.workspace import Workspace, add_bias

NAME = "gemm"


def choose_block(shape: BandShape, n_filters: int) -> int:
    """Outputs per GEMM row: enough columns (B·N ≥ 64) for BLAS, with at most 2× waste."""
    block = 1
    if shape.kernel_width == 1:  # 1×1 kernels: blocks would only add zeros
        return block
    while block * n_filters < 64 and block_span(2 * block, shape) <= 2 * (
        (shape.kernel_width - 1) * shape.dilation + 1
    ):
        block *= 2
    return block


def estimate(problem: cost.Problem, cheapest: float) -> cost.Estimate:
    """Its flops (zeros included) and the copies of each block's windows."""
    del cheapest
    shape = problem.shape
    n_filters, channels, kh, kw = problem.weights.shape
    block = choose_block(shape, n_filters)
    waste = block_span(block, shape) / kw
    # each block's windows are copied into the product matrix: kh·span·C values per block
    copies = problem.outputs / block * kh * block_span(block, shape) * channels
    seconds = (problem.flops * waste / cost.GEMM_RATE + copies / cost.COPY_RATE) / problem.threads
    row_bytes = blocks_per_row(block, shape.out_width) * kh * (
        block_span(block, shape) * channels + block * n_filters
    ) * 4  # fmt: skip
    return cost.Estimate(seconds, row_bytes, block, columns=band_width(block, shape))


@dataclass(frozen=True, eq=False)
class Kernel(BuiltOnce):
    """The (kh·span·C) × (B·N) block-Toeplitz matrix (made on first use)."""

    weights: np.ndarray = field(repr=False)
    block: int
    shape: BandShape
    planar = False
    BUILT = "matrix"

    @property
    def columns(self) -> int:
        return band_width(self.block, self.shape)

    @cached_property
    def matrix(self) -> np.ndarray:
        return toeplitz_weights(self.weights, self.block, self.shape)

    def detail(self) -> str:
        return f" (B = {self.block})"

    def run(self, band: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> None:
        gemm(band, self.matrix, self.block, self.shape, out, bias)


def prepare(problem: cost.Problem, block: int) -> Kernel:
    """The kernel; its matrix is built when the first band needs it."""
    return Kernel(problem.weights, block, problem.shape)


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
