"""A band of input rows, gathered once as the methods want it: padded by the border rule,
scaled by the stored pixels' divisor, interleaved (rows × cols × C) or planar (C × rows ×
cols)."""

from __future__ import annotations

import numpy as np

from convvol.engine.workspace import Workspace


def gather_band(
    volume: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    cval: float | np.ndarray,
    scratch: bool = False,
    planar: bool = False,
    divisor: float = 1.0,
) -> np.ndarray:
    """volume[rows][:, cols] / divisor as float32, with index −1 meaning the constant ``cval``
    (one number, or one per channel).

    The image's own columns are copied as one slice; only the padded edges go through
    index maps, so a band costs about a memcpy. ``planar`` returns it as C × rows × cols
    (the layout of the planar methods) in the same one pass.
    """
    channels = volume.shape[2]
    shape = (channels, rows.size, cols.size) if planar else (rows.size, cols.size, channels)
    band = Workspace.current().array("band", shape) if scratch else np.empty(shape, np.float32)
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
