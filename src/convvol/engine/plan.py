"""The planner: which method runs a convolution, and in bands of how many rows.

:func:`plan_convolution` asks every registered method for its estimate
(:mod:`convvol.engine.methods`), keeps the cheapest (or the one forced), sizes the bands
to the memory budget and prepares the method once. The :class:`Plan` it returns is then
run any number of times, whole or strip by strip (:class:`convvol.engine.layer.LayerPlan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convvol.engine import cost
from convvol.engine.cost import Problem
from convvol.engine.geometry import Geometry
from convvol.engine.methods import REGISTRY, BandKernel
from convvol.settings import check_choice


@dataclass(frozen=True, eq=False)
class Plan:
    """How a convolution will run: the method, prepared, its bands, and why."""

    method: str
    band_rows: int  # output rows per band
    threads: int
    estimated_seconds: float
    reason: str
    estimates: dict[str, float]
    kernel: BandKernel = field(repr=False)
    problem: Problem = field(repr=False)
    smallest_band: int  # bytes every thread's band takes at least: the reach's rows

    def check_band(self) -> None:
        """Refuse, before any work, bands that could not fit this machine's memory."""
        cost.check_fits(self.smallest_band, "the input rows one band of output reads")

    def describe(self) -> str:
        """One line for --explain."""
        others = ", ".join(
            f"{name} {seconds:.3g} s" for name, seconds in self.estimates.items()
            if name != self.method
        )  # fmt: skip
        return (
            f"{self.method}{self.kernel.detail()}: estimated {self.estimated_seconds:.3g} s on "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, bands of "
            f"{self.band_rows} rows; {self.reason}" + (f"; others: {others}" if others else "")
        )


def plan_convolution(
    volume_shape: tuple[int, ...],
    weights: np.ndarray,
    geometry: Geometry,
    *,
    stride: int = 1,
    dilation: int = 1,
    method: str = "auto",
    threads: int | None = None,
    memory_limit: int | None = None,
) -> Plan:
    """Choose how to run a convolution, by a cost model of each method on this machine.

    ``weights`` are the N×C×kh×kw float32 filters, already flipped for true convolution
    (their ranks decide whether ``separable`` pays). Bands that could not fit this
    machine's memory are refused when the plan runs (:meth:`Plan.check_band`).
    """
    method = check_choice(method, ("auto", *REGISTRY), "method")
    height, width, channels = volume_shape
    problem = Problem(
        (int(height), int(width), int(channels)), np.asarray(weights), geometry, int(stride),
        int(dilation), max(1, min(threads or cost.available_threads(), geometry.out_height)),
        memory_limit,
    )  # fmt: skip
    estimates: dict[str, cost.Estimate] = {}
    for name, module in REGISTRY.items():
        cheapest = min((e.seconds for e in estimates.values()), default=float("inf"))
        estimates[name] = module.estimate(problem, cheapest)
    seconds = {name: estimate.seconds for name, estimate in estimates.items()}
    if method == "auto":
        method = min(seconds, key=seconds.__getitem__)
        reason = "lowest estimated time"
    else:
        reason = "forced with method=" + method
    chosen = estimates[method]
    # One output row reads the kernel's whole reach of input rows: the smallest band.
    reach = (problem.shape.kernel_height - 1) * problem.dilation + 1
    columns = max(problem.padded_width, chosen.columns)
    smallest_band = problem.threads * (reach * columns * channels * 4 + chosen.row_bytes)
    band_rows = chosen.band_rows or cost.band_rows_for(
        chosen.row_bytes, problem.budget, geometry.out_height, problem.threads
    )
    if chosen.row_multiple > 1:
        band_rows = max(chosen.row_multiple, band_rows // chosen.row_multiple * chosen.row_multiple)
    kernel = REGISTRY[method].prepare(problem, chosen.setup)
    return Plan(method, band_rows, problem.threads, chosen.seconds, reason, seconds, kernel,
                problem, smallest_band)  # fmt: skip
