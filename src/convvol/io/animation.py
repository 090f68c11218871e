"""Writing the filtered frames of an animation back as an animated GIF, WebP or PNG (APNG).

Each frame keeps its duration, the animation its loop count, and each frame its disposal
(translated between GIF's and APNG's numbering when the kinds differ; WebP has none in
Pillow). The frames are whole canvases, as the reader composed them. Pillow's GIF and APNG
writers merge a frame identical to the one before it into it (their durations added).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import numpy as np
from PIL import Image

from convvol.io.encode import gif_frame, quality_options
from convvol.io.formats import DEFAULT_COMPRESS_LEVEL, Format
from convvol.io.metadata import NO_INFO, Animation, ImageInfo
from convvol.io.photo import pillow_options

# GIF disposal (0 unspecified, 1 keep, 2 background, 3 previous) to APNG's (0 none,
# 1 background, 2 previous), and back.
_GIF_TO_APNG = {0: 0, 1: 0, 2: 1, 3: 2}
_APNG_TO_GIF = {0: 1, 1: 2, 2: 3}


def encode_animation(
    stream: IO[bytes],
    frames: Sequence[np.ndarray],
    fmt: Format,
    *,
    info: ImageInfo = NO_INFO,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    quality: int | None = None,
    lossless: bool = False,
) -> None:
    """Write ``frames`` (pixels: uint8 H×W×1 or H×W×3, all of one shape) as an animated
    ``fmt`` (gif, webp or png) with ``info.animation``'s timing and ``info``'s metadata."""
    images = [Image.fromarray(np.ascontiguousarray(_plane(frame))) for frame in frames]
    if fmt.name == "gif":
        images = [gif_frame(image) for image in images]
    timing = info.animation or Animation(durations=(100,) * len(images))
    channels = frames[0].shape[2]
    options: dict[str, Any] = {
        **fmt.options, **quality_options(fmt, quality, lossless),
        **pillow_options(fmt.name, info, channels),
        "save_all": True, "append_images": images[1:], "duration": list(timing.durations),
    }  # fmt: skip
    if timing.loop is not None:
        options["loop"] = timing.loop
    elif fmt.name != "gif":  # GIF without a loop count plays once; APNG and WebP say 1
        options["loop"] = 1
    disposals = _disposals(timing, info.format, fmt.name)
    if disposals:
        options["disposal"] = disposals
    if fmt.name == "png":
        options["compress_level"] = compress_level
    images[0].save(stream, format=fmt.pillow_name, **options)


def _plane(frame: np.ndarray) -> np.ndarray:
    return frame[:, :, 0] if frame.shape[2] == 1 else frame


def _disposals(timing: Animation, source: str | None, target: str) -> list[int] | None:
    if not timing.disposals or target not in ("gif", "png"):
        return None
    kind = "gif" if source == "GIF" else "png" if source == "PNG" else None
    if kind == target:
        return list(timing.disposals)
    table = _GIF_TO_APNG if kind == "gif" else _APNG_TO_GIF if kind == "png" else None
    if table is None:
        return None
    fallback = 0 if target == "png" else 1
    return [table.get(value, fallback) for value in timing.disposals]
