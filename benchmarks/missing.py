#!/usr/bin/env python
"""What do missing pixels cost? Masked vs unmasked convvol vs astropy, side by side.

Run from the repository root:

    python benchmarks/missing.py                          # 1024², 5 runs each
    python benchmarks/missing.py --size 256 --repeats 3   # a quick look

For each workload (one image channel with 10 % random holes and a 64×64 one, through a
Gaussian blur), the same data runs through:

- ``convvol plain``: the layer without missing pixels (the holes filled first), the cost
  of an ordinary run;
- ``convvol interpolate`` / ``propagate`` / ``fill``: the layer with its missing pixels
  (``missing=``), planning included, as a caller pays it;
- ``astropy``: ``astropy.convolution.convolve(nan_treatment='interpolate',
  normalize_kernel=False, boundary='extend')``, the same operation (checked to float32
  tolerance before timing).

Every number is the median of the timed runs after one warm-up, on one thread (astropy's
convolve runs on one). ``÷ plain`` is the masked run's cost in unmasked runs (the target:
about two), ``astropy ÷`` how many times faster than astropy the masked run is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from convvol import plan_layer
from convvol.settings import LayerSettings, MissingRule


def gaussian(size: int, sigma: float) -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return np.outer(taps, taps) / taps.sum() ** 2


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image side (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument("--kernels", default="5,15,31", help="kernel sides (default 5,15,31)")
    args = parser.parse_args()
    try:
        from astropy.convolution import convolve as astropy_convolve
    except ImportError:
        astropy_convolve = None
        print("astropy is not installed: its column is left out (pip install astropy)")
    rng = np.random.default_rng(15)
    size = args.size
    image = rng.random((size, size, 1), dtype=np.float32)
    holed = image.copy()
    holed[rng.random(holed.shape) < 0.1] = np.nan
    holed[size // 3 : size // 3 + 64, size // 3 : size // 3 + 64] = np.nan
    filled = np.nan_to_num(holed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{size}×{size}×1, 10 % random holes and a 64×64 hole; median of {args.repeats} "
          f"runs, one thread; load average {load:.2f} at the start")  # fmt: skip
    header = ("kernel", "plain", "interpolate", "÷ plain", "propagate", "÷ plain", "fill",
              "÷ plain", "astropy", "astropy ÷")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    settings = LayerSettings(border="edge")
    for side in (int(k) for k in args.kernels.split(",")):
        kernel = gaussian(side, side / 6).astype(np.float32)
        weights = kernel[None, None]

        def convvol_run(rule: MissingRule | None, volume: np.ndarray = holed) -> np.ndarray:
            return plan_layer(volume.shape, weights, None, settings, threads=1,
                              missing=rule).run(volume, threads=1)  # fmt: skip

        plain = median_seconds(lambda: convvol_run(None, filled), args.repeats)
        masked = {
            treatment: median_seconds(
                lambda t=treatment: convvol_run(MissingRule(t)), args.repeats
            )  # fmt: skip
            for treatment in ("interpolate", "propagate", "fill")
        }
        row = [f"{side}×{side}", f"{plain * 1e3:.1f} ms"]
        for treatment, seconds in masked.items():
            row += [f"{seconds * 1e3:.1f} ms", f"{seconds / plain:.2f}"]
        if astropy_convolve is not None:

            def astropy_run() -> np.ndarray:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # NaN left where a hole beats the kernel
                    return astropy_convolve(holed[..., 0], kernel, boundary="extend",
                                            nan_treatment="interpolate",
                                            normalize_kernel=False)  # fmt: skip

            ours = convvol_run(MissingRule("interpolate"))[..., 0]
            theirs = astropy_run()
            both = np.isfinite(ours) & np.isfinite(theirs)
            assert np.allclose(ours[both], theirs[both], rtol=1e-4, atol=1e-5), side
            seconds = median_seconds(astropy_run, args.repeats)
            row += [f"{seconds * 1e3:.1f} ms", f"{seconds / masked['interpolate']:.1f}×"]
        else:
            row += ["—", "—"]
        print("| " + " | ".join(row) + " |", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at the end")


if __name__ == "__main__":
    main()
