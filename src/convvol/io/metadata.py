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
    Zarr volumes, whose values are the volume's); ``nodata`` the stored value that marks
    a missing pixel (the default of ``--nodata``: a GeoTIFF's GDAL_NODATA, in the file's
    stored units); ``alpha_channel`` the channel that holds opacity (an LA or RGBA image
    read with ``channels="keep"``); ``alpha_weight`` the channel that holds the opacity of
    an LA or RGBA image read as RGB with its alpha kept to weigh the colours
    (``read_image(..., rgb_alpha=True)``): it is no channel of the result.

    ``georeference`` holds a GeoTIFF's tags (None: none); ``gdal_metadata`` its
    GDAL_METADATA XML.
    """

    format: str | None = None
    sample_type: str | None = None
    # Missing pixels and transparency (issue 15).
    nodata: float | None = None
    alpha_channel: int | None = None
    alpha_weight: int | None = None
    # Scientific rasters (issue 14): a GeoTIFF's georeferencing, carried unless --strip.
    georeference: GeoReference | None = None
    gdal_metadata: str | None = None
    # Photographs (issue 16): what the writers carry to the outputs unless --strip.
    icc_profile: bytes | None = None  # the embedded ICC colour profile, as stored
    exif: bytes | None = None  # EXIF, orientation reset to 1, thumbnail dropped
    xmp: bytes | None = None  # the XMP packet
    dpi: tuple[float, float] | None = None  # resolution, pixels per inch (x, y)
    text: tuple[tuple[str, str], ...] = ()  # PNG text chunks (keyword, text)
    jpeg_subsampling: int | None = None  # a JPEG's chroma subsampling (Pillow's 0, 1, 2)
    animation: Animation | None = None  # the frames' timing, for an animated input
    warnings: tuple[str, ...] = ()  # metadata dropped as unreadable, one line each

    @property
    def geospatial(self) -> tuple[str, ...]:
        """What only a GeoTIFF can hold, named for a warning when it is dropped."""
        held = [("georeferencing", self.georeference), ("nodata", self.nodata),
                ("GDAL metadata", self.gdal_metadata)]  # fmt: skip
        return tuple(name for name, value in held if value is not None)


@dataclass(frozen=True)
class Animation:
    """An animated input's timing: each frame's duration (ms), the loop count (0: for
    ever; None: played once, no loop extension) and each frame's disposal (Pillow's
    numbers for GIF and APNG; () where the format has none, as WebP in Pillow)."""

    durations: tuple[int, ...]
    loop: int | None = 0
    disposals: tuple[int, ...] = ()


NO_INFO = ImageInfo()


@dataclass(frozen=True)
class ReadImage:
    """An input as read: stored values, the divisor that maps them to the volume's values,
    and what the file said about itself."""

    pixels: np.ndarray
    divisor: float
    info: ImageInfo = NO_INFO
    frames: tuple[np.ndarray, ...] = ()  # an animation's every frame (pixels is the first)
