"""Generate the scientific samples: ``scene.tif`` and ``cells.tif``.

``scene.tif`` is a synthetic 4-band satellite scene: 96×96 pixels of float32 surface
reflectance (bands blue, green, red, near-infrared: fields, a river and a road), a
GeoTIFF in UTM zone 33N (EPSG:32633) with 10 m pixels, its upper-left corner at
easting 500 000 m, northing 4 100 000 m, nodata -9999, band names in GDAL_METADATA.

``cells.tif`` is a synthetic fluorescence micrograph as ImageJ writes it: 2 channels
(nuclei, membranes) of 128×128 12-bit counts in uint16, axes CYX.

Usage (from anywhere; the files are written next to this script)::

    python sample_images/make_scientific.py

Deterministic; uses numpy and tifffile only. Licence: CC0 1.0 (made for convvol).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
BANDS = ("blue", "green", "red", "nir")
# GeoKeyDirectory: version 1.1.0, 3 keys: a projected model, pixels as areas, EPSG:32633.
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)


def make_scene() -> np.ndarray:
    """bands × 96 × 96 float32 reflectance in [0, 0.6], rounded to 1e-4."""
    rng = np.random.default_rng(14)
    y, x = np.mgrid[0:96, 0:96].astype(np.float64)
    fields = ((x // 24 + y // 32) % 3).astype(np.float64)  # three crops in a patchwork
    river = np.abs(y - 40 - 12 * np.sin(x / 15)) < 4
    road = np.abs(x - 70 - 0.2 * y) < 1.5
    #                blue  green  red   nir   (typical reflectances)
    crop = np.array([[0.04, 0.08, 0.05, 0.45],
                     [0.06, 0.10, 0.09, 0.30],
                     [0.08, 0.12, 0.14, 0.22]])  # fmt: skip
    water, asphalt = np.array([0.06, 0.05, 0.03, 0.01]), np.array([0.12, 0.13, 0.14, 0.16])
    scene = crop[fields.astype(int)]  # H × W × 4
    scene[river] = water
    scene[road] = asphalt
    scene += rng.normal(0, 0.005, scene.shape)
    return np.round(np.clip(scene, 0, 0.6), 4).astype(np.float32).transpose(2, 0, 1)


def write_scene(path: Path) -> None:
    items = "".join(
        f'<Item name="DESCRIPTION" sample="{i}" role="description">{name}</Item>'
        for i, name in enumerate(BANDS)
    )
    tags = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),  # ModelPixelScale: 10 m
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4100000.0, 0.0), True),  # ModelTiepoint
        (34735, "H", len(GEOKEYS), GEOKEYS, True),
        (42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True),
        (42113, "s", 0, "-9999", True),
    ]
    tifffile.imwrite(path, np.moveaxis(make_scene(), 0, 2), photometric="minisblack",
                     planarconfig="contig", compression="zlib", predictor=3, metadata=None,
                     extratags=tags)  # fmt: skip


def make_cells() -> np.ndarray:
    """2 × 128 × 128 uint16 counts (12 bits): nuclei, and the membranes around them."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:128, 0:128].astype(np.float64)
    nuclei = np.zeros((128, 128))
    membranes = np.zeros((128, 128))
    for cy, cx in rng.uniform(12, 116, (9, 2)):
        distance = np.hypot(y - cy, x - cx)
        nuclei += 2600 * np.exp(-((distance / 6) ** 2))
        membranes += 1800 * np.exp(-(((distance - 11) / 1.5) ** 2))
    channels = np.stack([nuclei, membranes]) + 100  # the camera's offset
    counts = rng.poisson(channels).clip(0, 4095)  # shot noise, 12 bits
    return counts.astype(np.uint16)


def main() -> None:
    write_scene(HERE / "scene.tif")
    tifffile.imwrite(HERE / "cells.tif", make_cells(), imagej=True,
                     metadata={"axes": "CYX", "Labels": ["nuclei", "membranes"]},
                     compression="zlib")  # fmt: skip


if __name__ == "__main__":
    main()
