"""An independent, slow, float64 reference for ``convvol.convolve``.

It shares no code with convvol and does not call ``numpy.pad``: every tap of every output
reads its source pixel through an explicit index-mapping formula per border mode, so the
arithmetic is visibly the contract's

    out[y, x, n] = bias[n] + Σ_c Σ_i Σ_j W[n, c, i, j] · V[y·s + i·d − top, x·s + j·d − left, c]

It is written to be obviously right, not fast.
"""

from __future__ import annotations

import numpy as np

BORDERS = ("reflect", "symmetric", "edge", "wrap", "constant")


def source_index(index: np.ndarray, size: int, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Map (possibly out-of-range) indices into ``0..size-1`` as numpy.pad's ``border`` does.

    Returns ``(source, inside)``: the index to read, and whether the pixel is real.
    ``inside`` is False only for 'constant', where the value is ``cval`` instead.
    """
    index = np.asarray(index, dtype=np.int64)
    inside = np.ones(index.shape, dtype=bool)
    if border == "reflect":
        # … 2 1 | 0 1 2 3 | 2 1 0 1 …: the edge pixel is not repeated; period 2(n − 1).
        if size == 1:
            source = np.zeros_like(index)
        else:
            period = 2 * (size - 1)
            folded = index % period
            source = np.where(folded < size, folded, period - folded)
    elif border == "symmetric":
        # … 1 0 | 0 1 2 3 | 3 2 1 0 0 …: the edge pixel is repeated; period 2n.
        period = 2 * size
        folded = index % period
        source = np.where(folded < size, folded, period - 1 - folded)
    elif border == "wrap":
        source = index % size
    elif border == "edge":
        source = np.clip(index, 0, size - 1)
    elif border == "constant":
        inside = (index >= 0) & (index < size)
        source = np.where(inside, index, 0)
    else:
        raise ValueError(f"unknown border {border!r}")
    return source, inside


def axis_plan(size: int, kernel: int, padding: str | int, stride: int, dilation: int):
    """(pixels padded before the image, output length) along one axis; length may be ≤ 0."""
    reach = dilation * (kernel - 1)
    if padding == "same":
        return reach // 2, -(-size // stride)
    if padding == "valid":
        before = total = 0
    elif padding == "full":
        before, total = reach, 2 * reach
    else:
        before, total = int(padding), 2 * int(padding)
    span = size + total - reach
    return before, (span - 1) // stride + 1 if span > 0 else 0


def output_shape(
    height: int, width: int, kh: int, kw: int, *, padding, stride: int = 1, dilation: int = 1
) -> tuple[int, int]:
    """(H', W') of a convolution; a side ≤ 0 means the output is empty."""
    return (
        axis_plan(height, kh, padding, stride, dilation)[1],
        axis_plan(width, kw, padding, stride, dilation)[1],
    )


def reference_convolve(
    volume,
    weights,
    bias=None,
    *,
    padding="same",
    border="reflect",
    cval=0.0,
    stride=1,
    dilation=1,
    flip=False,
) -> np.ndarray:
    """Cross-correlate an H×W×C volume with N×C×kh×kw weights; an H'×W'×N float64 array."""
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim == 2:
        volume = volume[:, :, np.newaxis]
    weights = np.asarray(weights, dtype=np.float64)
    if flip:
        weights = weights[:, :, ::-1, ::-1]
    height, width, channels = volume.shape
    n_filters, weight_channels, kh, kw = weights.shape
    assert weight_channels == channels, "the reference only handles valid arguments"

    top, out_h = axis_plan(height, kh, padding, stride, dilation)
    left, out_w = axis_plan(width, kw, padding, stride, dilation)
    if out_h < 1 or out_w < 1:
        raise ValueError("empty output")

    out = np.zeros((out_h, out_w, n_filters), dtype=np.float64)
    ys = np.arange(out_h) * stride - top
    xs = np.arange(out_w) * stride - left
    for i in range(kh):
        rows, rows_inside = source_index(ys + i * dilation, height, border)
        for j in range(kw):
            cols, cols_inside = source_index(xs + j * dilation, width, border)
            patch = volume[rows[:, None], cols[None, :], :]  # H'×W'×C
            inside = rows_inside[:, None] & cols_inside[None, :]
            patch = np.where(inside[:, :, None], patch, float(cval))
            out += np.einsum("yxc,nc->yxn", patch, weights[:, :, i, j])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(n_filters)
    return out


def reference_missing(
    volume,
    weights,
    bias=None,
    *,
    treatment="propagate",
    padding="same",
    border="reflect",
    cval=0.0,
    stride=1,
    dilation=1,
    min_valid=0.0,
    empty=1e-6,
) -> np.ndarray:
    """The contract for missing pixels (NaN in ``volume``), in float64, tap by tap:

    - fill: NaN read as ``cval``, then :func:`reference_convolve`'s sum;
    - propagate: NaN read as 0; NaN out wherever a non-zero weight reads a NaN;
    - interpolate: per (filter n, channel c) layer, S·Σ_valid w·x / Σ_valid w with
      S = Σ w; NaN out where |Σ_valid w| ≤ ``empty``·Σ|w| for any of the filter's layers.

    ``min_valid``: NaN out where Σ_valid |w| / Σ |w| (over the filter's layers) is below it.
    The padded area of the constant border holds valid ``cval``.
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim == 2:
        volume = volume[:, :, np.newaxis]
    weights = np.asarray(weights, dtype=np.float64)
    height, width, channels = volume.shape
    n_filters, _, kh, kw = weights.shape
    top, out_h = axis_plan(height, kh, padding, stride, dilation)
    left, out_w = axis_plan(width, kw, padding, stride, dilation)
    ys = np.arange(out_h) * stride - top
    xs = np.arange(out_w) * stride - left
    # Sums per (filter, channel) layer: values over valid taps, weights over valid taps,
    # |weights| over valid taps, and the count of missing taps under non-zero weights.
    values = np.zeros((out_h, out_w, n_filters, channels))
    valid_weight = np.zeros_like(values)
    valid_magnitude = np.zeros_like(values)
    missing_taps = np.zeros_like(values)
    for i in range(kh):
        rows, rows_inside = source_index(ys + i * dilation, height, border)
        for j in range(kw):
            cols, cols_inside = source_index(xs + j * dilation, width, border)
            patch = volume[rows[:, None], cols[None, :], :]
            inside = rows_inside[:, None] & cols_inside[None, :]
            patch = np.where(inside[:, :, None], patch, float(cval))
            valid = ~np.isnan(patch)
            read = np.where(valid, patch, float(cval) if treatment == "fill" else 0.0)
            tap = weights[:, :, i, j]  # N × C
            values += read[:, :, None, :] * tap
            valid_weight += valid[:, :, None, :] * tap
            valid_magnitude += valid[:, :, None, :] * np.abs(tap)
            missing_taps += (~valid)[:, :, None, :] * (tap != 0)
    sums = weights.sum(axis=(2, 3))
    magnitudes = np.abs(weights).sum(axis=(2, 3))
    if treatment == "interpolate":
        used = magnitudes > 0
        none_left = (np.abs(valid_weight) <= empty * magnitudes) & used
        with np.errstate(divide="ignore", invalid="ignore"):
            levels = np.where(used, sums * values / valid_weight, 0.0)
        out = levels.sum(axis=3)
        out[none_left.any(axis=3)] = np.nan
    else:
        out = values.sum(axis=3)
        if treatment == "propagate":
            out[missing_taps.sum(axis=3) > 0] = np.nan
    if min_valid:
        total = magnitudes.sum(axis=1)
        share = valid_magnitude.sum(axis=3) / np.where(total > 0, total, 1.0)
        out[share < min_valid] = np.nan
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(n_filters)
    return out
