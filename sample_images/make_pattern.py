"""Generate ``pattern.png``: a synthetic test pattern for channel-selective edges.

The image is 256x256 RGB, 8 bits per channel, on a black (0, 0, 0)
background. It contains four solid regions. Coordinates are half-open,
given as ``(y0, y1, x0, x1)``: rows ``y0 <= y < y1``, columns ``x0 <= x < x1``
(numpy slicing ``img[y0:y1, x0:x1]``).

=============  ==================  ===============  ==============================
name           (y0, y1, x0, x1)    colour (R,G,B)   edges it produces
=============  ==================  ===============  ==============================
red_bar        (16, 112, 32, 64)   (255, 0, 0)      vertical edges, red only
green_bar      (16, 112, 96, 128)  (0, 255, 0)      vertical edges, green only
blue_bar       (144, 168, 32, 224) (0, 0, 255)      horizontal edges, blue only
white_square   (32, 80, 176, 224)  (255, 255, 255)  all edges, all channels
=============  ==================  ===============  ==============================

Every region is separated from every other region, and from the image
border, by at least 16 px of black, so a 3x3 .. 7x7 kernel centred anywhere
in or around one region never sees another region or the border.

Usage (from anywhere; the PNG is written next to this script)::

    python sample_images/make_pattern.py

The script is deterministic and uses only numpy and Pillow. It can also be
imported: ``make_pattern()`` returns the uint8 array of shape (256, 256, 3).

Licence: CC0 1.0 (made for the convvol project).
"""

from pathlib import Path

import numpy as np

HEIGHT = 256
WIDTH = 256

#: Region name -> (y0, y1, x0, x1), half-open, as in img[y0:y1, x0:x1].
REGIONS = {
    "red_bar": (16, 112, 32, 64),
    "green_bar": (16, 112, 96, 128),
    "blue_bar": (144, 168, 32, 224),
    "white_square": (32, 80, 176, 224),
}

#: Region name -> RGB colour.
COLORS = {
    "red_bar": (255, 0, 0),
    "green_bar": (0, 255, 0),
    "blue_bar": (0, 0, 255),
    "white_square": (255, 255, 255),
}

#: Minimum black gap (px) between any two regions and between regions and the border.
MIN_GAP = 16

OUTPUT = Path(__file__).resolve().parent / "pattern.png"


def make_pattern() -> np.ndarray:
    """Return the test pattern as a uint8 array of shape (HEIGHT, WIDTH, 3)."""
    img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    for name, (y0, y1, x0, x1) in REGIONS.items():
        img[y0:y1, x0:x1] = COLORS[name]
    return img


def _check_layout() -> None:
    """Assert the regions respect MIN_GAP to each other and to the border."""
    boxes = list(REGIONS.items())
    for name, (y0, y1, x0, x1) in boxes:
        assert min(y0, x0, HEIGHT - y1, WIDTH - x1) >= MIN_GAP, name
    for i, (na, (ay0, ay1, ax0, ax1)) in enumerate(boxes):
        for nb, (by0, by1, bx0, bx1) in boxes[i + 1 :]:
            gap_y = max(by0 - ay1, ay0 - by1)
            gap_x = max(bx0 - ax1, ax0 - bx1)
            assert max(gap_y, gap_x) >= MIN_GAP, (na, nb)


def main() -> None:
    from PIL import Image

    _check_layout()
    Image.fromarray(make_pattern()).save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
