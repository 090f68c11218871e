#!/usr/bin/env python
"""The least any NumPy program can take for one photo, start-up included, beside OpenCV's.

``photos.py`` times ``convvol apply photo.jpg -f sharpen -o out.jpg`` against an OpenCV
one-liner. This script asks what a NumPy program could reach at best: Python, NumPy and
imagecodecs imported (nothing else: no Pillow, so no metadata; no CLI), the JPEG decoded
by libjpeg-turbo, the exact integer sharpen in int16 over cache-sized chunks of rows
(borders left out), the result encoded at quality 95; then the same importing the
libraries convvol cannot start without (Pillow's JPEG plugin for the metadata, Click, PyYAML
for the bundled banks). It runs these and the OpenCV one-liner alternately, each in a
fresh process (OpenBLAS on one thread, as the convvol command runs it), and prints the
medians.

    python benchmarks/single_floor.py PHOTO.jpg [--runs 15]

(``photos.py --keep DIR`` leaves its photos in DIR/photos.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

FLOOR = r"""
import sys
import numpy as np
from imagecodecs import jpeg8_decode, jpeg8_encode
{extra}
with open(sys.argv[1], "rb") as stream:
    pixels = jpeg8_decode(stream.read())
height, width, channels = pixels.shape
run = (width - 2) * channels
out = np.zeros_like(pixels)
flat = pixels.reshape(height, -1)
rows = max(1, (1 << 17) // run)
total = np.empty((rows, run), np.int16)
acc = np.empty((rows, run), np.int16)
for first in range(1, height - 1, rows):
    last = min(first + rows, height - 1)
    n = last - first
    t, a = total[:n], acc[:n]
    np.add(flat[first - 1 : last - 1, channels : channels + run],
           flat[first + 1 : last + 1, channels : channels + run], out=t, dtype=np.int16)
    np.add(t, flat[first:last, 0:run], out=t, dtype=np.int16)
    np.add(t, flat[first:last, 2 * channels : 2 * channels + run], out=t, dtype=np.int16)
    np.multiply(flat[first:last, channels : channels + run], 5, out=a, dtype=np.int16)
    a -= t
    np.clip(a, 0, 255, out=out[first:last, 1:-1].reshape(n, run), casting="unsafe")
with open(sys.argv[2], "wb") as stream:
    stream.write(jpeg8_encode(out, level=95))
"""

OPENCV = (
    "import sys, cv2, numpy as np; k = np.array([[0,-1,0],[-1,5,-1],[0,-1,0]], np.float32); "
    "cv2.imwrite(sys.argv[2], cv2.filter2D(cv2.imread(sys.argv[1]), -1, k, "
    "borderType=cv2.BORDER_REFLECT_101), [cv2.IMWRITE_JPEG_QUALITY, 95])"
)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env_python = [sys.executable]
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as work:
        target = os.path.join(work, "out.jpg")
        floor = FLOOR.replace("{extra}", "")
        # The same, importing what convvol cannot do without: Pillow's JPEG plugin (the
        # metadata), Click (the command line) and PyYAML (the bundled banks).
        libraries = FLOOR.replace(
            "{extra}", "import click, yaml\nfrom PIL import JpegImagePlugin\n"
        )
        commands = {
            "NumPy + imagecodecs floor": [*env_python, "-c", floor, args.photo, target],
            "the floor + Pillow, Click, PyYAML imported": [*env_python, "-c", libraries,
                                                             args.photo, target],
            "OpenCV one-liner": [*env_python, "-c", OPENCV, args.photo, target],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for number in range(args.runs + 1):
            for name, argv in commands.items():
                seconds = timed(argv)
                if number:  # the first round warms the page cache
                    times[name].append(seconds)
    for name, values in times.items():
        print(
            f"{name}: median {statistics.median(values):.3f} s "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
        )


if __name__ == "__main__":
    main()
