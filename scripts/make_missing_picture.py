"""Draw docs/figures/missing_hole.png: a 64×64 hole blurred three ways, side by side.

Usage, from anywhere (it uses the convvol of this checkout, ``src/``)::

    python scripts/make_missing_picture.py             # rewrites docs/figures/missing_hole.png
    python scripts/make_missing_picture.py --out x.png

The input is a smooth surface around 262.5 with a 64×64 hole (NaN, drawn magenta). Left:
the input. Middle: the hole filled with 0 (what ``numpy.nan_to_num`` does) and blurred:
the valid pixels next to it are dragged down. Right: ``--missing interpolate``: they keep
their level, and the hole's rim is filled from its valid neighbours. Commit the picture
after a change that alters it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import convvol  # noqa: E402

SIDE = 192
HOLE = slice(64, 128)


def surface() -> np.ndarray:
    """A smooth surface (a DEM, say) around 262.5, with a 64×64 hole."""
    y, x = np.mgrid[:SIDE, :SIDE] / SIDE
    level = 262.5 + 20 * np.sin(3 * x + 1) * np.cos(2 * y) + 10 * y
    level = level.astype(np.float32)
    level[HOLE, HOLE] = np.nan
    return level


def shown(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values as grey pixels on a fixed range; missing ones magenta."""
    unit = np.clip((values - low) / (high - low), 0, 1)
    grey = np.nan_to_num(unit * 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    rgb[np.isnan(values)] = (230, 0, 160)
    return rgb


def picture() -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    level = surface()
    blur = convvol.load_bank("blur")
    filled = convvol.apply_bank(np.nan_to_num(level), blur)[..., 0]
    kept = convvol.apply_bank(level, blur, missing="interpolate")[..., 0]
    low, high = 200.0, 300.0
    panels = [("input: a 64x64 hole (magenta)", level), ("NaN as 0, then blurred", filled),
              ("--missing interpolate", kept)]  # fmt: skip
    font = ImageFont.load_default(size=13)
    gap, title = 8, 18
    canvas = Image.new("RGB", (3 * SIDE + 4 * gap, SIDE + title + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    for number, (label, values) in enumerate(panels):
        left = gap + number * (SIDE + gap)
        canvas.paste(Image.fromarray(shown(values, low, high)), (left, gap + title))
        draw.text((left, gap), label, fill="black", font=font)
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/figures/missing_hole.png")
    args = parser.parse_args()
    from PIL import Image

    Image.fromarray(picture()).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
