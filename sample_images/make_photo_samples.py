"""Generate the photograph samples of the "Photographs" guide (docs/photographs.md).

- ``photographs/espresso.jpg``: ``coffee.png`` as a camera would save it: JPEG (quality 90, 4:2:0),
  an embedded sRGB ICC profile (Pillow's built-in one), EXIF (make, model, dates,
  orientation 1) and 72 dpi.
- ``photographs/spinner.gif``: an 8-frame animated GIF, 96×64, a bar turning over a
  gradient, 80 ms a frame, looping for ever.

Usage (from anywhere; the files are written to ``photographs/`` beside this script)::

    python sample_images/make_photo_samples.py

Deterministic; numpy and Pillow (with LittleCMS) only. Licence: CC0 1.0 (made for the
convvol project; coffee.png's own licence is in README.md).
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageDraw

HERE = Path(__file__).resolve().parent
OUT = HERE / "photographs"


def make_coffee_jpeg() -> None:
    exif = Image.Exif()
    exif[0x010F] = "convvol"  # Make
    exif[0x0110] = "sample camera"  # Model
    exif[0x0132] = "2026:01:02 03:04:05"  # DateTime
    exif[0x0112] = 1  # Orientation
    exif.get_ifd(0x8769)[0x9003] = "2026:01:02 03:04:05"  # DateTimeOriginal
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(HERE / "coffee.png") as coffee:
        coffee.convert("RGB").save(
            OUT / "espresso.jpg", quality=90, subsampling=2, exif=exif, icc_profile=profile,
            dpi=(72, 72),
        )  # fmt: skip


def make_spinner_gif() -> None:
    height, width = 64, 96
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // width, y * 255 // height, 160 + 0 * x], 2).astype(np.uint8)
    frames = []
    for number in range(8):
        frame = Image.fromarray(background)
        angle = np.pi * number / 8
        dx, dy = 26 * np.cos(angle), 26 * np.sin(angle)
        ImageDraw.Draw(frame).line(
            [(48 - dx, 32 - dy), (48 + dx, 32 + dy)], fill=(255, 255, 255), width=5
        )
        frames.append(frame.quantize(64, method=Image.Quantize.MEDIANCUT))
    frames[0].save(
        OUT / "spinner.gif", save_all=True, append_images=frames[1:], duration=80, loop=0
    )


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    make_coffee_jpeg()
    make_spinner_gif()
