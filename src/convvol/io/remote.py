"""fsspec URLs (``s3://bucket/key``, ``file:///path``) as inputs and outputs: read whole,
written whole in one call so that object stores make each object appear complete."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from convvol.errors import OutputError, ParameterError, VolumeError
from convvol.io.encode import encode_volume
from convvol.io.formats import Format
from convvol.io.metadata import ReadImage
from convvol.io.readers import read_image


def is_url(text: str) -> bool:
    """An fsspec URL (``s3://bucket/key``, ``file:///path``) rather than a local path."""
    return "://" in text


def path_key(path: str) -> str:
    """What names one file: a URL as it is, a local path resolved (links, ``..``)."""
    return path if is_url(path) else os.path.realpath(path)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    try:
        import fsspec
    except ImportError:
        raise ParameterError(
            f"{url}: URLs need fsspec", hint="pip install 'convvol[dask]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as error:
        raise ParameterError(f"{url}: {error}") from None


def url_exists(url: str) -> bool:
    """Whether an object is there already."""
    files, path = filesystem(url)
    return bool(files.exists(path))


def read_url_image(
    url: str,
    *,
    channels: str,
    max_pixels: int | None,
    values: str = "unit",
    rgb_alpha: bool = False,
) -> ReadImage:
    """An image or ``.npy`` at ``url`` as :func:`read_image` reads it (its stored values,
    their divisor and what the file says about itself; an animation's first frame)."""
    files, path = filesystem(url)
    try:
        data = files.cat_file(path)
    except FileNotFoundError:
        raise VolumeError(f"{url}: no such file") from None
    except OSError as error:
        raise VolumeError(f"{url}: cannot read: {error}") from None
    stream = io.BytesIO(data)
    stream.name = url  # read_image names the file in its messages
    return read_image(stream, channels=channels, max_pixels=max_pixels, values=values,
                      rgb_alpha=rgb_alpha)  # fmt: skip


def write_url(url: str, volume: np.ndarray, fmt: Format, encoding: dict[str, Any]) -> None:
    """Encode fully, then store in one call: object stores make the object appear whole."""
    buffer = io.BytesIO()
    encode_volume(buffer, volume, fmt, target=url, **encoding)
    write_url_bytes(url, buffer.getvalue())


def write_url_bytes(url: str, data: bytes) -> None:
    """Store a whole encoded file at ``url`` in one call."""
    files, path = filesystem(url)
    try:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            files.makedirs(parent, exist_ok=True)
        files.pipe_file(path, data)
    except OSError as error:
        raise OutputError(f"{url}: cannot write: {error}") from None
