"""The ways of computing a band of output rows, behind one registry.

Each method is a module with a ``NAME`` and two functions, the :class:`Method` protocol:

- ``estimate(problem, cheapest)`` says what it would cost (:class:`~convvol.engine.cost.Estimate`,
  read off the constants of :mod:`convvol.engine.cost`) and what it needs of the bands;
  ``cheapest`` is the lowest estimate of the methods registered before it;
- ``prepare(problem, setup)`` makes the :class:`BandKernel` that computes bands.

Every band a kernel gets holds the input rows (already padded by the border rule) that
one stretch of output rows needs; every method gives the same result to float32
rounding. Adding a method is one module and one entry in :data:`REGISTRY`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from convvol.engine.cost import Estimate, Problem
from convvol.engine.methods import direct, fft, gemm, separable


class BandKernel(Protocol):
    """A method prepared for one plan: runs bands."""

    @property
    def planar(self) -> bool:
        """True if bands come as C × rows × cols, False for rows × cols × C."""

    @property
    def columns(self) -> int:
        """Input columns a band must hold, when more than the padded width (else 0)."""

    @property
    def blas(self) -> bool:
        """True if it calls BLAS (held to one thread while bands run on the engine's)."""

    def ready(self) -> None:
        """Build what the bands share, once, before they run on several threads."""

    def release(self) -> None:
        """Let go of what :meth:`ready` built (a whole run is over; strips keep it)."""

    def detail(self) -> str:
        """How it runs, for ``--explain`` (e.g. ' (B = 4)')."""

    def run(self, band: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> None:
        """Compute ``out`` (rows × W' × N) from ``band``, adding ``bias``."""


class Method(Protocol):
    """A method module."""

    NAME: str

    def estimate(self, problem: Problem, cheapest: float) -> Estimate: ...

    def prepare(self, problem: Problem, setup: Any) -> BandKernel: ...


# In the order the planner estimates them (ties go to the first).
REGISTRY: dict[str, Method] = {module.NAME: module for module in (gemm, direct, fft, separable)}
