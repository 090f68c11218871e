"""The band loop: cut the output into bands of rows, compute them on a thread pool."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

import numpy as np
from numpy.typing import DTypeLike

from convvol.engine.gather import gather_band
from convvol.engine.geometry import Geometry, border_indices
from convvol.engine.plan import Plan
from convvol.engine.workspace import Workspace, trim_workspaces

BandSink = Callable[[int, np.ndarray], None]


def run_bands(
    plan: Plan,
    volume: np.ndarray,
    bias: np.ndarray | None,
    geometry: Geometry,
    border: str,
    cval: float | np.ndarray,  # one value, or one per channel
    sink: BandSink,
    *,
    divisor: float = 1.0,
    out: np.ndarray | None = None,
    threads: int | None = None,
    dtype: DTypeLike = np.float32,
) -> None:
    """Compute every band of ``geometry``'s output and give each to ``sink(first, band)``.

    ``geometry`` is the plan's own, or a strip's (its rows already padded: top = bottom = 0);
    the bands fall where the plan says whatever the threads, so results never depend on
    them. Bands are slices of ``out`` when given, else reused scratch arrays. ``dtype`` is
    what bands are gathered and computed in: float32, or an integer type for a kernel
    whose sums are exact in it (:mod:`convvol.engine.integer`).
    """
    height, width, _ = volume.shape
    n_filters = plan.problem.n_filters
    stride = plan.problem.stride
    kernel_height = plan.problem.shape.kernel_height
    kernel = plan.kernel
    cols = border_indices(width, geometry.left, geometry.right, border)
    all_rows = border_indices(height, geometry.top, geometry.bottom, border)
    extra = kernel.columns - cols.size
    if extra > 0:  # columns only blocks past the edge read; their outputs are dropped
        cols = np.concatenate([cols, np.full(extra, -1)])
    kernel.ready()

    def compute(first: int) -> None:
        last = min(first + plan.band_rows, geometry.out_height)
        span = (last - 1 - first) * stride + (kernel_height - 1) * plan.problem.dilation + 1
        band_rows = all_rows[first * stride : first * stride + span]
        band = gather_band(volume, band_rows, cols, cval, scratch=True, planar=kernel.planar,
                           divisor=divisor, dtype=dtype)  # fmt: skip
        target = (
            out[first:last]
            if out is not None
            else Workspace.current().array(
                "output", (last - first, geometry.out_width, n_filters), dtype
            )
        )
        kernel.run(band, target, bias)
        sink(first, target)

    starts = range(0, geometry.out_height, plan.band_rows)
    workers = max(1, min(threads or plan.threads, len(starts)))
    try:
        # Bands are sized for one core each: BLAS threads on top would only fight (and
        # on the small products here they cost more than they bring even on one band).
        with _one_blas_thread() if kernel.blas else nullcontext():
            if workers == 1:
                for first in starts:
                    compute(first)
            else:
                for done in _pool(workers).map(compute, starts):
                    del done
    finally:
        trim_workspaces()


def _one_blas_thread() -> AbstractContextManager[object]:
    """BLAS held to one thread (threadpoolctl, imported here: kernels that never call
    BLAS, such as the per-tap sums of a sharpen, need neither it nor its library scan)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A lasting pool per thread count, so each worker keeps its scratch buffers warm."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="convvol")
        return _POOLS[threads]
