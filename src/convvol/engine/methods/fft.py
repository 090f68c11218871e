"""``fft``: overlap-save in tiles, for large kernels, whose cost does not grow with the
kernel's area."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from convvol.engine import cost
from convvol.engine.geometry import BandShape
from convvol.engine.methods.built import BuiltOnce
from convvol.engine.weights import channels_read
from convvol.engine.workspace import Workspace, add_bias

NAME = "fft"


def estimate(problem: cost.Problem, cheapest: float) -> cost.Estimate:
    """Transforms of every tile (input planes and products back) and of the spectra."""
    del cheapest
    n_filters, channels = problem.n_filters, problem.channels
    fft_shape, rows, tiles = fft_band(problem)
    bands = -(-problem.geometry.out_height // rows)
    size = fft_shape[0] * fft_shape[1]
    fft_flops = (
        bands
        * tiles
        * ((channels + n_filters) * 2.5 * size * np.log2(size) + 4 * n_filters * channels * size)
    )
    used_layers = int(problem.used_layers.sum())
    spectra_seconds = used_layers * 2.5 * size * np.log2(size) / cost.FFT_RATE  # once, one thread
    seconds = fft_flops / (cost.FFT_RATE * problem.threads) + spectra_seconds
    # the band's input row and its output row (the tiles' planes are within the budget)
    row_bytes = 4 * (problem.padded_width * channels + problem.shape.out_width * n_filters)
    return cost.Estimate(float(seconds), row_bytes, fft_shape, band_rows=rows)


def fft_band(problem: cost.Problem) -> tuple[tuple[int, int], int, int]:
    """Transform size, output rows per band and column tiles per band.

    Tiles of a few hundred pixels a side: larger transforms waste less on the halo
    (reach − 1 pixels per tile) but run slower per point once they leave the cache.
    """
    geometry, stride, dilation = problem.geometry, problem.stride, problem.dilation
    channels = problem.channels
    _, _, kh, kw = problem.weights.shape
    reach_h, reach_w = ((k - 1) * dilation + 1 for k in (kh, kw))
    budget = (problem.memory_limit or cost.DEFAULT_MEMORY_LIMIT) // problem.threads
    side = fast_length(max(320, 6 * max(reach_h, reach_w)))
    while True:
        height = min(side, fast_length((geometry.out_height - 1) * stride + reach_h))
        width = min(side, fast_length((geometry.out_width - 1) * stride + reach_w))
        # planes, their spectra, products and result, per thread
        if height * width * 8 * (3 * channels + 2) <= budget or side <= 2 * max(reach_h, reach_w):
            break
        side = fast_length(side * 3 // 4)
    rows = (height - reach_h) // stride + 1
    tile = (width - reach_w) // stride + 1
    return (height, width), rows, -(-geometry.out_width // tile)


@dataclass(frozen=True, eq=False)
class Kernel(BuiltOnce):
    """The layers' conjugate spectra at the tiles' transform size (made on first use)."""

    weights: np.ndarray = field(repr=False)
    fft_shape: tuple[int, int]
    shape: BandShape
    planar = False
    columns = 0
    BUILT = "spectra"

    @cached_property
    def spectra(self) -> np.ndarray:
        return fft_spectra(self.weights, self.fft_shape, self.shape.dilation)

    def detail(self) -> str:
        return f" ({self.fft_shape[0]}×{self.fft_shape[1]} transforms)"

    def run(self, band: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> None:
        fft(band, self.spectra, self.fft_shape, self.shape, out, bias)


def prepare(problem: cost.Problem, fft_shape: tuple[int, int]) -> Kernel:
    """The kernel; its spectra are made when the first band needs them."""
    return Kernel(problem.weights, fft_shape, problem.shape)


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
