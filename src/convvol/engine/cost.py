"""The cost model: what each method is expected to take on this machine, and how much
memory a band may use. Its tuned constants sit here together (as scipy.signal keeps
``choose_conv_method``'s), each method's estimate in its own module reads them, and
:func:`convvol.engine.plan.plan_convolution` picks the cheapest. The figures behind the
constants are in ``benchmarks/`` (``benchmarks/planner.py`` checks the choices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from convvol.engine.geometry import BandShape, Geometry
from convvol.engine.weights import channels_read
from convvol.errors import ParameterError

DEFAULT_MEMORY_LIMIT = 256 * 2**20  # bytes of working set beyond input and output
# A band's gathered windows: large enough that each numpy call's work dwarfs the time it
# holds the GIL (smaller bands ran markedly slower on two threads).
BAND_TARGET_BYTES = 8 * 2**20
GEMM_RATE = 40e9  # float32 FLOP/s one core reaches on block-Toeplitz GEMMs
DIRECT_RATE = 30e9  # per core: planar Toeplitz products, zeros included
TAPS_RATE = 4e9  # per core: values per second of one elementwise pass over a cached chunk
COPY_RATE = 3e9  # per core: values per second copied into strided stacks
FFT_RATE = 2e9  # per core: 5·n·log2(n) flops of float64 pocketfft, plus spectrum products
SEPARABLE_RATE = 40e9  # per core: both passes' Toeplitz products and the band gather
CALL_SECONDS = 10e-6  # one call into NumPy from a method's inner loop, views included
INTERLEAVE_RATE = 1e9  # values per second written from planes into the H×W×N output
SVD_RATE = 5e9  # flops per second of LAPACK's singular values


def available_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, eq=False)
class Problem:
    """One convolution to plan: the volume's shape, the (already flipped) float32 weights,
    the output geometry, and the threads and memory the engine may use."""

    volume_shape: tuple[int, int, int]
    weights: np.ndarray  # N×C×kh×kw float32
    geometry: Geometry
    stride: int
    dilation: int
    threads: int
    memory_limit: int | None

    @property
    def shape(self) -> BandShape:
        """How output rows map to band rows and columns."""
        _, _, kh, kw = self.weights.shape
        return BandShape(self.geometry.out_width, self.stride, self.dilation, kh, kw)

    @property
    def n_filters(self) -> int:
        return int(self.weights.shape[0])

    @property
    def channels(self) -> int:
        return int(self.volume_shape[2])

    @property
    def outputs(self) -> int:
        """Output pixels (per filter)."""
        return self.geometry.out_height * self.geometry.out_width

    @property
    def flops(self) -> float:
        """Multiply-adds of the plain definition, counted as two flops each."""
        n_filters, channels, kh, kw = self.weights.shape
        return 2.0 * self.outputs * n_filters * channels * kh * kw

    @property
    def padded_width(self) -> int:
        """Columns of the padded input."""
        return self.volume_shape[1] + self.geometry.left + self.geometry.right

    @property
    def budget(self) -> int:
        """Bytes of working set one thread's band may use."""
        return self.budget_up_to(BAND_TARGET_BYTES)

    def budget_up_to(self, target: int) -> int:
        """Bytes of working set one thread's band may use when it aims at ``target``."""
        return min(target, (self.memory_limit or DEFAULT_MEMORY_LIMIT) // self.threads)

    @cached_property
    def used_layers(self) -> np.ndarray:
        """N × C: whether filter n has a non-zero layer on channel c."""
        return channels_read(self.weights)


@dataclass(frozen=True)
class Estimate:
    """What one method expects to cost, and what it needs of the bands."""

    seconds: float
    row_bytes: int  # working set per output row of a band
    setup: Any  # what the method's prepare() needs (its block size, tap plan, ...)
    columns: int = 0  # input columns a band must hold, if more than the padded width
    band_rows: int | None = None  # rows per band the method needs (else from the budget)
    row_multiple: int = 1  # band rows rounded down to a multiple of this


def band_rows_for(row_bytes: int, budget: int, out_height: int, threads: int) -> int:
    """Output rows per band: as many as ``budget`` bytes of working set hold, but at least
    four bands per thread when the image is tall enough, to keep every thread busy."""
    rows = max(1, min(out_height, budget // max(row_bytes, 1)))
    if out_height >= 4 * threads:
        rows = min(rows, -(-out_height // (4 * threads)))
    return rows


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(needed: int, what: str) -> None:
    """Refuse, before allocating, ``needed`` bytes that are more than this machine has."""
    available = physical_memory()
    if available is not None and needed > available:
        raise ParameterError(
            f"{what} would need {needed / 2**30:.1f} GiB, more than this machine's "
            f"{available / 2**30:.1f} GiB of memory",
            hint="check the padding and dilation, or use a smaller image or a larger stride",
        )
