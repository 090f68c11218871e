"""Files in and out: the format table, readers, encoders, atomic writers, volumes larger
than memory, and fsspec URLs.

- :mod:`~convvol.io.formats`: output formats as a table (:data:`FORMATS`);
- :mod:`~convvol.io.readers`: images (Pillow) and ``.npy`` as volumes;
- :mod:`~convvol.io.tiff`: TIFF through tifffile, read and written;
- :mod:`~convvol.io.georef`: GeoTIFF tags, moved with the output's grid;
- :mod:`~convvol.io.metadata`: what an input says about itself (:class:`ImageInfo`),
  carried from the reader to the writers;
- :mod:`~convvol.io.encode`, :mod:`~convvol.io.png`: a volume into a file's bytes;
- :mod:`~convvol.io.writers`: atomic outputs (:class:`OutputSet`), standard output;
- :mod:`~convvol.io.streams`: row sources and sinks for volumes larger than memory;
- :mod:`~convvol.io.remote`: fsspec URLs.
"""

from convvol.io.formats import (
    DEFAULT_COMPRESS_LEVEL,
    FORMAT_ALIASES,
    FORMATS,
    Format,
    check_encodable,
    format_for_path,
    format_named,
)
from convvol.io.metadata import ImageInfo, ReadImage
from convvol.io.readers import (
    CHANNEL_MODES,
    pixels_to_volume,
    read_image,
    read_pixels,
    read_volume,
)
from convvol.io.writers import TEMPORARY_SUFFIX, OutputSet, temporary_name, write_volume

__all__ = [
    "CHANNEL_MODES",
    "DEFAULT_COMPRESS_LEVEL",
    "FORMATS",
    "FORMAT_ALIASES",
    "TEMPORARY_SUFFIX",
    "Format",
    "ImageInfo",
    "OutputSet",
    "ReadImage",
    "check_encodable",
    "format_for_path",
    "format_named",
    "pixels_to_volume",
    "read_image",
    "read_pixels",
    "read_volume",
    "temporary_name",
    "write_volume",
]
