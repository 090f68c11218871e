"""GeoTIFF georeferencing: the tags that place a raster on the Earth, and how they change
when the filter changes the grid.

A filter's output pixel ``i`` (along either axis) is centred on input pixel
``i·stride + shift``, where ``shift`` is half the dilated kernel's reach less the
padding before the image (see :mod:`convvol.engine.geometry`): 0 for ``same`` padding
and an odd kernel, ``reach/2`` for ``valid``, ``-reach/2`` for ``full``, ``reach/2 − N``
for N pixels. :meth:`GeoReference.regridded` rewrites the tags so that every output
pixel's centre is georeferenced where its kernel's centre was: the pixel scale is
multiplied by the stride and the tie point (or the transformation) moved. Stacked
layers compose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # shapes only: nothing here runs the engine
    from convvol.engine import LayerPlan

# The GeoTIFF tags (and GDAL's two), by code.
MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
GEO_DOUBLE_PARAMS = 34736
GEO_ASCII_PARAMS = 34737
GDAL_METADATA = 42112
GDAL_NODATA = 42113
RASTER_TYPE_KEY = 1025  # GTRasterTypeGeoKey: 1 PixelIsArea (the default), 2 PixelIsPoint
PIXEL_IS_POINT = 2
GEO_TAGS = (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY,
            GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS)  # fmt: skip


@dataclass(frozen=True)
class GeoReference:
    """The GeoTIFF tags of a raster, as stored (None: the tag is absent)."""

    pixel_scale: tuple[float, ...] | None = None  # 33550: (sx, sy, sz)
    tiepoints: tuple[float, ...] | None = None  # 33922: (I, J, K, X, Y, Z) × n
    transformation: tuple[float, ...] | None = None  # 34264: a 4×4 matrix, row by row
    geokeys: tuple[int, ...] | None = None  # 34735
    double_params: tuple[float, ...] | None = None  # 34736
    ascii_params: str | None = None  # 34737

    @property
    def pixel_is_point(self) -> bool:
        """Whether raster coordinates name pixel centres (PixelIsPoint), not corners."""
        keys = self.geokeys or ()
        for at in range(4, len(keys) - 3, 4):  # after the header: (key, location, count, value)
            if keys[at] == RASTER_TYPE_KEY and keys[at + 1] == 0:
                return keys[at + 3] == PIXEL_IS_POINT
        return False

    def regridded(self, stride: float, shift_y: float, shift_x: float) -> GeoReference:
        """These tags for a raster whose pixel ``(i, j)`` is centred on this one's pixel
        ``(i·stride + shift_y, j·stride + shift_x)``, ``stride`` times as large.

        The pixel scale is multiplied by the stride; the tie point or transformation is
        moved so that each output pixel's centre is where its kernel's centre was. For
        PixelIsArea rasters (the default) the raster coordinate 0 is a pixel's corner,
        which moves by the shift and by half a pixel of each grid, ``(1 − stride)/2``: a
        5×5 mean with ``--stride 5 --padding valid`` keeps the origin, as a block average
        must; with stride 1 the move is the shift alone.
        """
        # Raster coordinate x' of the new grid is x = x'·stride + d of the old one.
        area = 0.0 if self.pixel_is_point else 0.5 - 0.5 * stride
        offset_y, offset_x = shift_y + area, shift_x + area
        changed = self
        if self.pixel_scale is not None:
            scale = list(self.pixel_scale)
            scale[0] *= stride
            if len(scale) > 1:
                scale[1] *= stride
            changed = replace(changed, pixel_scale=tuple(scale))
        if self.tiepoints is not None:
            points = list(self.tiepoints)
            for at in range(0, len(points) - 5, 6):
                if self.pixel_scale is not None and len(points) == 6:
                    # One tie point and a scale: keep it at raster (0, 0), as GDAL writes.
                    i, j = points[0], points[1]
                    points[3] += (offset_x - i) * self.pixel_scale[0]
                    points[4] -= (offset_y - j) * self.pixel_scale[1]
                    points[0] = points[1] = 0.0
                else:  # control points: the same places, named in the new grid
                    points[at] = (points[at] - offset_x) / stride
                    points[at + 1] = (points[at + 1] - offset_y) / stride
            changed = replace(changed, tiepoints=tuple(points))
        if self.transformation is not None and len(self.transformation) == 16:
            m = self.transformation
            rows = [m[r * 4 : r * 4 + 4] for r in range(4)]
            # M' = M · [[s, 0, 0, dx], [0, s, 0, dy], [0, 0, 1, 0], [0, 0, 0, 1]]
            new = [
                (row[0] * stride, row[1] * stride, row[2],
                 row[0] * offset_x + row[1] * offset_y + row[3])
                for row in rows
            ]  # fmt: skip
            changed = replace(changed, transformation=tuple(v for row in new for v in row))
        return changed


def grid_of(layers: Sequence[LayerPlan]) -> tuple[int, float, float]:
    """(stride, shift_y, shift_x) of a stack of layer plans: the output's pixel ``(i, j)``
    is centred on the input's ``(i·stride + shift_y, j·stride + shift_x)``."""
    stride, shift_y, shift_x = 1, 0.0, 0.0
    for layer in layers:
        step, dilation = layer.stride, layer.settings.dilation
        kernel_height, kernel_width = (int(n) for n in layer.weights.shape[2:])
        geometry = layer.geometry
        centre_y = dilation * (kernel_height - 1) / 2 - geometry.top
        centre_x = dilation * (kernel_width - 1) / 2 - geometry.left
        # This layer's pixel i is centred on its input's i·step + centre, which is the
        # original input's (i·step + centre)·stride + shift.
        shift_y += centre_y * stride
        shift_x += centre_x * stride
        stride *= step
    return stride, shift_y, shift_x
