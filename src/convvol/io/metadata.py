"""What an input file says about itself beyond its pixels, carried from reader to writers.

One frozen :class:`ImageInfo` travels with a job: the reader fills what the file has,
the writers put back what their format can hold. Each feature adds its own fields here
(the file's own sample type, georeferencing, nodata, colour profile, EXIF, ...) with a
default that means "the file had none", so every reader and writer stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convvol.io.georef import GeoReference


@dataclass(frozen=True)
class ImageInfo:
    """An input's description beside its pixels.

    ``format`` is the kind of file read (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"npy"``,
    ...; None for a stream of unknown kind); ``sample_type`` the numpy type its samples
    are stored in (None where the file has no sample type of its own, as ``.npy`` and
    Zarr volumes, whose values are the volume's).

    ``georeference`` holds a GeoTIFF's tags (None: none); ``nodata`` its GDAL_NODATA
    value in the file's stored units; ``gdal_metadata`` its GDAL_METADATA XML.
    """

    format: str | None = None
    sample_type: str | None = None
    georeference: GeoReference | None = None
    nodata: float | None = None
    gdal_metadata: str | None = None

    @property
    def geospatial(self) -> tuple[str, ...]:
        """What only a GeoTIFF can hold, named for a warning when it is dropped."""
        held = [("georeferencing", self.georeference), ("nodata", self.nodata),
                ("GDAL metadata", self.gdal_metadata)]  # fmt: skip
        return tuple(name for name, value in held if value is not None)


NO_INFO = ImageInfo()


@dataclass(frozen=True)
class ReadImage:
    """An input as read: stored values, the divisor that maps them to the volume's values,
    and what the file said about itself."""

    pixels: np.ndarray
    divisor: float
    info: ImageInfo = NO_INFO
