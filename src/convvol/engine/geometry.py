"""Where outputs fall: padding, output size, band shapes and the border's index rule.

Shapes only: nothing here reads a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convvol.errors import ParameterError
from convvol.settings import Padding, check_padding, check_positive_int


@dataclass(frozen=True)
class Geometry:
    """Where the padded area goes and how large the output is, for one image and kernel."""

    top: int
    bottom: int
    left: int
    right: int
    out_height: int
    out_width: int


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
    stride = check_positive_int(stride, "stride")
    dilation = check_positive_int(dilation, "dilation")
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


def block_span(block: int, shape: BandShape) -> int:
    """Input pixels along a row that feed ``block`` neighbouring outputs."""
    return (block - 1) * shape.stride + (shape.kernel_width - 1) * shape.dilation + 1


def blocks_per_row(block: int, out_width: int) -> int:
    """Blocks of ``block`` outputs that cover a row of ``out_width``."""
    return -(-out_width // block)


def band_width(block: int, shape: BandShape) -> int:
    """Columns a band must have for blocks of ``block`` outputs (extra ones are ignored)."""
    blocks = blocks_per_row(block, shape.out_width)
    return (blocks - 1) * block * shape.stride + block_span(block, shape)
