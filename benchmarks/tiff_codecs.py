"""Size and time of each TIFF codec convvol writes (--compress), on two kinds of result:
a float32 Gaussian blur of a photograph (1024×1024×3) and a 12-bit microscopy-like
uint16 image (2048×2048). Best of 3 encodes in memory; run from the repository root:

    python benchmarks/tiff_codecs.py

The figures quoted in docs/scientific.md come from this script.
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from convvol import apply_bank, load_bank
from convvol.io.tiff import COMPRESSIONS, write_tiff


def results() -> list[tuple[str, np.ndarray]]:
    photo = np.asarray(Image.open("sample_images/astronaut.png"))
    floats = apply_bank(np.tile(photo, (2, 2, 1)) / 255.0, load_bank("blur"))
    noise = np.random.default_rng(0).integers(0, 16, (2048, 2048, 1))
    counts = np.tile(photo[:, :, :1], (4, 4, 1)).astype(np.uint16) * 16 + noise
    return [("float32 1024×1024×3", floats.astype(np.float32)),
            ("uint16 2048×2048×1 (12-bit)", counts.astype(np.uint16))]  # fmt: skip


def main() -> None:
    print("| result | --compress | --compress-level | size (% of raw) | time (ms) |")
    print("|---|---|---|---|---|")
    for name, samples in results():
        for codec in COMPRESSIONS:
            for level in (1, 6) if codec in ("deflate", "zstd") else (1,):
                best, size = float("inf"), 0
                for _ in range(3):
                    buffer = io.BytesIO()
                    started = time.perf_counter()
                    write_tiff(buffer, samples, compress=codec, compress_level=level)
                    best = min(best, time.perf_counter() - started)
                    size = len(buffer.getvalue())
                shown = str(level) if codec in ("deflate", "zstd") else "-"
                print(f"| {name} | {codec} | {shown} | {100 * size / samples.nbytes:.1f} | "
                      f"{1000 * best:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
