"""Missing pixels and transparency as two convolutions of one plan.

A layer with a :class:`~convvol.settings.MissingRule` convolves its values (missing
pixels set aside) and a mask (valid, or missing, per pixel and channel) with the same
plan: its bands fall in the same places for both, and every path (whole, in bands,
strips out of core, Dask chunks, batch workers) gives the same bits, since the steps
around the plan (:meth:`Masking.volumes` before, :meth:`Masking.combine` after) look at
one pixel at a time. The mask's halo is the kernel's. Two ways:

- *paired*: the layer's own plan runs twice, on the values and on the mask. This is
  exact when each filter reads one channel at most (a grey image, a depthwise bank) for
  ``interpolate``, and when the weights are ≥ 0 for the mask's counts (``propagate``,
  ``min_valid``): two plain runs.
- *combined*: otherwise the plan is made for a wider problem: the values beside the mask
  as one volume, and a bank holding, for each layer, what it needs of both.

The rules:

- ``interpolate`` (astropy's ``nan_treatment='interpolate'``, ``normalize_kernel=False``):
  per (filter, channel) layer k with weights w, ``S·Σ_valid w·x / Σ_valid w`` (S = Σ w),
  summed over the filter's layers: each used layer on the values (missing read as 0) and
  on the mask (valid = 1). Layers that sum to zero have no level to keep: refused
  (:data:`ZERO_SUM`).
- ``propagate``: the plain convolution of the values (missing read as 0), and the
  missing mask under the weights (≥ 0; else their support, a count); an output that
  reads any missing pixel is missing.
- ``fill``: missing pixels read as ``cval``; one convolution.
- premultiplied alpha: ``interpolate`` with the alpha as each colour channel's weight
  (0 to 1) instead of a 0/1 mask; the alpha channel is filtered as it is; a missing pixel
  is transparent. An output with no opacity under the kernel is colour 0 when the alpha
  is kept (it is transparent), and missing when the alpha only weighs the colours (an
  image read as RGB: no filter reads the alpha, which is no channel of the result).

``min_valid`` compares the share of the kernel's weight (Σ|w| over the filter's layers)
that fell on valid pixels (the mask's sums when the weights are ≥ 0, else one more
output per filter); outputs below it are missing. Missing outputs are NaN.
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
# With weights ≥ 0, a missing tap shows as a positive weight on the missing mask; FFT's
# rounding leaves far less than this share of Σw where none is missing.
MISSED = 1e-12


@dataclass(frozen=True, eq=False)
class Masking:
    """What a layer with missing pixels computes around its plan."""

    rule: MissingRule
    weights: np.ndarray = field(repr=False)  # the layer's own N×C×kh×kw (already flipped)
    combined: np.ndarray = field(repr=False)  # what the plan convolves (paired: ``weights``)
    paired: bool  # the plan runs twice (values, mask) instead of once on the combined volume
    filters: np.ndarray = field(repr=False)  # interpolate: each normalised layer's filter
    sums: np.ndarray = field(repr=False)  # ... its Σw
    magnitudes: np.ndarray = field(repr=False)  # ... its Σ|w|
    weighted: np.ndarray = field(repr=False)  # ... False: taken as it is (no normalising)
    totals: np.ndarray = field(repr=False)  # each filter's Σ|w| (min_valid's whole)

    @property
    def n_filters(self) -> int:
        return int(self.weights.shape[0])

    @property
    def planned_channels(self) -> int:
        """Channels of the volume the plan convolves."""
        return int(self.combined.shape[1])

    def working_values(self, channels: int) -> tuple[int, int]:
        """Float32 values per input pixel and per output pixel this adds to a run."""
        if self.paired:
            return 2 * channels, self.n_filters
        return self.planned_channels, int(self.combined.shape[0])

    def volumes(
        self, volume: np.ndarray, divisor: float = 1.0, cval: float = 0.0
    ) -> list[np.ndarray]:
        """What the plan convolves, from an H×W×C volume (or strip) whose NaN are missing:
        [values, mask] when paired, else [the combined volume]. ``divisor`` divides
        stored pixels as they are read; ``cval`` is what ``fill`` reads."""
        if volume.dtype != np.float32 or divisor != 1.0:
            values = np.empty(volume.shape, np.float32)
            np.divide(volume, np.float32(divisor), out=values, casting="unsafe")
        else:
            values = volume
        missing = np.isnan(values)
        treatment = self.rule.treatment
        if treatment == "fill":
            parts = [np.where(missing, np.float32(cval), values)]
            if self.rule.min_valid:
                parts.append(missing.astype(np.float32))
        elif treatment == "propagate":
            parts = [np.where(missing, np.float32(0), values), missing.astype(np.float32)]
        else:
            zeroed = np.where(missing, np.float32(0), values)
            certainty = (~missing).astype(np.float32)
            alpha = self.rule.alpha_channel
            if alpha is not None:
                opacity = np.clip(zeroed[..., alpha], 0, 1)
                colour = [c for c in range(int(np.shape(volume)[2])) if c != alpha]
                certainty[..., colour] *= opacity[..., np.newaxis]
                certainty[..., alpha] = 1.0  # the alpha itself is filtered as it is
                zeroed *= certainty
            parts = [zeroed, certainty]
        if self.paired or len(parts) == 1:
            return parts
        return [np.concatenate(parts, axis=2)]

    def cvals(self, cval: float, channels: int) -> list[np.ndarray]:
        """Each volume's value per channel where the border is constant: a pixel of
        ``cval`` (valid) made into volumes, as the rows of constant border are."""
        pixel = np.full((1, 1, channels), cval, np.float32)
        return [part[0, 0].copy() for part in self.volumes(pixel, 1.0, cval)]

    def combine(
        self,
        parts: list[np.ndarray],
        out: np.ndarray,
        bias: np.ndarray | None,
        missing_here: np.ndarray | None = None,
    ) -> None:
        """The layer's output band ``out`` (rows × W' × N) from the plan's bands
        (``parts``: paired, the values' and the mask's, the first may be ``out`` itself;
        else the combined one), bias added, missing outputs NaN. ``missing_here``
        (rows × W' × C, bool: the input pixel under each output is missing) with
        ``preserve``."""
        n = self.n_filters
        rule = self.rule
        missing = np.zeros(out.shape, bool)
        share = None
        if self.paired:
            values, mask = parts
            counts = mask
        else:
            (inner,) = parts
            used = self.filters.size if rule.treatment == "interpolate" else n
            values, mask = inner[..., :used], inner[..., used : 2 * used]
            counts = mask[..., :n]
        if rule.treatment == "interpolate":
            levels = self._levels(values, mask, missing)
            if self.paired:
                out[...] = levels
            else:
                out[...] = 0.0
                for k in range(self.filters.size):
                    out[..., int(self.filters[k])] += levels[..., k]
            if rule.min_valid:  # the valid share of Σ|w|: the mask's sums (weights ≥ 0)
                valid = mask if self.paired else inner[..., -n:]
                share = valid / self.totals
        else:
            if values is not out:
                out[...] = values
            if rule.treatment == "propagate":
                missing |= counts > (MISSED * self.totals if self.paired else 0.5)
            elif rule.min_valid:
                share = 1.0 - counts / self.totals
        if bias is not None:
            out += bias
        if share is not None:
            missing |= share < rule.min_valid
        if missing_here is not None:
            reads = np.abs(self.weights).sum(axis=(2, 3)) > 0  # N × C
            for filter_ in range(n):
                missing[..., filter_] |= missing_here[..., reads[filter_]].any(axis=-1)
        out[missing] = np.nan

    def _levels(self, values: np.ndarray, mask: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """S·Σ_valid w·x / Σ_valid w per normalised layer (k); outputs where a layer has
        no valid weight left are marked in ``missing`` (premultiplied alpha: 0, clear)."""
        levels = np.empty(values.shape, np.float32)
        for k in range(self.filters.size):
            num, den = values[..., k], mask[..., k]
            if not self.weighted[k]:
                levels[..., k] = num
                continue
            empty = np.abs(den) <= NO_WEIGHT * self.magnitudes[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                np.multiply(num, self.sums[k] / den, out=levels[..., k])
            if self.rule.alpha_channel is not None and self.rule.alpha_kept:
                levels[..., k][empty] = 0.0  # fully transparent: no colour
            else:
                missing[..., int(self.filters[k])] |= empty
        return levels


def prepare_masking(weights: np.ndarray, rule: MissingRule) -> Masking:
    """The masking of a layer with (flipped, float32) ``weights`` under ``rule``: paired
    when two runs of its own plan are exact, else its combined bank. A ParameterError
    when ``interpolate`` is undefined (a layer that sums to zero)."""
    n_filters, channels, kh, kw = weights.shape
    magnitude = np.abs(weights.astype(np.float64))
    reads = magnitude.sum(axis=(2, 3)) > 0  # N × C
    totals = magnitude.sum(axis=(1, 2, 3))
    totals = np.where(totals > 0, totals, 1.0).astype(np.float32)
    nonnegative = bool((weights >= 0).all())
    none = np.zeros(0)
    if rule.treatment != "interpolate":
        counted = rule.treatment == "propagate" or rule.min_valid > 0
        if not counted or nonnegative:
            return Masking(rule, weights, weights, counted, none.astype(int), none, none,
                           none.astype(bool), totals)  # fmt: skip
        # the mask's counts need weights ≥ 0: its support (propagate) or |w| (min_valid)
        second = (weights != 0) if rule.treatment == "propagate" else magnitude
        blocks = [_block(weights, 0, 2), _block(second.astype(np.float32), 1, 2)]
        return Masking(rule, weights, np.concatenate(blocks), False, none.astype(int), none,
                       none, none.astype(bool), totals)  # fmt: skip
    paired = bool((reads.sum(axis=1) <= 1).all()) and (nonnegative or not rule.min_valid)
    if paired:  # a layer per filter: filter n is layer n
        filters = np.arange(n_filters)
        layer_channels = np.argmax(reads, axis=1)
        layers = weights.astype(np.float64).sum(axis=1)  # its one layer (the rest are 0)
        used = reads.any(axis=1)
    else:
        filters, layer_channels = np.nonzero(reads)
        layers = weights[filters, layer_channels].astype(np.float64)
        used = np.ones(filters.size, bool)
    sums = layers.sum(axis=(1, 2))
    magnitudes = np.abs(layers).sum(axis=(1, 2))
    weighted = used.copy()
    if rule.alpha_channel is not None:
        weighted &= layer_channels != rule.alpha_channel
    flat = (np.abs(sums) <= ZERO_SUM * magnitudes) & weighted
    if flat.any():
        if rule.alpha_channel is None:
            k = int(np.argmax(flat))
            raise ParameterError(
                f"missing 'interpolate' is undefined for filter {int(filters[k])} (channel "
                f"{int(layer_channels[k])}): its weights sum to zero, so there is no level "
                "to renormalise to (an edge or difference filter)",
                hint="use --missing propagate (missing where any tap is missing) or fill",
            )
        weighted &= ~flat  # premultiplied: a difference of premultiplied colours
    if paired:
        combined = weights
    else:
        count = filters.size
        combined = np.zeros((2 * count, 2 * channels, kh, kw), np.float32)
        combined[np.arange(count), layer_channels] = weights[filters, layer_channels]
        combined[count + np.arange(count), channels + layer_channels] = weights[
            filters, layer_channels
        ]
        if rule.min_valid:
            share = np.zeros((n_filters, 2 * channels, kh, kw), np.float32)
            share[:, channels:] = magnitude
            combined = np.concatenate([combined, share])
    return Masking(rule, weights, combined, paired, filters, sums.astype(np.float32),
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
