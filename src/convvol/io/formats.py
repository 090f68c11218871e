"""Output formats as rows of a table: how each is saved, which bit depths and channel
counts it takes (imageio's way: data, not branches of code).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convvol.errors import ParameterError, did_you_mean

# Weight files (-f conv1.npy, -f model.pt#conv1.weight) are told by their suffix, here, so
# that naming a bank never imports their readers (convvol.io.weights: zip, JSON, ...).
WEIGHT_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth", ".onnx", ".h5", ".hdf5",
                   ".keras")  # fmt: skip
LAYOUTS = ("oihw", "hwio", "ohwi", "hw")  # how a weight tensor's axes may be read (--layout)


def is_weight_file(spec: str) -> bool:
    """Whether ``FILE`` or ``FILE#TENSOR`` names a weight file (by its suffix)."""
    return split_spec(spec)[0].suffix.lower() in WEIGHT_SUFFIXES


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``FILE#TENSOR`` → (FILE, TENSOR); a file whose own name holds '#' is taken whole."""
    if "#" in spec and not Path(spec).exists():
        file, tensor = spec.rsplit("#", 1)
        return Path(file), tensor or None
    return Path(spec), None


@dataclass(frozen=True)
class Format:
    """An output format: how it is saved, which bit depths and channel counts it takes."""

    name: str
    extensions: tuple[str, ...]
    pillow_name: str | None = None  # None: written by convvol itself (npy)
    depths: tuple[int, ...] = (8,)
    any_depth: bool = False  # stores any number of channels (samples per pixel)
    any_sample_type: bool = False  # stores every integer type and float32 samples
    alpha: bool = False  # also stores grey+alpha and RGBA (an input's alpha carried through)
    options: dict[str, Any] = field(default_factory=dict)

    def largest_file(self, shape: tuple[int, int, int], depth: int) -> int:
        """At most how many bytes a volume of ``shape`` (H, W, C) takes in this format at
        ``depth`` bits per sample: float32 values for npy, else the raw pixels, plus what
        deflate's stored blocks, PNG's row filters and the headers add (compressed formats
        are mostly far smaller: this is the bound the free space is checked against)."""
        height, width, channels = shape
        if self.name == "npy":
            return NPY_HEADER_BYTES + 4 * height * width * channels
        raw = height * width * channels * (depth // 8)
        return raw + raw // 64 + 4 * height + 4096  # rows padded to 4 bytes (BMP)


# JPEG and WebP quality (--quality): ImageMagick's default, in the range where
# re-encoding a filtered photo shows no blocking on sharpened edges (the reasons are in
# docs/photographs.md).
DEFAULT_QUALITY = 92
# Formats that store several frames as an animation (--frames all).
ANIMATED_FORMATS = ("gif", "webp", "png")
NPY_HEADER_BYTES = 128  # a .npy header as numpy writes it (a multiple of 64)

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in [
        Format("png", (".png",), "PNG", depths=(8, 16), alpha=True),
        Format("jpeg", (".jpg", ".jpeg"), "JPEG", options={"quality": DEFAULT_QUALITY}),
        Format(
            "tiff", (".tif", ".tiff"), "TIFF", depths=(8, 16), any_depth=True, any_sample_type=True
        ),
        Format("bmp", (".bmp",), "BMP"),
        Format("webp", (".webp",), "WEBP", options={"quality": DEFAULT_QUALITY}),
        Format("npy", (".npy",)),
        Format("gif", (".gif",), "GIF"),
    ]
}
FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
# Level 1 (ISA-L, or zlib's run-length strategy), as OpenCV writes PNGs: several times
# faster than level 6 for somewhat larger files (figures in benchmarks/README.md).
DEFAULT_COMPRESS_LEVEL = 1


def format_named(name: str) -> Format:
    """The format called ``name`` (``png``, ``jpg``, ...), or ParameterError."""
    key = FORMAT_ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        names = [*FORMATS, *FORMAT_ALIASES]
        raise ParameterError(
            f"unknown format {name!r}; formats are {', '.join(FORMATS)}",
            hint=did_you_mean(name, names),
        )
    return FORMATS[key]


def format_for_path(path: str | os.PathLike[str]) -> Format:
    """The format a file name's extension asks for, or ParameterError."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.extensions:
            return fmt
    known = ", ".join(ext for fmt in FORMATS.values() for ext in fmt.extensions)
    raise ParameterError(
        f"{path}: cannot tell the output format from the extension {suffix or '(none)'!r}",
        hint=f"use one of {known}, or give --format",
    )


def check_encodable(
    fmt: Format,
    channels: int,
    depth: int | str,
    target: str = "output",
    *,
    with_alpha: bool = False,
) -> None:
    """Raise ParameterError unless ``fmt`` can store ``channels`` channels of ``depth``
    (8, 16, ``"float"`` or a sample type's name).

    ``with_alpha``: the last of 2 or 4 channels is the input's alpha, carried through
    (an LA or RGBA image read with ``channels="keep"``), which PNG stores as such."""
    if fmt.name == "npy":
        return
    if depth in ("float", "float32") and not fmt.any_sample_type:
        raise ParameterError(
            f"{target}: {fmt.name.upper()} cannot store float samples (--depth float)",
            hint="write .tif for float32 samples (or .npy), or use --depth 8 or 16",
        )
    if isinstance(depth, str) and not depth.isdigit():
        if not fmt.any_sample_type:
            raise ParameterError(f"{target}: {fmt.name.upper()} cannot store {depth} samples",
                                 hint="write .tif, or use --depth 8 or 16")  # fmt: skip
    elif int(depth) not in fmt.depths:
        raise ParameterError(
            f"{target}: {fmt.name.upper()} stores {' or '.join(map(str, fmt.depths))}-bit "
            f"pixels, not {depth}-bit",
            hint="use .png or .tif for --depth 16, or .tif or .npy for raw floats",
        )
    if not fmt.any_depth and channels not in (1, 3, *((2, 4) if with_alpha and fmt.alpha else ())):
        raise ParameterError(
            f"{target}: the result has {channels} channels; {fmt.name.upper()} stores 1 "
            "(greyscale) or 3 (RGB)",
            hint="use --split for one greyscale image per channel, or write .npy or .tif "
            "to keep the whole volume",
        )


def resolve_depth(depth: int | str, stored: str | None, fmt: Format) -> int | str:
    """The sample type an output of ``fmt`` takes: ``depth`` as given (8, 16, ``"float"``),
    or for ``"auto"`` the input's own (``stored``, a numpy type name; None for inputs
    without one, as .npy and Zarr, which give 8 bits).

    TIFF takes the input's own integer type as it is (8 and 16 bits as 8 and 16) and
    float32 for any float; formats of fixed depths take 16 bits for integers wider than
    8 bits where they can store 16, else 8.
    """
    if str(depth) != "auto":
        return int(depth) if str(depth).isdigit() else str(depth)
    if stored is None or fmt.name == "npy":
        return 8
    kind = np.dtype(stored)
    if fmt.any_sample_type:
        if kind.kind == "f":
            return "float"
        return {"uint8": 8, "uint16": 16}.get(kind.name, kind.name)
    if kind.kind in "iu" and kind.itemsize > 1 and 16 in fmt.depths:
        return 16
    return 8
