"""Missing pixels and transparency as one convolution of a wider problem, on one plan.

A layer with a :class:`~convvol.settings.MissingRule` is planned for a *combined* volume:
the values with their missing pixels set aside, beside a mask channel per input channel,
and a *combined* bank that convolves both with the same geometry. One plan runs both, so
its bands fall in the same places for the values and the mask, and every path (whole, in
bands, strips out of core, Dask chunks, batch workers) gives the same bits:
``LayerPlan`` runs the combined plan exactly as it runs a plain one, and the per-pixel
steps here (:meth:`Masking.expand` before, :meth:`Masking.combine` after) look at one
pixel at a time. The mask's halo is the kernel's.

- ``interpolate`` (astropy's ``nan_treatment='interpolate'``, ``normalize_kernel=False``):
  per (filter, channel) layer k with weights w, ``S·Σ_valid w·x / Σ_valid w`` (S = Σ w),
  summed over the filter's layers. The combined bank holds each used layer twice: on the
  values (missing read as 0) and on the mask (valid = 1). Layers that sum to zero have
  no level to keep: refused (:data:`ZERO_SUM`).
- ``propagate``: the plain convolution of the values (missing read as 0), and the count
  of missing pixels under non-zero weights (the bank's support on the missing mask); an
  output that reads any missing pixel is missing.
- ``fill``: missing pixels read as ``cval``; one convolution.
- premultiplied alpha: ``interpolate`` with the alpha as each colour channel's weight
  (0 to 1) instead of a 0/1 mask; the alpha channel is filtered as it is; a missing pixel
  is transparent.

``min_valid`` adds the share of the kernel's weight (Σ|w| over the filter's layers) that
fell on valid pixels, one more output per filter; outputs below it are missing. Missing
outputs are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convvol.errors import ParameterError
from convvol.settings import MissingRule

# A layer whose |Σw| is at most this share of Σ|w| sums to zero, to float32 rounding.
ZERO_SUM = 1e-6
# An output whose valid weight |Σ_valid w| is at most this share of the layer's Σ|w| has
# none left, to float32 rounding (astropy's "bot == 0"): it is missing.
NO_WEIGHT = 1e-6


@dataclass(frozen=True, eq=False)
class Masking:
    """What a layer with missing pixels computes around its combined plan."""

    rule: MissingRule
    weights: np.ndarray = field(repr=False)  # the layer's own N×C×kh×kw (already flipped)
    combined: np.ndarray = field(repr=False)  # what the plan convolves: K'×C'×kh×kw
    filters: np.ndarray = field(repr=False)  # interpolate: each used layer's filter
    channels: np.ndarray = field(repr=False)  # ... and its channel
    sums: np.ndarray = field(repr=False)  # ... and its Σw
    magnitudes: np.ndarray = field(repr=False)  # ... and its Σ|w|
    weighted: np.ndarray = field(repr=False)  # ... False: taken as it is (no normalising)
    totals: np.ndarray = field(repr=False)  # each filter's Σ|w| (min_valid's whole)

    @property
    def n_filters(self) -> int:
        return int(self.weights.shape[0])

    @property
    def expanded_channels(self) -> int:
        """Channels of the combined volume (C'), per channel of the input."""
        return int(self.combined.shape[1])

    def expand(self, volume: np.ndarray, divisor: float = 1.0, cval: float = 0.0) -> np.ndarray:
        """The combined volume (rows × W × C') of an H×W×C volume (or strip) whose NaN
        are missing; ``divisor`` divides stored pixels as they are read."""
        if volume.dtype != np.float32 or divisor != 1.0:
            values = np.empty(volume.shape, np.float32)
            np.divide(volume, np.float32(divisor), out=values, casting="unsafe")
        else:
            values = volume
        valid = ~np.isnan(values)
        treatment = self.rule.treatment
        channels = int(np.shape(volume)[2])
        if treatment == "fill":
            parts = [np.where(valid, values, np.float32(cval))]
            if self.rule.min_valid:
                parts.append((~valid).astype(np.float32))
            return _stacked(parts)
        if treatment == "propagate":
            return _stacked([np.where(valid, values, np.float32(0)), (~valid).astype(np.float32)])
        certainty = valid.astype(np.float32)
        alpha = self.rule.alpha_channel
        if alpha is not None:
            opacity = np.clip(np.where(valid[..., alpha], values[..., alpha], 0), 0, 1)
            colour = [c for c in range(channels) if c != alpha]
            certainty[..., colour] *= opacity[..., np.newaxis]
            certainty[..., alpha] = 1.0  # the alpha itself is filtered as it is
        zeroed = np.where(valid, values, np.float32(0))
        return _stacked([certainty * zeroed, certainty])

    def cvals(self, cval: float, channels: int) -> np.ndarray:
        """The combined volume's value for each channel where the border is constant: a
        pixel of ``cval`` (valid) expanded, as the rows of constant border are."""
        pixel = np.full((1, 1, channels), cval, np.float32)
        return self.expand(pixel, 1.0, cval)[0, 0].copy()

    def combine(
        self,
        inner: np.ndarray,
        out: np.ndarray,
        bias: np.ndarray | None,
        missing_here: np.ndarray | None = None,
    ) -> None:
        """The layer's output band ``out`` (rows × W' × N) from the combined plan's band
        ``inner`` (rows × W' × K'), bias added, missing outputs NaN. ``missing_here``
        (rows × W' × C, bool: the input pixel at each output is missing) with
        ``preserve``."""
        n = self.n_filters
        treatment = self.rule.treatment
        missing = np.zeros(out.shape, bool)
        if treatment == "interpolate":
            used = self.filters.size
            out[...] = 0.0
            for k in range(used):
                filter_, num, den = int(self.filters[k]), inner[..., k], inner[..., used + k]
                if not self.weighted[k]:
                    out[..., filter_] += num
                    continue
                empty = np.abs(den) <= NO_WEIGHT * self.magnitudes[k]
                with np.errstate(divide="ignore", invalid="ignore"):
                    level = num * (self.sums[k] / den)
                if self.rule.alpha_channel is not None:  # fully transparent: no colour
                    level[empty] = 0.0
                else:
                    missing[..., filter_] |= empty
                out[..., filter_] += level
            share = (
                inner[..., 2 * used : 2 * used + n] / self.totals if self.rule.min_valid else None
            )
        else:
            out[...] = inner[..., :n]
            if treatment == "propagate":
                missing |= inner[..., n : 2 * n] > 0.5  # a count of missing taps
            share = (
                1.0 - inner[..., n : 2 * n] / self.totals
                if (treatment == "fill" and self.rule.min_valid)
                else None
            )
        if bias is not None:
            out += bias
        if share is not None:
            missing |= share < self.rule.min_valid
        if missing_here is not None:
            reads = np.abs(self.weights).sum(axis=(2, 3)) > 0  # N × C
            for filter_ in range(n):
                missing[..., filter_] |= missing_here[..., reads[filter_]].any(axis=-1)
        out[missing] = np.nan


def _stacked(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=2) if len(parts) > 1 else np.ascontiguousarray(parts[0])


def prepare_masking(weights: np.ndarray, rule: MissingRule) -> Masking:
    """The masking of a layer with (flipped, float32) ``weights`` under ``rule``: its
    combined bank, and what :meth:`Masking.combine` needs. A ParameterError when
    ``interpolate`` is undefined (a layer that sums to zero)."""
    n_filters, channels, kh, kw = weights.shape
    magnitude = np.abs(weights.astype(np.float64))
    totals = magnitude.sum(axis=(1, 2, 3))
    totals = np.where(totals > 0, totals, 1.0).astype(np.float32)
    empty = np.zeros(0, np.int64)
    if rule.treatment != "interpolate":
        blocks: list[np.ndarray] = []
        if rule.treatment == "propagate":
            support = (weights != 0).astype(np.float32)
            blocks = [_block(weights, 0, 2), _block(support, 1, 2)]
        elif rule.min_valid:
            blocks = [_block(weights, 0, 2), _block(magnitude.astype(np.float32), 1, 2)]
        else:
            blocks = [weights]
        none = np.zeros(0)
        return Masking(rule, weights, np.concatenate(blocks), empty, empty, none, none,
                       np.zeros(0, bool), totals)  # fmt: skip
    used = np.argwhere(magnitude.sum(axis=(2, 3)) > 0)
    filters, layer_channels = used[:, 0], used[:, 1]
    layers = weights[filters, layer_channels].astype(np.float64)
    sums = layers.sum(axis=(1, 2))
    magnitudes = np.abs(layers).sum(axis=(1, 2))
    weighted = np.ones(len(used), bool)
    if rule.alpha_channel is not None:
        weighted = layer_channels != rule.alpha_channel
    flat = np.abs(sums) <= ZERO_SUM * magnitudes
    if (flat & weighted).any():
        if rule.alpha_channel is None:
            k = int(np.argmax(flat))
            raise ParameterError(
                f"missing 'interpolate' is undefined for filter {int(filters[k])} (channel "
                f"{int(layer_channels[k])}): its weights sum to zero, so there is no level "
                "to renormalise to (an edge or difference filter)",
                hint="use --missing propagate (missing where any tap is missing) or fill",
            )
        weighted &= ~flat  # premultiplied: a difference of premultiplied colours
    count = len(used)
    combined = np.zeros((2 * count, 2 * channels, kh, kw), np.float32)
    combined[np.arange(count), layer_channels] = weights[filters, layer_channels]
    combined[count + np.arange(count), channels + layer_channels] = weights[filters, layer_channels]
    if rule.min_valid:
        share = np.zeros((n_filters, 2 * channels, kh, kw), np.float32)
        share[:, channels:] = magnitude
        combined = np.concatenate([combined, share])
    return Masking(rule, weights, combined, filters, layer_channels, sums.astype(np.float32),
                   magnitudes.astype(np.float32), weighted, totals)  # fmt: skip


def _block(weights: np.ndarray, position: int, count: int) -> np.ndarray:
    """``weights`` (N×C) reading the ``position``-th of ``count`` groups of C channels."""
    n_filters, channels, kh, kw = weights.shape
    block = np.zeros((n_filters, count * channels, kh, kw), np.float32)
    block[:, position * channels : (position + 1) * channels] = weights
    return block


def check_preserve(rule: MissingRule, padding: object, stride: int) -> None:
    """``preserve`` keeps missing pixels where they are: only on the input's own grid."""
    if rule.preserve and (padding != "same" or stride != 1):
        raise ParameterError(
            f"--preserve-missing keeps missing input pixels missing at the same place in the "
            f"output, which needs the input's grid: padding 'same' and stride 1 (got padding "
            f"{padding!r}, stride {stride})",
            hint="drop --preserve-missing, or use --padding same --stride 1",
        )
