"""Scientific TIFFs: any samples in, the right TIFF out, in the file's own units, with its
georeferencing (issue 14). Fixtures are made with tifffile (and rasterio, where the test
checks GDAL's own view of the result) in temporary directories."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner, Result
from PIL import Image
from scipy import ndimage

import convvol
from convvol.bank import load_bank
from convvol.cli import cli
from convvol.io.georef import GeoReference
from convvol.io.tiff import gdal_metadata
from reference import reference_convolve

# rasterio's own code still composes affine transforms with `*` (affine ≥ 3.1 warns).
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
IDENTITY = "name: identity\nfilters:\n  - name: same\n    kernel: identity\n    depthwise: true\n"


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def refused(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def identity(workdir: Path) -> Path:
    path = workdir / "identity.yaml"
    path.write_text(IDENTITY)
    return path


def samples(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Random samples over the whole range of ``dtype`` (floats: finite, signed)."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(kind)
    info = np.iinfo(kind)
    # 32-bit integers: exact up to 2**22 (read as unit; 2**24 as native values), as float32
    # holds them (see docs/scientific.md).
    low, high = (max(info.min, -(2**22)), min(info.max, 2**22)) if kind.itemsize == 4 else (
        info.min, info.max)  # fmt: skip
    return rng.integers(low, high, shape, endpoint=True).astype(kind)


# --- georeferenced scenes (rasterio: GDAL's own view) -------------------------------------


def geotiff(path: Path, data: np.ndarray, **profile: object) -> None:
    """A GeoTIFF of ``data`` (bands × H × W) written by GDAL, in UTM 33N, 10 m pixels."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    count, height, width = data.shape
    options = {"driver": "GTiff", "width": width, "height": height, "count": count,
               "dtype": data.dtype.name, "crs": "EPSG:32633",
               "transform": from_origin(500000, 4100000, 10, 10), "nodata": -9999.0,
               **profile}  # fmt: skip
    with rasterio.open(path, "w", **options) as dataset:
        dataset.write(data)


def scene(seed: int = 3) -> np.ndarray:
    """4 bands of smooth, NaN-free float32 reflectance-like values."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:37, 0:45].astype(np.float64)
    bands = [np.sin(y / (5 + b)) * np.cos(x / (7 + b)) + 0.1 * rng.random(y.shape)
             for b in range(4)]  # fmt: skip
    return np.stack(bands).astype(np.float32)


def blur_reference(data: np.ndarray, **settings: object) -> np.ndarray:
    """The blur bank over a bands × H × W scene, in float64, as bands × H' × W'."""
    weights = load_bank("blur").resolve(data.shape[0]).weights
    volume = np.moveaxis(data, 0, 2)
    return np.moveaxis(reference_convolve(volume, weights, **settings), 2, 0)


def test_a_float_geotiff_comes_back_as_a_float_geotiff(workdir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    data = scene()
    geotiff(workdir / "scene.tif", data)
    ok(run("apply", "scene.tif", "-f", "blur", "--channels", "keep", "-o", "out.tif"))
    with (
        rasterio.open(workdir / "scene.tif") as before,
        rasterio.open(workdir / "out.tif") as after,
    ):
        assert (after.count, after.dtypes) == (4, ("float32",) * 4)
        assert after.crs == before.crs
        assert after.transform == before.transform
        assert after.nodata == before.nodata == -9999.0
        assert after.descriptions == ("blur_red", "blur_green", "blur_blue", "blur_alpha")
        values = after.read()
    np.testing.assert_allclose(values, blur_reference(data), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("options", "stride", "shift", "settings"),
    [
        (["--stride", "2"], 2, 0, {"stride": 2}),
        (["--stride", "3"], 3, 0, {"stride": 3}),
        (["--padding", "valid"], 1, 5, {"padding": "valid"}),  # an 11×11 kernel: reach 10
        (["--padding", "full"], 1, -5, {"padding": "full"}),
        (["--padding", "2"], 1, 3, {"padding": 2}),
        (["--padding", "valid", "--stride", "2", "--dilation", "2"], 2, 10,
         {"padding": "valid", "stride": 2, "dilation": 2}),
    ],
)  # fmt: skip
def test_the_transform_follows_the_grid(
    workdir: Path, options: list[str], stride: int, shift: int, settings: dict[str, object]
) -> None:
    """Output pixel (i, j) is centred on input pixel (i·stride + shift, j·stride + shift):
    the pixel size is multiplied by the stride, and each output pixel's centre lies where
    its kernel's centre was."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    data = scene()
    geotiff(workdir / "scene.tif", data)
    ok(run("apply", "scene.tif", "-f", "blur", "--channels", "keep", "-o", "out.tif", *options))
    with (
        rasterio.open(workdir / "scene.tif") as before,
        rasterio.open(workdir / "out.tif") as after,
    ):
        # the corner of output pixel 0: the centre of input pixel `shift`, less half an
        # output pixel
        corner = shift + 0.5 - stride / 2
        expected = before.transform @ Affine.translation(corner, corner) @ Affine.scale(stride)
        assert after.transform.almost_equals(expected, precision=1e-9)
        assert after.crs == before.crs
        height, width = after.shape
        for i, j in [(0, 0), (height - 1, width - 1), (1, 2)]:  # pixel centres line up
            assert after.xy(i, j) == pytest.approx(
                before.xy(i * stride + shift, j * stride + shift), abs=1e-6
            )
        values = after.read()
    np.testing.assert_allclose(values, blur_reference(data, **settings), rtol=0, atol=2e-6)


def test_a_block_average_keeps_the_origin(workdir: Path) -> None:
    """A 5×5 mean at stride 5 over valid pixels is a block average: GDAL's own grid."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    data = scene()[:, :35, :45]
    geotiff(workdir / "scene.tif", data)
    ok(run("apply", "scene.tif", "-f", "box_blur", "--channels", "keep", "--stride", "5",
           "--padding", "valid", "-o", "coarse.tif"))  # fmt: skip
    with (
        rasterio.open(workdir / "scene.tif") as before,
        rasterio.open(workdir / "coarse.tif") as after,
    ):
        assert after.transform == before.transform @ Affine.scale(5)
        assert after.shape == (7, 9)
        blocks = data.reshape(4, 7, 5, 9, 5).mean(axis=(2, 4))
        np.testing.assert_allclose(after.read(), blocks, rtol=0, atol=2e-6)


def test_pixel_is_point_tie_points_name_centres() -> None:
    keys = (1, 1, 0, 1, 1025, 0, 1, 2)  # GTRasterTypeGeoKey = PixelIsPoint
    geo = GeoReference(pixel_scale=(10.0, 10.0, 0.0), tiepoints=(0, 0, 0, 1000.0, 2000.0, 0),
                       geokeys=keys)  # fmt: skip
    moved = geo.regridded(2, 3.0, 5.0)
    assert moved.pixel_scale == (20.0, 20.0, 0.0)
    assert moved.tiepoints == (0.0, 0.0, 0, 1050.0, 1970.0, 0)


def test_zstd_reads_back_identically(workdir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    geotiff(workdir / "scene.tif", scene())
    for codec in ("none", "zstd", "deflate", "lzw", "packbits"):
        ok(run("apply", "scene.tif", "-f", "blur", "--channels", "keep", "-o", f"{codec}.tif",
               "--compress", codec, "--compress-level", "9"))  # fmt: skip
    plain = tifffile.imread(workdir / "none.tif")
    for codec, name in [("zstd", "ZSTD"), ("deflate", "ADOBE_DEFLATE"), ("lzw", "LZW"),
                        ("packbits", "PACKBITS")]:  # fmt: skip
        with tifffile.TiffFile(workdir / f"{codec}.tif") as tif:
            assert tif.pages[0].compression.name == name
            np.testing.assert_array_equal(tif.asarray(), plain)
        with rasterio.open(workdir / f"{codec}.tif") as dataset:
            np.testing.assert_array_equal(np.moveaxis(dataset.read(), 0, 2), plain)
    assert (workdir / "zstd.tif").stat().st_size < (workdir / "none.tif").stat().st_size


def test_the_compress_level_is_applied(workdir: Path) -> None:
    volume = np.zeros((64, 64, 1), np.uint8)
    volume[::3] = 200
    tifffile.imwrite(workdir / "in.tif", volume[:, :, 0])
    for level in ("0", "9"):
        ok(run("apply", "in.tif", "-f", "blur", "--channels", "keep", "-o", f"l{level}.tif",
               "--compress-level", level))  # fmt: skip
    assert (workdir / "l9.tif").stat().st_size < (workdir / "l0.tif").stat().st_size


def test_png_output_warns_what_it_drops_and_strip_is_silent(workdir: Path) -> None:
    geotiff(workdir / "scene.tif", (scene() * 100).clip(0, 255).astype(np.uint8), nodata=0)
    warned = run("apply", "scene.tif", "-f", "blur", "-o", "out.png")
    ok(warned)
    lines = [line for line in warned.stderr.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert "georeferencing" in lines[0]
    assert "nodata" in lines[0]
    assert "out.png" in lines[0]
    quiet = run("apply", "scene.tif", "-f", "blur", "-o", "out2.png", "--strip")
    ok(quiet)
    assert "warning" not in quiet.stderr


def test_strip_drops_the_georeferencing_from_a_tiff(workdir: Path) -> None:
    geotiff(workdir / "scene.tif", scene())
    ok(run("apply", "scene.tif", "-f", "blur", "--channels", "keep", "-o", "out.tif", "--strip"))
    with tifffile.TiffFile(workdir / "out.tif") as tif:
        tags = tif.pages[0].tags
        assert not any(code in tags for code in (33550, 33922, 34735, 42113))
        assert 42112 in tags  # the band names are the result's, not the input's metadata


def test_a_model_transformation_is_moved_and_scaled() -> None:
    """ModelTransformation (a rotated grid): M' = M · [[s, 0, 0, dx], [0, s, 0, dy], ...],
    d the shift less half a pixel of each grid (PixelIsArea): (1 − s)/2."""
    matrix = (2.0, 0.5, 0, 100.0, 0.25, -3.0, 0, 50.0, 0, 0, 1, 0, 0, 0, 0, 1)
    moved = GeoReference(transformation=matrix).regridded(2, 1.5, 4.0)
    m = np.array(matrix).reshape(4, 4)
    grid = np.array([[2, 0, 0, 3.5], [0, 2, 0, 1.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(np.array(moved.transformation).reshape(4, 4), m @ grid)


def test_control_points_are_renamed_in_the_new_grid() -> None:
    points = (0, 0, 0, 10.0, 20.0, 0, 8, 6, 0, 30.0, 40.0, 0)
    moved = GeoReference(tiepoints=points).regridded(2, 1.0, 2.0)
    # raster x = 2·x' + 1.5 (shift 2, less half a pixel), y = 2·y' + 0.5
    assert moved.tiepoints == (-0.75, -0.25, 0, 10.0, 20.0, 0, 3.25, 2.75, 0, 30.0, 40.0, 0)


def test_gdal_metadata_keeps_dataset_items_and_names_the_bands() -> None:
    original = (
        '<GDALMetadata><Item name="AREA">x</Item>'
        '<Item name="DESCRIPTION" sample="0" role="description">old</Item></GDALMetadata>'
    )
    xml = gdal_metadata(["a<b", "c"], original)
    assert xml is not None
    assert '<Item name="AREA">x</Item>' in xml
    assert "old" not in xml
    assert '<Item name="DESCRIPTION" sample="0" role="description">a&lt;b</Item>' in xml


# --- any TIFF in ------------------------------------------------------------------------

SAMPLE_TYPES = ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32",
                "float64"]  # fmt: skip


@pytest.mark.parametrize("bands", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("planar", [False, True])
@pytest.mark.parametrize("dtype", SAMPLE_TYPES)
def test_multi_sample_tiffs_round_trip_bit_for_bit(
    workdir: Path, identity: Path, bands: int, planar: bool, dtype: str
) -> None:
    """An identity bank with --channels keep and no other option gives the file back: the
    same samples (floats as float32), as one image of N samples."""
    stored = samples((9, 11, bands), dtype, seed=bands)
    if bands == 1:  # one sample: contiguous and planar are the same file
        tifffile.imwrite(workdir / "in.tif", stored[:, :, 0], photometric="minisblack")
    elif planar:
        tifffile.imwrite(workdir / "in.tif", np.moveaxis(stored, 2, 0), planarconfig="separate",
                         photometric="minisblack")  # fmt: skip
    else:
        photometric = "rgb" if bands == 3 and dtype == "uint8" else "minisblack"
        tifffile.imwrite(workdir / "in.tif", stored, planarconfig="contig", photometric=photometric)
    ok(run("apply", "in.tif", "-f", identity, "--channels", "keep", "-o", "out.tif"))
    with tifffile.TiffFile(workdir / "out.tif") as tif:
        assert len(tif.pages) == 1
        page = tif.pages[0]
        assert page.samplesperpixel == bands
        assert page.planarconfig == 1  # contiguous
        back = tif.asarray()
    expected_type = "float32" if dtype.startswith("float") else dtype
    assert back.dtype == np.dtype(expected_type)
    np.testing.assert_array_equal(back.reshape(stored.shape), stored.astype(expected_type))


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw", "packbits", "lzma"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_tiled_compressed_input(workdir: Path, compression: str, dtype: str) -> None:
    stored = samples((70, 50, 3), dtype, seed=5)
    predictor = None if compression in ("packbits",) else True
    layout = {"photometric": "minisblack", "planarconfig": "contig"}
    tifffile.imwrite(workdir / "tiled.tif", stored, tile=(32, 16), compression=compression,
                     predictor=predictor, **layout)  # fmt: skip
    tifffile.imwrite(workdir / "plain.tif", stored, **layout)
    tiled = convvol.read_volume(workdir / "tiled.tif", channels="keep")
    plain = convvol.read_volume(workdir / "plain.tif", channels="keep")
    np.testing.assert_array_equal(tiled, plain)
    expected = stored / (65535 if dtype == "uint16" else 1)
    np.testing.assert_allclose(tiled, expected, rtol=1e-7, atol=0)


def test_bigtiff_input(workdir: Path) -> None:
    stored = samples((20, 30, 2), "uint16", seed=6)
    tifffile.imwrite(workdir / "big.tif", stored, bigtiff=True, photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
    pixels, divisor = convvol.read_pixels(workdir / "big.tif", channels="keep")
    np.testing.assert_array_equal(pixels, stored)
    assert divisor == 65535


def test_values_native_keeps_the_files_numbers(workdir: Path, identity: Path) -> None:
    counts = np.full((8, 8), 3000, np.uint16)
    counts[2:4] = 40000
    tifffile.imwrite(workdir / "counts.tif", counts)
    volume = convvol.read_volume(workdir / "counts.tif", values="native")
    assert volume[0, 0, 0] == 3000.0
    assert volume[2, 0, 0] == 40000.0
    ok(run("apply", "counts.tif", "-f", identity, "--values", "native", "--depth", "float",
           "--channels", "keep", "-o", "float.tif"))  # fmt: skip
    np.testing.assert_array_equal(tifffile.imread(workdir / "float.tif"), counts.astype(np.float32))
    # an 8-bit output of native values: the response rounded and clipped to 0..255
    ok(run("apply", "counts.tif", "-f", identity, "--values", "native", "--depth", "8",
           "-o", "eight.tif"))  # fmt: skip
    assert (tifffile.imread(workdir / "eight.tif") == 255).all()
    # --scale in the file's units: signed puts zero at mid-grey of the output type
    half = np.full((4, 4), 100, np.uint16)
    tifffile.imwrite(workdir / "half.tif", half)
    ok(run("apply", "half.tif", "-f", identity, "--values", "native", "--scale", "signed",
           "-o", "signed.tif"))  # fmt: skip
    np.testing.assert_array_equal(tifffile.imread(workdir / "signed.tif"), 65535 // 2 + 50 + 1)


def test_depth_auto_keeps_sixteen_bits_of_a_png(workdir: Path, identity: Path) -> None:
    """A 12-bit-in-16 PNG stays 16-bit, bit for bit (it came out 8-bit before)."""
    stored = (samples((10, 12), "uint16", seed=8) >> 4).astype(np.uint16)  # 12 bits
    Image.fromarray(stored).save(workdir / "twelve.png")
    ok(run("apply", "twelve.png", "-f", identity, "--channels", "keep", "-o", "out.png"))
    with Image.open(workdir / "out.png") as image:
        np.testing.assert_array_equal(np.asarray(image), stored)
    ok(run("apply", "twelve.png", "-f", identity, "--channels", "keep", "-o", "out.tif"))
    np.testing.assert_array_equal(tifffile.imread(workdir / "out.tif"), stored)


def test_a_sixteen_bit_rgb_png_round_trips(workdir: Path, identity: Path) -> None:
    stored = samples((7, 9, 3), "uint16", seed=26)
    convvol.write_volume(workdir / "rgb48.png", stored, depth=16, quantized=True)
    ok(run("apply", "rgb48.png", "-f", identity, "--channels", "keep", "-o", "out.png"))
    pixels, divisor = convvol.read_pixels(workdir / "out.png", channels="keep")
    np.testing.assert_array_equal(pixels, stored)
    assert divisor == 65535


def test_depth_auto_gives_eight_bits_from_npy(workdir: Path, identity: Path) -> None:
    np.save(workdir / "v.npy", np.full((4, 4, 1), 0.5, np.float32))
    ok(run("apply", "v.npy", "-f", identity, "-o", "out.tif"))
    assert tifffile.imread(workdir / "out.tif").dtype == np.uint8


def test_depth_float_is_tiff_only(workdir: Path, identity: Path) -> None:
    tifffile.imwrite(workdir / "in.tif", np.ones((4, 4), np.float32))
    refused(run("apply", "in.tif", "-f", identity, "--depth", "float", "-o", "out.png"),
            "out.png", "float", ".tif")  # fmt: skip
    assert not (workdir / "out.png").exists()


def test_float_output_is_raw(workdir: Path, identity: Path) -> None:
    """Float data written to .tif is no longer clipped to [0, 1] and quantised."""
    stored = samples((6, 7), "float32", seed=9)
    tifffile.imwrite(workdir / "in.tif", stored)
    ok(run("apply", "in.tif", "-f", identity, "--channels", "keep", "-o", "out.tif"))
    np.testing.assert_array_equal(tifffile.imread(workdir / "out.tif"), stored)


def test_rgb_photometric_for_three_integer_channels(workdir: Path) -> None:
    pattern = Path(__file__).parents[1] / "sample_images" / "pattern.png"
    ok(run("apply", pattern, "-f", "blur", "-o", "rgb.tif"))
    with tifffile.TiffFile(workdir / "rgb.tif") as tif:
        assert tif.pages[0].photometric == 2
        assert tif.pages[0].dtype == np.uint8


# --- stacks -----------------------------------------------------------------------------


def test_an_imagej_channel_stack_reads_as_channels(workdir: Path) -> None:
    stack = samples((3, 16, 20), "uint16", seed=10)  # C, Y, X
    tifffile.imwrite(workdir / "cells.tif", stack, imagej=True, metadata={"axes": "CYX"})
    pixels, divisor = convvol.read_pixels(workdir / "cells.tif")
    np.testing.assert_array_equal(pixels, np.moveaxis(stack, 0, 2))
    assert divisor == 65535


def test_an_imagej_z_stack_is_refused_with_a_hint(workdir: Path) -> None:
    stack = samples((5, 2, 16, 20), "uint16", seed=11)  # Z, C, Y, X
    tifffile.imwrite(workdir / "zstack.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    result = run("apply", "zstack.tif", "-f", "blur", "-o", "out.tif")
    refused(result, "zstack.tif", "5 Z slices", "ZCYX", "hint:")
    assert not (workdir / "out.tif").exists()


def test_a_time_series_is_refused_with_a_hint(workdir: Path) -> None:
    series = samples((4, 16, 20), "uint8", seed=12)
    tifffile.imwrite(workdir / "movie.tif", series, imagej=True, metadata={"axes": "TYX"})
    refused(run("apply", "movie.tif", "-f", "blur", "-o", "out.tif"), "4 time points")


def test_overviews_are_not_channels(workdir: Path) -> None:
    """A pyramid's reduced-resolution pages (as in a COG) are not read as more bands."""
    full = samples((32, 32), "uint8", seed=13)
    with tifffile.TiffWriter(workdir / "pyramid.tif") as tif:
        tif.write(full, subifds=0)
        tif.write(full[::2, ::2], subfiletype=1)
    pixels, _ = convvol.read_pixels(workdir / "pyramid.tif", channels="keep")
    np.testing.assert_array_equal(pixels[:, :, 0], full)
    assert pixels.shape == (32, 32, 1)


def test_a_multi_page_output_of_old_convvol_still_reads_as_channels(workdir: Path) -> None:
    pages = [Image.fromarray(samples((6, 5), "uint8", seed=s)) for s in range(4)]
    pages[0].save(workdir / "old.tif", save_all=True, append_images=pages[1:])
    pixels, _ = convvol.read_pixels(workdir / "old.tif")
    np.testing.assert_array_equal(pixels, np.stack([np.asarray(p) for p in pages], axis=2))


# --- hostile TIFFs ------------------------------------------------------------------------


def with_size(data: bytes, width: int, height: int) -> bytes:
    """A little-endian classic TIFF whose first page declares width × height (as LONGs)."""
    out = bytearray(data)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    for entry in range(count):
        at = ifd + 2 + 12 * entry
        tag, _kind, _n = struct.unpack_from("<HHI", out, at)
        if tag in (256, 257):
            struct.pack_into("<HHII", out, at, tag, 4, 1, width if tag == 256 else height)
    return bytes(out)


@pytest.mark.parametrize("compression", ["zstd", "zlib"])
def test_a_tiff_bomb_is_refused_from_its_header(workdir: Path, compression: str) -> None:
    small = workdir / "small.tif"
    tifffile.imwrite(small, np.zeros((64, 64), np.uint8), compression=compression)
    bomb = with_size(small.read_bytes(), 100_000, 100_000)
    assert len(bomb) < 4096
    (workdir / "bomb.tif").write_bytes(bomb)
    result = run("apply", "bomb.tif", "-f", "blur", "-o", "out.tif")
    refused(result, "bomb.tif", "100000×100000", "--max-pixels")
    with pytest.raises(convvol.VolumeError, match="decompression bomb"):
        convvol.read_volume(workdir / "bomb.tif")


def test_every_page_is_checked_before_decoding(workdir: Path) -> None:
    path = workdir / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(5):
            tif.write(np.zeros((100, 100), np.uint8), compression="zlib")
    with pytest.raises(convvol.VolumeError, match="more than the limit of 40,000"):
        convvol.read_volume(path, max_pixels=10_000)  # each page fits; all five do not


def test_strips_beyond_the_file_are_refused(workdir: Path) -> None:
    path = workdir / "cut.tif"
    tifffile.imwrite(path, samples((64, 64), "uint16", seed=14))
    data = path.read_bytes()
    (workdir / "cut.tif").write_bytes(data[: len(data) // 2] + data[-512:])
    result = run("apply", "cut.tif", "-f", "blur", "-o", "out.tif")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "cut.tif" in result.stderr


# --- larger than memory: TIFFs strip by strip ---------------------------------------------


def both_ways(workdir: Path, source: str, *options: str) -> tuple[np.ndarray, np.ndarray]:
    """The result read whole and the result streamed strip by strip (--max-memory)."""
    ok(run("apply", source, *options, "-o", "whole.tif"))
    ok(run("apply", source, *options, "-o", "streamed.tif", "--max-memory", "1K"))
    return tifffile.imread(workdir / "whole.tif"), tifffile.imread(workdir / "streamed.tif")


@pytest.mark.parametrize(
    "layout",
    [{"tile": (32, 48), "compression": "zstd", "predictor": True},
     {"rowsperstrip": 7, "compression": "zlib"},
     {"planarconfig": "separate", "rowsperstrip": 16, "compression": "lzw"}],
)  # fmt: skip
@pytest.mark.parametrize("dtype", ["uint16", "float32", "int16"])
def test_a_streamed_tiff_equals_the_whole_one(
    workdir: Path, layout: dict[str, object], dtype: str
) -> None:
    stored = samples((300, 270, 3), dtype, seed=20)
    if layout.get("planarconfig") == "separate":
        tifffile.imwrite(workdir / "big.tif", np.moveaxis(stored, 2, 0), photometric="minisblack",
                         **layout)  # fmt: skip
    else:
        tifffile.imwrite(workdir / "big.tif", stored, photometric="minisblack",
                         planarconfig="contig", **layout)  # fmt: skip
    whole, streamed = both_ways(workdir, "big.tif", "-f", "blur", "-f", "sharpen",
                                "--channels", "keep")  # fmt: skip
    assert streamed.dtype == np.dtype("float32" if dtype == "float32" else dtype)
    np.testing.assert_array_equal(streamed, whole)
    with tifffile.TiffFile(workdir / "streamed.tif") as tif:
        assert tif.pages[0].is_tiled  # written a row of tiles at a time
        assert tif.pages[0].compression.name == "ADOBE_DEFLATE"


def test_a_streamed_geotiff_keeps_its_georeferencing(workdir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    geotiff(workdir / "scene.tif", scene())
    options = ("-f", "blur", "--channels", "keep", "--stride", "2", "--padding", "valid")
    whole, streamed = both_ways(workdir, "scene.tif", *options)
    np.testing.assert_array_equal(streamed, whole)
    with rasterio.open(workdir / "whole.tif") as a, rasterio.open(workdir / "streamed.tif") as b:
        assert b.transform == a.transform
        assert b.crs == a.crs
        assert b.nodata == a.nodata
        assert b.descriptions == a.descriptions


def test_npy_to_tiff_and_tiff_to_npy_stream(workdir: Path) -> None:
    np.save(workdir / "v.npy", samples((90, 80, 2), "float32", seed=21) / 100)
    whole, streamed = both_ways(workdir, "v.npy", "-f", "blur", "--scale", "abs")
    assert streamed.dtype == np.uint8  # no sample type of its own: 8 bits, as for images
    np.testing.assert_array_equal(streamed, whole)
    tifffile.imwrite(workdir / "t.tif", samples((90, 80), "uint16", seed=22))
    ok(run("apply", "t.tif", "-f", "blur", "--channels", "keep", "-o", "a.npy"))
    ok(run("apply", "t.tif", "-f", "blur", "--channels", "keep", "-o", "b.npy",
           "--max-memory", "1K"))  # fmt: skip
    np.testing.assert_array_equal(np.load(workdir / "b.npy"), np.load(workdir / "a.npy"))


def test_minmax_is_read_whole_even_under_max_memory(workdir: Path) -> None:
    tifffile.imwrite(workdir / "t.tif", samples((40, 30), "uint16", seed=23))
    whole, streamed = both_ways(workdir, "t.tif", "-f", "blur", "--scale", "minmax",
                                "--channels", "keep")  # fmt: skip
    np.testing.assert_array_equal(streamed, whole)


def test_a_tiff_at_a_url_keeps_its_sample_type(workdir: Path) -> None:
    pytest.importorskip("fsspec")
    stored = samples((10, 8), "uint16", seed=24)
    tifffile.imwrite(workdir / "in.tif", stored)
    (workdir / "identity.yaml").write_text(IDENTITY)
    url = (workdir / "in.tif").as_uri()
    ok(run("apply", url, "-f", "identity.yaml", "--channels", "keep", "-o", "out.tif"))
    np.testing.assert_array_equal(tifffile.imread(workdir / "out.tif"), stored)


def test_bigtiff_when_four_gib_would_not_hold_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BigTIFF is chosen from the result's size (the threshold lowered here: a test cannot
    write 4 GiB), whole and streamed alike."""
    import convvol.io.tiff

    tifffile.imwrite(workdir / "in.tif", samples((40, 30), "uint16", seed=25))
    ok(run("apply", "in.tif", "-f", "blur", "--channels", "keep", "-o", "small.tif"))
    monkeypatch.setattr(convvol.io.tiff, "BIGTIFF_BYTES", 1000)
    ok(run("apply", "in.tif", "-f", "blur", "--channels", "keep", "-o", "big.tif"))
    ok(run("apply", "in.tif", "-f", "blur", "--channels", "keep", "-o", "big2.tif",
           "--max-memory", "1K"))  # fmt: skip
    with tifffile.TiffFile(workdir / "small.tif") as small:
        assert not small.is_bigtiff
        expected = small.asarray()
    for name in ("big.tif", "big2.tif"):
        with tifffile.TiffFile(workdir / name) as big:
            assert big.is_bigtiff
            np.testing.assert_array_equal(big.asarray(), expected)


def test_a_large_z_stack_gets_the_hint_not_the_limit(workdir: Path) -> None:
    stack = np.zeros((40, 64, 64), np.uint8)
    tifffile.imwrite(workdir / "deep.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    refused(run("apply", "deep.tif", "-f", "blur", "-o", "out.tif", "--max-pixels", "10000"),
            "40 Z slices", "hint:")  # fmt: skip


def test_ome_tiff_channels_and_planes(workdir: Path) -> None:
    channels = samples((3, 16, 20), "uint16", seed=27)
    tifffile.imwrite(workdir / "c.ome.tif", channels, ome=True, metadata={"axes": "CYX"})
    pixels, _ = convvol.read_pixels(workdir / "c.ome.tif", channels="keep")
    np.testing.assert_array_equal(pixels, np.moveaxis(channels, 0, 2))
    planes = np.zeros((4, 2, 16, 20), np.uint8)
    tifffile.imwrite(workdir / "z.ome.tif", planes, ome=True, metadata={"axes": "ZCYX"})
    refused(run("apply", "z.ome.tif", "-f", "blur", "-o", "out.tif"), "OME-TIFF", "4 Z slices")


def test_band_names_alone_are_not_metadata_to_warn_about(workdir: Path) -> None:
    """A convvol TIFF (band names only in GDAL_METADATA) to PNG drops nothing that
    matters: no warning."""
    tifffile.imwrite(workdir / "in.tif", samples((8, 8, 3), "uint8", seed=28),
                     photometric="rgb")  # fmt: skip
    ok(run("apply", "in.tif", "-f", "blur", "-o", "mid.tif"))
    result = run("apply", "mid.tif", "-f", "blur", "-o", "out.png")
    ok(result)
    assert "warning" not in result.stderr


def test_a_huge_tag_count_is_refused_cleanly(workdir: Path) -> None:
    path = workdir / "tags.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    struct.pack_into("<H", data, ifd, 0xFFFF)  # 65,535 tags declared, a dozen there
    path.write_bytes(bytes(data))
    result = run("apply", "tags.tif", "-f", "blur", "-o", "out.png")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "tags.tif" in result.stderr
    assert not (workdir / "out.png").exists()


# --- nodata: the file's own tag is --nodata's default (issue 15 meets issue 14) -----------


def blur_size() -> tuple[int, int]:
    """The blur bank's kernel: how far a missing pixel reaches."""
    kh, kw = load_bank("blur").resolve(1).weights.shape[-2:]
    return kh, kw


def test_a_geotiffs_nodata_marks_missing_pixels_and_integer_outputs_store_it(
    workdir: Path,
) -> None:
    """A uint16 GeoTIFF whose GDAL_NODATA is 65535: those pixels are missing without any
    option, missing outputs are stored as 65535 and tagged so; the rest is the blur."""
    rasterio = pytest.importorskip("rasterio")
    data = np.full((1, 30, 40), 1000, np.uint16)
    data[0, 10:15, 10:20] = 65535
    geotiff(workdir / "dem.tif", data, nodata=65535)
    ok(run("apply", "dem.tif", "-f", "blur", "--channels", "keep", "-o", "out.tif"))
    with rasterio.open(workdir / "out.tif") as result:
        assert result.nodata == 65535
        band = result.read(1)
    hole = np.zeros((30, 40), bool)
    hole[10:15, 10:20] = True
    reach = ndimage.binary_dilation(hole, np.ones(blur_size(), bool))
    assert (band[reach] == 65535).all()
    assert (band[~reach] == 1000).all()


def test_a_float_geotiffs_missing_outputs_are_nan_tagged_nan(workdir: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    data = scene()[:1]
    data[0, 5:9, 5:9] = -9999.0  # geotiff()'s nodata
    geotiff(workdir / "scene.tif", data)
    ok(run("apply", "scene.tif", "-f", "blur", "--channels", "keep", "-o", "out.tif"))
    with rasterio.open(workdir / "out.tif") as result:
        assert np.isnan(result.nodata)
        band = result.read(1)
    hole = np.zeros(band.shape, bool)
    hole[5:9, 5:9] = True
    reach = ndimage.binary_dilation(hole, np.ones(blur_size(), bool))
    assert np.isnan(band[reach]).all()
    assert np.isfinite(band[~reach]).all()


def test_a_tiff_whose_pages_never_end_is_refused(workdir: Path) -> None:
    """760 bytes whose chain of pages does not end (atheris found it): refused at 10,000
    pages, in about a second, instead of parsing pages for ever."""
    crash = Path(__file__).parents[1] / "fuzz" / "crashes" / "tiff" / "endless-pages.tif"
    refused(run("apply", crash, "-f", "blur", "-o", workdir / "out.png"), "10,000 pages")
    assert not (workdir / "out.png").exists()
