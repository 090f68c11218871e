"""Mapping float responses to pixel values: the ``--scale`` rules and the bit depth.

Filter responses are unbounded floats (edges are negative on one side); an image holds
[0, 1] scaled to its integer sample type (8 or 16 bits, or for TIFF any of
:data:`SAMPLE_TYPES`). With ``values="native"`` the volume is already in the samples'
own numbers (a uint16 count of 3000 is 3000.0): the rules then work in those units and
nothing is multiplied. ±inf follow each rule like any value; NaN becomes 0 after scaling
(``minmax`` ignores NaN and ±inf when finding a channel's range). ``.npy`` output and
float TIFF samples skip all of this.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from convvol.errors import ParameterError, did_you_mean

SCALES = {
    "clip": "clip to [0, 1] (negative responses become black)",
    "abs": "|x|, then clip to [0, 1] (both edge polarities show)",
    "minmax": "stretch each channel's own min..max to [0, 1] (a flat channel becomes 0)",
    "signed": "0.5 + x/2, clipped: zero is mid-grey, negative darker, positive lighter",
}
DEPTHS = {8: np.uint8, 16: np.uint16}
# Every sample type an image output may take (TIFF takes them all; PNG uint8 and uint16,
# the other formats uint8). "float" is float32, written raw.
SAMPLE_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32")
DEPTH_CHOICES = ("auto", "8", "16", "float")
VALUES = ("unit", "native")


def sample_type(depth: int | str) -> np.dtype:
    """The numpy type of ``depth``: 8, 16 (or "8", "16"), "float" (float32), or the name
    of one of :data:`SAMPLE_TYPES`; ParameterError for anything else."""
    named = {"8": "uint8", "16": "uint16", "float": "float32"}.get(str(depth), str(depth))
    if named not in SAMPLE_TYPES:
        raise ParameterError(f"depth must be 8, 16 or float; got {depth!r}")
    return np.dtype(named)


def check_values(values: str) -> None:
    """Raise ParameterError unless ``values`` is unit or native."""
    if values not in VALUES:
        raise ParameterError(
            f"values must be unit or native; got {values!r}", hint=did_you_mean(values, VALUES)
        )


_CHUNK_VALUES = 1 << 18  # values per pass: 1 MiB of float32, so each chunk stays in cache


def check_scale(scale: str, depth: int | str) -> None:
    """Raise ParameterError unless ``scale`` is a rule and ``depth`` an integer sample
    type (8, 16, or the name of an integer type of :data:`SAMPLE_TYPES`)."""
    if scale not in SCALES:
        raise ParameterError(
            f"scale must be one of {', '.join(SCALES)}; got {scale!r}",
            hint=did_you_mean(scale, SCALES),
        )
    if depth not in DEPTHS and sample_type(depth).kind not in "iu":
        raise ParameterError(f"depth must be 8 or 16; got {depth!r}")


def _type_range(dtype: np.dtype) -> tuple[float, float]:
    """The lowest and highest value an integer sample type holds, as float32 can hold
    them (2³² − 1 is not a float32: its nearest below is the top of uint32's range)."""
    info = np.iinfo(dtype)
    bounds = []
    for bound in (info.min, info.max):
        near = np.float32(bound)
        if abs(int(near)) > abs(bound):
            near = np.nextafter(near, np.float32(0))
        bounds.append(float(near))
    return bounds[0], bounds[1]


def _channel_range(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's finite minimum and span (max − min), for ``minmax``."""
    finite = np.isfinite(volume)
    ranged = volume if finite.all() else np.where(finite, volume, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
        low = np.nanmin(ranged, axis=(0, 1))
        span = np.nanmax(ranged, axis=(0, 1)) - low
    return np.nan_to_num(low).astype(np.float32), np.nan_to_num(span).astype(np.float32)


def _map_chunks(
    volume: np.ndarray,
    scale: str,
    top: float,
    out: np.ndarray,
    overwrite: bool = False,
    *,
    low: float = 0.0,
    native: bool = False,
) -> None:
    """Apply the scale rule, multiply by ``top``, clip to [low, top], NaN to 0, into ``out``.

    ``native``: the volume is in the output's own numbers already: nothing is multiplied,
    and the rules' "1" (signed's mid-grey, minmax's top) is ``top``. ``low`` is below 0
    for signed integer outputs, which keep negative responses.

    Row chunks of about a MiB keep every pass in cache instead of streaming the whole
    image through memory once per operation. ``overwrite`` lets the passes work in
    ``volume`` itself (a float32 array the caller no longer needs) instead of a copy.
    """
    one = top if native else 1.0  # what the rules call 1, in the volume's units
    gain = 1.0 if native else top
    height, width, channels = volume.shape
    minimum, span = _channel_range(volume) if scale == "minmax" else (None, None)
    rows = max(1, _CHUNK_VALUES // max(1, width * channels))
    scratch = None if overwrite else np.empty((min(rows, height), width, channels), np.float32)
    for first in range(0, height, rows):
        stop = min(first + rows, height)
        if scratch is None:
            part = volume[first:stop]
        else:
            part = scratch[: stop - first]
            part[...] = volume[first:stop]
        if scale == "abs":
            np.abs(part, out=part)
        elif scale == "signed":
            part *= 0.5
            part += 0.5 * one
        elif scale == "minmax":
            assert minimum is not None
            assert span is not None
            finite = np.isfinite(part)
            part -= minimum
            np.divide(part, span, out=part, where=span > 0)
            part[(span <= 0) & finite] = 0.0  # a flat channel becomes 0
            if native:
                part *= top
        if gain != 1.0:
            # Rounding before clipping gives the same values as clipping to [0, 1] first
            # (x·top ≥ top exactly when x ≥ 1), and ±inf still land on 0 or top.
            part *= gain
        if top != 1.0:
            np.rint(part, out=part)
        # clip is several times faster than fmax/fmin, but keeps NaN: a sum finds any.
        np.clip(part, low, top, out=part)
        if np.isnan(np.add.reduce(part, axis=None)):
            np.copyto(part, 0.0, where=np.isnan(part))
        out[first:stop] = part


def as_volume(volume: np.ndarray) -> np.ndarray:
    """An H×W array as H×W×1; anything else as it is."""
    volume = np.asarray(volume)
    return volume[:, :, np.newaxis] if volume.ndim == 2 else volume


def to_unit(volume: np.ndarray, scale: str = "clip") -> np.ndarray:
    """Map an H×W×C float volume to [0, 1] by the rule ``scale`` (a new float32 array)."""
    check_scale(scale, 8)
    source = np.asarray(volume)
    unit = np.empty(as_volume(source).shape, np.float32)
    _map_chunks(as_volume(source), scale, 1.0, unit)
    return unit.reshape(source.shape)


def quantize(unit: np.ndarray, depth: int = 8) -> np.ndarray:
    """Round [0, 1] values to unsigned integers of ``depth`` bits (8 or 16)."""
    if depth not in DEPTHS:
        raise ParameterError(f"depth must be 8 or 16; got {depth!r}")
    top = float(np.iinfo(DEPTHS[depth]).max)
    return np.rint(unit * top).astype(DEPTHS[depth])


def to_pixels(
    volume: np.ndarray, scale: str = "clip", depth: int | str = 8, *, values: str = "unit"
) -> np.ndarray:
    """Scale a float response and quantize it: the pixels an image file stores.

    ``depth`` is 8, 16 or an integer type of :data:`SAMPLE_TYPES` (signed types keep
    negative responses: ``clip`` clips to the type's own range). ``values="unit"`` (the
    default) maps [0, 1] to the type's range; ``"native"`` takes the volume as the
    type's own numbers, rounded and clipped to it (the rules working in those units).
    One fused pass per cache-sized chunk; the same values as ``quantize(to_unit(...))``.
    """
    check_scale(scale, depth)
    check_values(values)
    source = as_volume(volume)
    pixels = np.empty(source.shape, sample_type(depth))
    low, top = _type_range(pixels.dtype)
    _map_chunks(source, scale, top, pixels, low=low if low < 0 else 0.0,
                native=values == "native")  # fmt: skip
    return pixels


def pixels_into(
    volume: np.ndarray,
    out: np.ndarray,
    scale: str = "clip",
    *,
    overwrite: bool = False,
    values: str = "unit",
) -> None:
    """``to_pixels`` into ``out`` (an integer array: its dtype gives the depth), band by band.

    The rules that look at one value at a time only: ``minmax`` needs the whole volume's
    range, so it raises here. ``overwrite=True`` lets it use a float32 ``volume`` as its
    scratch space (its values are lost), which saves a copy.
    """
    check_scale(scale, out.dtype.name if out.dtype.kind in "iu" else "")
    check_values(values)
    if scale == "minmax":
        raise ParameterError("scale 'minmax' needs the whole volume; use to_pixels")
    source = as_volume(volume)
    overwrite = overwrite and source.dtype == np.float32 and source.flags.writeable
    low, top = _type_range(out.dtype)
    _map_chunks(source, scale, top, as_volume(out), overwrite, low=min(low, 0.0),
                native=values == "native")  # fmt: skip


# --- linear light (--linear) ----------------------------------------------------------
# The sRGB transfer function exactly (IEC 61966-2-1), extended to every real number as
# scRGB does (odd: f(-x) = -f(x)), so responses below 0 or above 1 survive the round trip.
_SRGB_KNEE = 0.04045  # encoded value where the curve's linear foot ends
_LINEAR_KNEE = 0.0031308  # the same point in linear light


def srgb_to_linear(volume: np.ndarray, *, skip_alpha: bool = True) -> np.ndarray:
    """sRGB-encoded values (1.0 = white) to linear light, as a new float32 array.

    With ``skip_alpha`` the alpha channel of a 2- or 4-channel volume (grey or RGB with
    alpha) is left as it is: alpha is a coverage, not a colour.
    """
    return _transfer(volume, _decode, skip_alpha)


def linear_to_srgb(volume: np.ndarray, *, skip_alpha: bool = True) -> np.ndarray:
    """Linear light back to sRGB-encoded values: the inverse of :func:`srgb_to_linear`."""
    return _transfer(volume, _encode, skip_alpha)


def _decode(values: np.ndarray) -> np.ndarray:
    magnitude = np.abs(values)
    curve = np.where(
        magnitude <= _SRGB_KNEE, magnitude / 12.92, ((magnitude + 0.055) / 1.055) ** 2.4
    )
    return np.copysign(curve, values)


def _encode(values: np.ndarray) -> np.ndarray:
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        curve = np.where(
            magnitude <= _LINEAR_KNEE, magnitude * 12.92, 1.055 * magnitude ** (1 / 2.4) - 0.055
        )
    return np.copysign(curve, values)


def colour_channels(depth: int) -> slice:
    """The channels of a ``depth``-channel volume that are colours: all but the alpha of
    grey + alpha (2) and RGB + alpha (4)."""
    return slice(0, depth - 1) if depth in (2, 4) else slice(0, depth)


def _transfer(volume: np.ndarray, curve: Any, skip_alpha: bool) -> np.ndarray:
    source = as_volume(volume)
    result = np.array(source, dtype=np.float32)
    colours = colour_channels(source.shape[2]) if skip_alpha else slice(None)
    rows = max(1, _CHUNK_VALUES // max(1, source.shape[1] * source.shape[2]))
    for first in range(0, source.shape[0], rows):  # float64 a chunk at a time
        part = result[first : first + rows, :, colours]
        part[...] = curve(part.astype(np.float64))
    return result.reshape(np.shape(volume))
