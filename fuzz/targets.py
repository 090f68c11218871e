"""What the fuzz targets check, without atheris: the regression tests replay the corpus here.

Each check takes arbitrary bytes (for weight files, the first byte picks the format). The
one thing it may raise is ConvvolError (the input's clear message); anything else, a
warning included (it would reach the user's terminal), is a crash. What is read must also
make sense: a bank resolves to finite float32 weights, a volume is a finite float32 H×W×C
array.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from convvol.bank import Bank, bank_from_bytes
from convvol.errors import ConvvolError
from convvol.io import read_volume
from convvol.io.tiff import NotStreamable, TiffRows

# Small enough that every decoded input is quick, so the fuzzer explores instead of
# decoding; the limit itself is what a larger input meets (and it is tested on its own).
FUZZ_MAX_PIXELS = 2**20


def check_bank(data: bytes) -> None:
    """Load ``data`` as a bank, as YAML and as JSON, and resolve it for a few depths."""
    for json_syntax in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                bank = bank_from_bytes(data, name="fuzzed", json_syntax=json_syntax)
            except ConvvolError:
                continue
            _check_resolves(bank)


def _check_resolves(bank: Bank) -> None:
    for channels in sorted({1, 3, 4, bank.default_channels}):
        try:
            resolved = bank.resolve(channels)
        except ConvvolError:
            continue
        assert resolved.weights.dtype == np.float32
        assert resolved.weights.shape[1] == channels
        assert np.isfinite(resolved.weights).all()
        assert len(resolved.names) == resolved.weights.shape[0] == resolved.bias.size


def check_volume(data: bytes) -> None:
    """Read ``data`` as an image or .npy volume, as RGB and as the file's own channels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for channels in ("rgb", "keep"):
            try:
                volume = read_volume(
                    io.BytesIO(data), channels=channels, max_pixels=FUZZ_MAX_PIXELS
                )
            except ConvvolError:
                return
            assert volume.dtype == np.float32
            assert volume.ndim == 3
            assert min(volume.shape) >= 1
            assert not np.isinf(volume).any()  # NaN are missing pixels; ±inf are refused


def check_tiff(data: bytes) -> None:
    """Read ``data`` as a TIFF every way convvol does: whole, as RGB and as the file's own
    channels, its integers as fractions and as their own numbers; and a band of rows at a
    time, as a TIFF larger than memory is read (from a file: it needs one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for channels, values in (("keep", "unit"), ("rgb", "native")):
            try:
                volume = read_volume(io.BytesIO(data), channels=channels,
                                     max_pixels=FUZZ_MAX_PIXELS, values=values)  # fmt: skip
            except ConvvolError:
                break
            assert volume.dtype == np.float32
            assert volume.ndim == 3
            assert min(volume.shape) >= 1
            assert not np.isinf(volume).any()  # NaN are missing pixels; ±inf are refused
        handle, path = tempfile.mkstemp(suffix=".tif")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            try:
                rows = TiffRows(path, max_pixels=FUZZ_MAX_PIXELS)
            except (ConvvolError, NotStreamable):
                return
            try:
                height = rows.shape[0]
                for first in range(0, height, max(1, height // 3)):
                    band = rows[first : first + 5]
                    assert band.shape[1:] == rows.shape[1:]
            except ConvvolError:
                return
            finally:
                rows.close()
        finally:
            os.unlink(path)


# The weight-file formats, in a fixed order: the fuzzed input's first byte picks one.
WEIGHT_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".onnx", ".h5", ".keras")
_SCRATCH = Path(tempfile.mkdtemp(prefix="convvol-fuzz-weights-"))


def weight_input(suffix: str, content: bytes) -> bytes:
    """A corpus input for ``check_weights``: the format's byte, then the file."""
    return bytes([WEIGHT_SUFFIXES.index(suffix)]) + content


def check_weights(data: bytes) -> None:
    """Read ``data[1:]`` as a weight file of the format ``data[0]`` picks: list its
    tensors, load its first conv layer (and every tensor as a layer), resolve the banks."""
    from convvol.io import weights
    from convvol.io.weights import list_tensors, weight_bank

    weights.HDF5_SECONDS = 5.0  # a damaged .h5 that makes libhdf5 loop: stopped sooner

    if not data:
        return
    suffix = WEIGHT_SUFFIXES[data[0] % len(WEIGHT_SUFFIXES)]
    path = _SCRATCH / f"fuzzed{suffix}"
    path.write_bytes(data[1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                _, layout, rows = list_tensors(path)
            except ConvvolError:
                return
            for spec in [str(path), *(f"{path}#{info.name}" for info, _ in rows[:8])]:
                try:
                    bank = weight_bank(spec)
                except ConvvolError:
                    continue
                assert layout in ("oihw", "hwio", "hw")
                _check_resolves(bank)
    finally:
        os.unlink(path)
