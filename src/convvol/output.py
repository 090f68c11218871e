"""Mapping float responses to pixel values: the ``--scale`` rules and the bit depth.

Filter responses are unbounded floats (edges are negative on one side); an image holds
[0, 1] scaled to 8 or 16 bits. ±inf follow each rule like any value; NaN becomes 0
after scaling (``minmax`` ignores NaN and ±inf when finding a channel's range).
``.npy`` output skips all of this.
"""

from __future__ import annotations

import warnings

import numpy as np

from convvol.errors import ParameterError, did_you_mean

SCALES = {
    "clip": "clip to [0, 1] (negative responses become black)",
    "abs": "|x|, then clip to [0, 1] (both edge polarities show)",
    "minmax": "stretch each channel's own min..max to [0, 1] (a flat channel becomes 0)",
    "signed": "0.5 + x/2, clipped: zero is mid-grey, negative darker, positive lighter",
}
DEPTHS = {8: np.uint8, 16: np.uint16}


def to_unit(volume: np.ndarray, scale: str = "clip") -> np.ndarray:
    """Map an H×W×C float volume to [0, 1] by the rule ``scale`` (a new float32 array)."""
    if scale not in SCALES:
        raise ParameterError(
            f"scale must be one of {', '.join(SCALES)}; got {scale!r}",
            hint=did_you_mean(scale, SCALES),
        )
    unit = np.array(volume, dtype=np.float32)  # a copy: the caller's volume stays as it is
    if scale == "abs":
        np.abs(unit, out=unit)
    elif scale == "signed":
        unit *= 0.5
        unit += 0.5
    elif scale == "minmax":
        _stretch_channels(unit)
    np.clip(unit, 0.0, 1.0, out=unit)  # ±inf land on 0 or 1 by the rule, like any value
    return np.nan_to_num(unit, copy=False, nan=0.0)


def _stretch_channels(unit: np.ndarray) -> None:
    """Map each channel's finite min..max to 0..1 in place (a flat channel becomes 0)."""
    finite = np.isfinite(unit)
    ranged = unit if finite.all() else np.where(finite, unit, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
        low = np.nanmin(ranged, axis=(0, 1), keepdims=True)
        span = np.nanmax(ranged, axis=(0, 1), keepdims=True) - low
    low = np.nan_to_num(low)
    unit -= low
    flat = ~(span > 0)
    np.divide(unit, span, out=unit, where=~flat)
    unit[np.broadcast_to(flat, unit.shape) & finite] = 0.0


def quantize(unit: np.ndarray, depth: int = 8) -> np.ndarray:
    """Round [0, 1] values to unsigned integers of ``depth`` bits (8 or 16)."""
    if depth not in DEPTHS:
        raise ParameterError(f"depth must be 8 or 16; got {depth!r}")
    top = float(np.iinfo(DEPTHS[depth]).max)
    return np.rint(unit * top).astype(DEPTHS[depth])


def to_pixels(volume: np.ndarray, scale: str = "clip", depth: int = 8) -> np.ndarray:
    """Scale a float response and quantize it: the pixels an image file stores."""
    return quantize(to_unit(volume, scale), depth)
