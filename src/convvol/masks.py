"""Which input pixels are missing: NaN, a nodata value, a mask file.

Everything downstream knows one convention: a missing pixel is NaN in a float32 volume
(the engine's :class:`~convvol.settings.MissingRule` decides how it is filtered). This
module turns the other ways of saying it into NaN: :func:`mark_missing` for a volume in
memory, :class:`MissingRows` for the rows of a volume read strip by strip, and
:func:`read_mask` for a mask file (an image or ``.npy`` of the input's height and width,
nonzero = valid; one channel for every channel, or one per channel).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from convvol.errors import ParameterError, VolumeError
from convvol.io.streams import RowSource


def check_nodata(nodata: float, sample_type: str | np.dtype[Any], label: str) -> float:
    """``nodata`` if a sample of ``sample_type`` (the file's own: uint8, uint16, float32,
    ...) can hold it, else a ParameterError: a value that cannot occur marks nothing,
    and is surely a mistake."""
    dtype = np.dtype(sample_type)
    if math.isnan(nodata):
        if dtype.kind != "f":
            raise ParameterError(
                f"{label}: --nodata nan cannot occur in its {dtype.name} samples",
                hint="integer samples have no NaN; give the value that marks missing pixels",
            )
        return nodata
    problem = None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not float(nodata).is_integer():
            problem = f"is not a whole number, and its samples are {dtype.name}"
        elif not info.min <= nodata <= info.max:
            problem = f"is outside {dtype.name}'s range {info.min}..{info.max}"
    elif dtype.kind == "b":
        if nodata not in (0, 1):
            problem = "is neither 0 nor 1, and its samples are booleans"
    elif dtype.kind == "f":
        finfo = np.finfo(np.float32)  # volumes are float32
        if not math.isfinite(nodata) or abs(nodata) > finfo.max:
            problem = "is beyond float32's range"
    if problem is not None:
        raise ParameterError(
            f"{label}: --nodata {nodata:g} cannot occur in this file: it {problem}",
            hint="give a value its samples can hold (the value that marks missing pixels)",
        )
    return float(nodata)


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int, int], label: str) -> np.ndarray:
    """The mask file ``path`` as an H×W×1 or H×W×C bool array (True = valid) for an
    input of ``shape`` named ``label``; a ParameterError if its size does not fit."""
    from convvol.io.readers import read_image  # a mask is read like any input

    try:
        read = read_image(path, channels="keep", max_pixels=None)
    except VolumeError as error:
        raise ParameterError(f"--mask {path}: {error.message}", hint=error.hint) from None
    mask = read.pixels
    height, width, channels = shape
    if mask.shape[:2] != (height, width) or mask.shape[2] not in (1, channels):
        depth = "" if channels == 1 else f" (one channel, or {channels})"
        raise ParameterError(
            f"--mask {path} is {mask.shape[0]}×{mask.shape[1]}×{mask.shape[2]}, but "
            f"{label} is {height}×{width}×{channels}: a mask must have the input's height "
            f"and width{depth}",
            hint="nonzero mask pixels are valid, zero ones missing",
        )
    return np.asarray(mask != 0)


def mark_missing(
    volume: np.ndarray,
    *,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
    divisor: float = 1.0,
) -> np.ndarray:
    """``volume`` (H×W×C stored values, divided by ``divisor``) as float32 with its missing
    pixels NaN: those equal to ``nodata`` (compared as stored), those where ``mask`` (H×W,
    H×W×1 or H×W×C; nonzero = valid) is zero, and NaN already there.

    >>> mark_missing(np.array([[1, 0], [2, 3]], np.uint8), nodata=0)[..., 0]
    array([[ 1., nan],
           [ 2.,  3.]], dtype=float32)
    """
    stored = np.asarray(volume)
    if stored.ndim == 2:
        stored = stored[:, :, np.newaxis]
    values = np.empty(stored.shape, np.float32)
    np.divide(stored, np.float32(divisor), out=values, casting="unsafe")
    if nodata is not None and not math.isnan(nodata):
        values[stored == np.asarray(nodata).astype(stored.dtype)] = np.nan
    if mask is not None:
        valid = np.asarray(mask) != 0
        if valid.ndim == 2:
            valid = valid[:, :, np.newaxis]
        values[~np.broadcast_to(valid, values.shape)] = np.nan
    return values


def check_some_valid(volume: np.ndarray, label: str) -> None:
    """Refuse a volume whose every pixel is missing: there is nothing to filter."""
    if volume.dtype.kind == "f" and np.isnan(volume).all():
        raise VolumeError(
            f"{label}: every pixel is missing (NaN, --nodata or --mask): there is nothing "
            "to filter",
            hint="check --nodata and --mask (nonzero mask pixels are valid)",
        )


class MissingRows(RowSource):
    """A row source whose rows come back with missing pixels NaN (``nodata``, ``mask``):
    the strips' view of :func:`mark_missing`."""

    def __init__(
        self, source: RowSource, *, nodata: float | None = None, mask: np.ndarray | None = None
    ) -> None:
        self.source = source
        self.label = source.label
        self.shape = source.shape
        self.row_bytes = source.row_bytes
        self.nodata = None if nodata is None or math.isnan(nodata) else np.float32(nodata)
        self.mask = None if mask is None else np.asarray(mask) != 0

    def rows(self, index: np.ndarray, cval: float | np.ndarray = 0.0) -> np.ndarray:
        out = self.source.rows(index, cval)
        inside = index >= 0
        if self.nodata is not None:
            part = out[inside]
            part[part == self.nodata] = np.nan
            out[inside] = part
        if self.mask is not None:
            valid = self.mask[index[inside]]
            if valid.ndim == 2:
                valid = valid[:, :, np.newaxis]
            part = out[inside]
            part[~np.broadcast_to(valid, part.shape)] = np.nan
            out[inside] = part
        return out

    def close(self) -> None:
        self.source.close()
