"""Write the seed corpora: small banks and small images/volumes of every kind convvol reads.

    python fuzz/make_seeds.py    # (re)writes fuzz/corpus/{bank,volume,tiff,weights}/seed-*

Seeds are where the fuzzer starts; what it finds is merged into the same directories
(see fuzz/run.py). Every file is tiny, so the corpus in the repository stays small.
"""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from convvol.io import write_volume

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BANKS = {
    "kernel.yaml": "filters:\n  - kernel: sobel_x\n",
    "channels.yaml": "name: c\ndefaults: {padding: valid, border: wrap, stride: 2}\n"
    "filters:\n  - name: r\n    channels: {red: [[1, 0, -1]], 3: [[0.5, 1e-3, -2]]}\n"
    "    bias: 0.25\n",
    "weights.yaml": "filters:\n  - weights: [[[1, 2]], [[3, 4]]]\n    scale: 2\n"
    "    normalize: true\n",
    "depthwise.yaml": "filters:\n  - {name: g, kernel: {gaussian: {sigma: 1.5, size: [3, 5]}},"
    " depthwise: true}\n  - {name: b, kernel: {box: {size: [3, 5]}}}\n",
    "anchors.yaml": "shared: &k [[1, 2], [3, 4]]\nfilters:\n  - {name: a, kernel: *k}\n",
    "merge.yaml": "filters:\n  - &base {name: a, kernel: identity, bias: 1}\n"
    "  - {<<: *base, name: b}\n",
    "tags.yaml": "filters:\n  - kernel: !!python/object/apply:os.system ['true']\n",
    "kernel.json": '{"filters": [{"kernel": [[0, 1, 0], [1, -4, 1], [0, 1, 0]]}]}',
    "channels.json": '{"name": "j", "filters": [{"channels": {"0": "laplacian", "blue": '
    '{"gaussian": {"sigma": 0.5}}}, "description": "\\u00e9"}]}',
    "defaults.json": '{"defaults": {"padding": 2, "cval": 0.5, "border": "constant",'
    ' "dilation": 2, "activation": "relu"}, "filters": [{"kernel": "emboss"}]}',
}


def image_bytes(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def volume_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (4, 5, 4), dtype=np.uint8))
    grey = rgb.convert("L")
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    seeds = {
        "rgb.png": image_bytes(rgb, "PNG"),
        "rgba.png": image_bytes(rgba, "PNG"),
        "grey.png": image_bytes(grey, "PNG"),
        "interlaced.png": image_bytes(rgb, "PNG", interlace=1),
        "palette.png": image_bytes(rgb.convert("P"), "PNG", transparency=0),
        "grey16.png": image_bytes(
            Image.fromarray(rng.integers(0, 65536, (4, 5), dtype=np.uint16)), "PNG"
        ),
        "animated.png": image_bytes(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "exif.jpg": image_bytes(rgb, "JPEG", exif=exif),
        "cmyk.jpg": image_bytes(rgb.convert("CMYK"), "JPEG"),
        "animated.gif": image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rgb.webp": image_bytes(rgb, "WEBP", lossless=True),
        "rgb.bmp": image_bytes(rgb, "BMP"),
        "float.tif": image_bytes(
            Image.fromarray(rng.standard_normal((4, 5)).astype(np.float32)), "TIFF"
        ),
        "cmyk.tif": image_bytes(rgb.convert("CMYK"), "TIFF"),
        "pages.tif": image_bytes(grey, "TIFF", save_all=True, append_images=[grey, grey]),
    }
    for name, volume, fmt, depth in [
        ("rgb48.png", rng.random((4, 5, 3)), "png", 16),
        ("rgb48.tif", rng.random((4, 5, 3)), "tiff", 16),
    ]:
        buffer = io.BytesIO()
        write_volume(buffer, volume.astype(np.float32), format=fmt, depth=depth)
        seeds[name] = buffer.getvalue()
    for name, array in [
        ("float32.npy", rng.standard_normal((4, 5, 3)).astype(np.float32)),
        ("flat.npy", rng.standard_normal((4, 5)).astype(np.float32)),
        ("float64.npy", rng.standard_normal((3, 2, 2))),
        ("int16.npy", rng.integers(-9, 9, (2, 3, 2)).astype(">i2")),
        ("bool.npy", np.ones((2, 2, 1), bool)),
        ("fortran.npy", np.asfortranarray(rng.standard_normal((3, 4, 2)).astype(np.float32))),
    ]:
        buffer = io.BytesIO()
        np.save(buffer, array)
        seeds[name] = buffer.getvalue()
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((2, 2, 2), np.float16), version=(2, 0))
    seeds["version2.npy"] = buffer.getvalue()
    return seeds


def tiff_bytes(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def with_size(data: bytes, width: int, height: int) -> bytes:
    """A little-endian classic TIFF whose first page declares width × height."""
    out = bytearray(data)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    for entry in range(count):
        at = ifd + 2 + 12 * entry
        tag = struct.unpack_from("<H", out, at)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", out, at, tag, 4, 1, width if tag == 256 else height)
    return bytes(out)


def tiff_seeds() -> dict[str, bytes]:
    """Tiny TIFFs of every kind the TIFF reader takes: layouts, types, codecs, stacks,
    GeoTIFF tags, and the hostile ones it refuses."""
    rng = np.random.default_rng(14)
    contig = {"photometric": "minisblack", "planarconfig": "contig"}
    seeds = {}
    for dtype in ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32",
                  "float64"):  # fmt: skip
        values = rng.integers(0, 100, (6, 5, 3)).astype(dtype)
        seeds[f"{dtype}.tif"] = tiff_bytes(values, **contig)
    five = rng.integers(0, 65535, (6, 5, 5)).astype(np.uint16)
    seeds["planar5.tif"] = tiff_bytes(np.moveaxis(five, 2, 0), photometric="minisblack",
                                      planarconfig="separate")  # fmt: skip
    for codec in ("zlib", "zstd", "lzw", "packbits", "lzma", "jpeg"):
        array = rng.integers(0, 255, (20, 36, 3)).astype(np.uint8)
        options = {"photometric": "rgb"} if codec == "jpeg" else contig
        seeds[f"tiled-{codec}.tif"] = tiff_bytes(array, tile=(16, 16), compression=codec,
                                                 **options)  # fmt: skip
    floats = rng.standard_normal((9, 7, 2)).astype(np.float32)
    seeds["predictor-float.tif"] = tiff_bytes(floats, compression="zlib", predictor=3, **contig)
    seeds["strips.tif"] = tiff_bytes(five, rowsperstrip=2, compression="zlib", predictor=2,
                                     **contig)  # fmt: skip
    seeds["bigtiff.tif"] = tiff_bytes(five, bigtiff=True, **contig)
    seeds["imagej-c.tif"] = tiff_bytes(five[:, :, :3].transpose(2, 0, 1), imagej=True,
                                       metadata={"axes": "CYX"})  # fmt: skip
    seeds["imagej-z.tif"] = tiff_bytes(rng.integers(0, 9, (3, 2, 4, 4)).astype(np.uint16),
                                       imagej=True, metadata={"axes": "ZCYX"})  # fmt: skip
    seeds["shaped-stack.tif"] = tiff_bytes(five.transpose(2, 0, 1))
    geo = [(33550, "d", 3, (10.0, 10.0, 0.0), True),
           (33922, "d", 6, (0.0, 0.0, 0.0, 5e5, 4.1e6, 0.0), True),
           (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 1), True),
           (42113, "s", 0, "-9999", True)]  # fmt: skip
    seeds["geotiff.tif"] = tiff_bytes(five.astype(np.float32), extratags=geo, **contig)
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        tif.write(five[:, :, 0], subifds=0)
        tif.write(five[::2, ::2, 0], subfiletype=1)
    seeds["overview.tif"] = buffer.getvalue()
    bomb = tiff_bytes(np.zeros((64, 64), np.uint8), compression="zstd")
    seeds["bomb-zstd.tif"] = with_size(bomb, 100_000, 100_000)
    whole = tiff_bytes(five, **contig)
    seeds["truncated.tif"] = whole[: len(whole) // 2]


class _Payload:
    """The classic pickle payload: unpickling it would call os.system."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo fuzz-seed-must-not-run",)


def weight_seeds() -> dict[str, bytes]:
    """The weight-file fixtures of every format, and hostile ones; each input is the
    format's byte (fuzz/targets.py's WEIGHT_SUFFIXES), then the file."""
    import collections
    import json
    import pickle
    import struct
    import sys
    import zipfile

    sys.path.insert(0, str(HERE))
    from targets import weight_input

    fixtures = REPO / "tests" / "fixtures" / "weights"
    seeds = {
        name: weight_input("." + name.rsplit(".", 1)[1], (fixtures / name).read_bytes())
        for name in ("conv1.weight.npy", "conv.npz", "conv.safetensors", "conv_zip.pt",
                     "conv_legacy.pt", "conv.onnx", "conv.h5", "facenet_pnet.pt")
    }  # fmt: skip
    evil = pickle.dumps(collections.OrderedDict(w=_Payload()), protocol=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m/data.pkl", evil)
    seeds["evil_zip.pt"] = weight_input(".pt", buffer.getvalue())
    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    seeds["evil_legacy.pt"] = weight_input(".pt", buffer.getvalue() + evil)
    seeds["cut_legacy.pt"] = weight_input(".pt", (fixtures / "conv_legacy.pt").read_bytes()[:-50])
    buffer = io.BytesIO()
    np.save(buffer, np.arange(9.0).reshape(3, 3))
    seeds["kernel2d.npy"] = weight_input(".npy", buffer.getvalue())
    buffer = io.BytesIO()
    nan = np.zeros((2, 3, 3, 3), np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.savez(buffer, **{"c.weight": nan})
    seeds["nan.npz"] = weight_input(".npz", buffer.getvalue())
    header = json.dumps({"w": {"dtype": "F32", "shape": [10, 3, 300, 300],
                               "data_offsets": [0, 10800000]}}).encode()  # fmt: skip
    big = struct.pack("<Q", len(header)) + header + bytes(100)
    seeds["big.safetensors"] = weight_input(".safetensors", big)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.weights.h5", (fixtures / "conv.h5").read_bytes())
    seeds["model.keras"] = weight_input(".keras", buffer.getvalue())
    return seeds


def main() -> None:
    bank_dir, volume_dir = HERE / "corpus" / "bank", HERE / "corpus" / "volume"
    tiff_dir = HERE / "corpus" / "tiff"
    weights_dir = HERE / "corpus" / "weights"
    for directory in (bank_dir, volume_dir, tiff_dir, weights_dir):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
    for path in sorted((REPO / "filters").iterdir()):
        shutil.copyfile(path, bank_dir / f"seed-bundled-{path.name}")
    for name, text in BANKS.items():
        (bank_dir / f"seed-{name}").write_text(text, encoding="utf-8")
    for name, data in volume_seeds().items():
        (volume_dir / f"seed-{name}").write_bytes(data)
    for name, data in tiff_seeds().items():
        (tiff_dir / f"seed-{name}").write_bytes(data)
    for name, data in weight_seeds().items():
        (weights_dir / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
