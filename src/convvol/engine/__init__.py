"""The convolution engine: convolution over volume, as in a CNN layer.

``out[y, x, n] = bias[n] + Σ_c Σ_i Σ_j W[n, c, i, j] · V[y·s + i·d − top, x·s + j·d − left, c]``

A layer is planned once (:func:`plan_layer`: validated, its geometry and method chosen by
the cost model in :mod:`~convvol.engine.cost` among the methods of
:mod:`~convvol.engine.methods`), then run whole, band by band or strip by strip
(:class:`LayerPlan`). :func:`convolve` and :func:`convolve_bands` are thin wrappers.

Layout: ``geometry`` (shapes), ``weights`` (what the planner learns from them), ``cost``
(the cost model), ``methods/`` (one module per method, a registry), ``plan`` (the
chooser), ``gather`` and ``bands`` (the band loop), ``layer`` (the plan as a product).
"""

from convvol.engine.bands import BandSink
from convvol.engine.cost import DEFAULT_MEMORY_LIMIT, available_threads
from convvol.engine.geometry import Geometry, as_volume, border_indices, plan_geometry
from convvol.engine.layer import (
    LayerPlan,
    apply_activation,
    check_output_memory,
    convolve,
    convolve_bands,
    plan_layer,
)
from convvol.engine.plan import Plan, plan_convolution
from convvol.engine.weights import finite_weights

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "BandSink",
    "Geometry",
    "LayerPlan",
    "Plan",
    "apply_activation",
    "as_volume",
    "available_threads",
    "border_indices",
    "check_output_memory",
    "convolve",
    "convolve_bands",
    "finite_weights",
    "plan_convolution",
    "plan_geometry",
    "plan_layer",
]
