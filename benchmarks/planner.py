#!/usr/bin/env python
"""How good is the planner? Time every method on a set of banks and compare with `auto`.

Run from the repository root:

    python benchmarks/planner.py                  # 2048² image, 5 runs each (about 2 minutes)
    python benchmarks/planner.py --size 1024 --repeats 3

For each bank (every bundled bank resolved for RGB, then structured banks the cost model
has to tell apart: many small rank-one terms, rank-two layers, a depthwise Gaussian, a
large rank-one blur, a dense large kernel), every method of ``convvol.settings.METHODS`` is
forced and timed (median of the runs after one warm-up, all in this process), next to
what ``auto`` picks and its estimates. ``auto ÷ best`` is the planner's cost: 1.00 when it
picks the fastest method. Methods estimated at more than 50× the best estimate are not
run (``—``): forcing ``separable`` on a dense bank takes minutes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import convvol
from convvol import engine
from convvol.settings import METHODS
from convvol.bank import available_banks


def gaussian(size: int, sigma: float) -> np.ndarray:
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return taps / taps.sum()


def structured_banks(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Banks where a wrong choice costs several times: N × 3 × kh × kw, float32."""

    def rank(n_filters: int, size: int, terms: int) -> np.ndarray:
        left = rng.standard_normal((n_filters, 3, size, terms))
        right = rng.standard_normal((n_filters, 3, size, terms))
        return np.einsum("ncir,ncjr->ncij", left, right)

    def depthwise(layer: np.ndarray) -> np.ndarray:
        bank = np.zeros((3, 3, *layer.shape))
        bank[np.arange(3), np.arange(3)] = layer
        return bank

    blur = np.outer(gaussian(15, 2.6), gaussian(15, 2.6))
    wide = np.outer(gaussian(63, 10.0), gaussian(63, 10.0))
    banks = {
        "16 rank-one 5×5×3": rank(16, 5, 1),
        "8 rank-two 7×7×3": rank(8, 7, 2),
        "4 rank-one 11×11×3": rank(4, 11, 1),
        "Gaussian 15×15 per channel": depthwise(blur),
        "Gaussian 63×63 per channel": depthwise(wide),
        "1 dense 31×31×3": rng.standard_normal((1, 3, 31, 31)),
    }
    return {name: bank.astype(np.float32) for name, bank in banks.items()}


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="image side (default 2048)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    volume = rng.random((args.size, args.size, 3), dtype=np.float32)
    banks = {name: convvol.load_bank(name).resolve(3).weights for name in available_banks()}
    banks.update(structured_banks(rng))
    methods = [m for m in METHODS if m != "auto"]
    print(f"planner check: {args.size}×{args.size}×3 float32, median of {args.repeats} runs")
    header = f"{'bank':28s} {'N×C×kh×kw':>13s} {'auto':>9s} " + " ".join(
        f"{m:>9s}" for m in methods
    )
    print(header + "  auto ÷ best")
    print("-" * (len(header) + 13))
    ratios = []
    for name, weights in banks.items():
        geometry = engine.plan_geometry(args.size, args.size, *weights.shape[2:])
        plan = engine.plan_convolution(volume.shape, weights, geometry)
        cheapest = min(plan.estimates.values())
        seconds = {
            method: median_seconds(
                lambda method=method, weights=weights: convvol.convolve(
                    volume, weights, method=method
                ),
                args.repeats,
            )
            for method in methods
            if plan.estimates[method] <= 50 * cheapest
        }
        best = min(seconds.values())
        ratio = seconds[plan.method] / best
        ratios.append(ratio)
        cells = " ".join(
            f"{seconds[m] * 1e3:7.1f}ms" if m in seconds else f"{'—':>9s}" for m in methods
        )
        shape = "×".join(map(str, weights.shape))
        print(f"{name:28s} {shape:>13s} {plan.method:>9s} {cells}  {ratio:11.2f}")
    print(
        f"\nauto ÷ best: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f} "
        f"over {len(ratios)} banks (1.00: auto ran the fastest method)"
    )


if __name__ == "__main__":
    main()
