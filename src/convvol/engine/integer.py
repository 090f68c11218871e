"""Integer pixels through integer taps: exact sums, straight to pixels.

A bank whose filters each read one channel with integer weights (sharpen, emboss, the
Laplacians, Sobel and Prewitt kernels) run at stride 1 over stored 8- or 16-bit pixels has
an exact integer result: the weighted sum of the stored values. :func:`integer_plan`
recognises such a layer; its :meth:`IntegerPlan.render` computes the sums with the
``direct`` method's per-tap passes in int16 (int32 where int16 could overflow), a band of
rows at a time, and turns each band into pixels with integer arithmetic.

The pixels are those of the float path (:func:`convvol.pipeline.render_plans`) wherever
the float path itself is exact: its float32 sums carry rounding errors far below half a
level for these kernels, so rounding them gives the same integers (the tests check it).
Where a sum is too large for float32 to hold exactly, the integer path gives the exact
pixel and the float path may be one level off. The integer path is used only for
``--scale clip`` or ``abs`` (``signed`` rounds ties, ``minmax`` needs every value first),
no bias, and a constant border whose value is a whole number of levels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from convvol.engine.bands import run_bands
from convvol.engine.cost import band_rows_for
from convvol.engine.layer import LayerPlan
from convvol.engine.methods import direct

INTEGER_SCALES = ("clip", "abs")  # the --scale rules that look at one value at a time, exactly
# A band's working set. Larger than the float methods' bands: integer passes cost so little
# per value that each band's fixed costs (its edges, index maps, NumPy calls) matter, and
# fewer, larger bands render a 3000×2000 sharpen about a sixth faster (the tap passes still
# run over cache-sized chunks within a band). Within the engine's memory limit as always.
INTEGER_BAND_BYTES = 32 * 2**20


@dataclass(frozen=True, eq=False)
class IntegerPlan:
    """A layer's integer taps over stored pixels of one integer type, ready to render."""

    layer: LayerPlan
    kernel: direct.Kernel
    stored: np.dtype  # uint8 or uint16: the stored pixels
    sums: np.dtype  # int16 or int32: what the sums are computed in
    absolute: bool  # the result's magnitude (activation or scale 'abs'), else clipped at 0

    def render(self, stored: np.ndarray, pixels: np.ndarray, threads: int | None = None) -> None:
        """Write the layer's output over ``stored`` pixels into ``pixels`` (uint8 or
        uint16), band by band."""
        layer = self.layer
        layer.plan.check_band()
        top_in = int(np.iinfo(self.stored).max)
        top_out = int(np.iinfo(pixels.dtype).max)
        to_pixels = _to_pixels(top_in, top_out, self.absolute)
        _, width, channels = layer.in_shape
        height, out_width, n_filters = layer.out_shape
        item = self.sums.itemsize
        row_bytes = item * (layer.geometry.left + width + layer.geometry.right) * channels
        row_bytes += 3 * item * out_width * n_filters  # the sums and two scratch rows
        plan = layer.plan
        budget = plan.problem.budget_up_to(INTEGER_BAND_BYTES)
        band_rows = band_rows_for(row_bytes, budget, height, plan.threads)
        integer = replace(plan, kernel=self.kernel, band_rows=band_rows, method="direct")

        def sink(first: int, band: np.ndarray) -> None:
            to_pixels(band, pixels[first : first + band.shape[0]])

        cval = round(layer.settings.cval * top_in)
        run_bands(integer, stored, None, layer.geometry, layer.settings.border, cval, sink,
                  threads=threads, dtype=self.sums.type)  # fmt: skip


def integer_plan(
    layer: LayerPlan, stored: np.ndarray, divisor: float, scale: str
) -> IntegerPlan | None:
    """The integer way to render ``layer`` over ``stored`` pixels (whose values are
    ``stored / divisor``) with ``scale``, or None where it would not be exact."""
    settings = layer.settings
    if (
        stored.shape != layer.in_shape
        or stored.dtype not in (np.uint8, np.uint16)
        or divisor != np.iinfo(stored.dtype).max
        or scale not in INTEGER_SCALES
        or settings.stride != 1
        or (layer.bias is not None and layer.bias.any())
        or settings.activation not in ("none", "relu", "abs")
        or layer.masking is not None  # missing pixels and alpha: the float path's weights
        or layer.combine is not None  # expressions: computed on the filters' float values
        or layer.pad_values is not None  # a folded input normalisation: float weights
    ):
        return None
    top = int(np.iinfo(stored.dtype).max)
    cval = settings.cval
    if settings.border == "constant" and cval * top != round(cval * top):
        return None
    weights = layer.weights
    if weights.shape[2] * weights.shape[3] > direct.MAX_TAPS or not _whole(weights):
        return None
    taps = direct.tap_plan(weights)
    if taps is None:
        return None
    # Every partial sum of the taps lies within ±(top · Σ|w|) of a filter.
    reach = top * float(np.abs(weights).sum(axis=(1, 2, 3)).max())
    sums = next((np.dtype(t) for t in (np.int16, np.int32) if reach <= np.iinfo(t).max), None)
    if sums is None:
        return None
    whole = direct.Taps(
        taps.channels,
        tuple((np.rint(vector).astype(sums), offsets) for vector, offsets in taps.groups),
    )
    kernel = direct.Kernel(layer.plan.problem.shape, taps=whole)
    # The magnitude, unless a relu zeroed the negative sums first ('abs' then changes nothing).
    activation = settings.activation
    absolute = activation == "abs" or (scale == "abs" and activation != "relu")
    return IntegerPlan(layer, kernel, np.dtype(stored.dtype), sums, absolute)


def _whole(weights: np.ndarray) -> bool:
    """Whether every weight is a whole number."""
    return bool(np.all(np.rint(weights) == weights))


def _to_pixels(
    top_in: int, top_out: int, absolute: bool
) -> Callable[[np.ndarray, np.ndarray], None]:
    """Exact sums (in stored levels) into pixels: what rint(clip(sum / top_in) · top_out)
    gives, in integers (``absolute``: of the sums' magnitudes)."""

    def render(sums: np.ndarray, out: np.ndarray) -> None:
        if absolute:
            np.abs(sums, out=sums)
        if top_in == top_out:
            np.clip(sums, 0, top_out, out=out, casting="unsafe")
        elif top_out > top_in:  # 8 bits to 16: each level is 257 of the new ones, exactly
            np.clip(sums, 0, top_in, out=sums)
            np.multiply(sums, top_out // top_in, out=out, dtype=out.dtype, casting="unsafe")
        else:  # 16 bits to 8 (sums in int32): rint(s / 257), never halfway between two
            np.clip(sums, 0, top_in, out=sums)
            sums += (top_in // top_out) // 2
            np.floor_divide(sums, top_in // top_out, out=out, casting="unsafe")

    return render
