"""Dask arrays larger than any machine, filtered chunk by chunk.

:func:`convolve_dask` and :func:`apply_banks_dask` turn a dask array into the filtered
dask array through ``map_overlap``. The halo is the kernel's reach. Borders are not
dask's ``boundary`` options (dask has no equivalent of numpy's ``reflect``, the
default here): the rows of the padded volume are built with the engine's own index rule
(:func:`convvol.engine.border_indices`), then overlapped with ``boundary='none'``.
Chunks are strips of whole rows, made of whole bands of the in-memory engine's plan
(:class:`convvol.engine.LayerPlan`), so every chunk, seams included, is bit-identical to
:func:`convvol.convolve` on the whole array, whatever the array's own chunks were.
Needs the ``dask`` extra: ``pip install 'convvol[dask]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from convvol.bank import Bank
from convvol.engine import LayerPlan, plan_layer
from convvol.errors import ParameterError
from convvol.pipeline import plan_stack
from convvol.settings import Settings

# Bytes of one chunk's input and output rows when the caller does not say.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def dask_array_module() -> Any:
    """``dask.array``, or a ParameterError saying how to install it."""
    try:
        import dask.array
    except ImportError:
        raise ParameterError("this needs Dask", hint="pip install 'convvol[dask]'") from None
    return dask.array


def convolve_dask(
    array: Any,
    filters: Bank | np.ndarray,
    bias: np.ndarray | None = None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    memory_limit: int | None = None,
    **options: Any,
) -> Any:
    """Convolve an H×W×C (or H×W) dask array with a bank or N×C×kh×kw weights, lazily.

    ``filters`` is a :class:`~convvol.Bank` (its ``defaults:`` apply, ``options``
    override them, as for :func:`~convvol.apply_bank`) or plain weights (``options``
    are :func:`~convvol.convolve`'s: ``padding``, ``border``, ``cval``, ``stride``,
    ``dilation``, ``flip``, ``method``, plus ``activation``). Returns an H'×W'×N float32
    dask array chunked in strips of whole rows of about ``chunk_bytes``, equal bit for
    bit to the in-memory result. ``memory_limit`` is the engine's working set, as for
    :func:`~convvol.convolve`. NaN are missing pixels when ``missing`` (or ``min_valid``,
    ``preserve_missing``) is given: a lazy array cannot be looked at for NaN ahead.

    >>> import dask.array as da, numpy as np, convvol
    >>> volume = np.random.default_rng(0).random((64, 48, 3), dtype=np.float32)
    >>> lazy = convolve_dask(da.from_array(volume, chunks=(10, 10, 3)), convvol.load_bank("edges"))
    >>> np.array_equal(lazy.compute(), convvol.apply_bank(volume, convvol.load_bank("edges")))
    True
    """
    shape = _shape(array)
    settings = Settings.from_options({**options, "memory_limit": memory_limit})
    if isinstance(filters, Bank):
        (layer,) = plan_stack(shape, [filters], settings)
    else:
        layer = plan_layer(shape, filters, bias, settings.for_bank({}), threads=settings.threads,
                           memory_limit=memory_limit,
                           missing=settings.missing_rule(shape[2], has_missing=False))  # fmt: skip
    return _layer_dask(array, layer, chunk_bytes)


def apply_banks_dask(
    array: Any,
    banks: Sequence[Bank],
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    memory_limit: int | None = None,
    labels: Sequence[str] | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Any:
    """Banks in order over a dask array, as :func:`~convvol.run_layers` runs them; lazy.

    ``settings`` (or keywords) are :func:`~convvol.apply_bank`'s; ``labels`` name the banks
    in errors about depths that do not fit.
    """
    settings = Settings.given(settings, options)
    layers = plan_stack(_shape(array), banks, settings.with_knobs(memory_limit=memory_limit),
                        labels=labels)  # fmt: skip
    return run_plans_dask(array, layers, chunk_bytes=chunk_bytes)


def run_plans_dask(
    array: Any, layers: Sequence[LayerPlan], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Any:
    """Planned layers (:func:`~convvol.plan_stack`) over a dask array, lazily."""
    for layer in layers:
        array = _layer_dask(array, layer, chunk_bytes)
    return array


def _shape(array: Any) -> tuple[int, int, int]:
    if array.ndim not in (2, 3):
        raise ParameterError(f"the array must be H×W×C or H×W; got shape {array.shape}")
    height, width, *rest = (int(n) for n in array.shape)
    return height, width, rest[0] if rest else 1


def _layer_dask(array: Any, layer: LayerPlan, chunk_bytes: int) -> Any:
    da = dask_array_module()
    if array.ndim == 2:
        array = array[:, :, None]
    array = array.astype(np.float32)  # as read_volume does, before any constant border
    out_height, out_width, filters = layer.out_shape
    stride, reach, band = layer.stride, layer.reach, layer.band_rows
    # Output rows per chunk: whole bands; the input strip must be at least the halo that
    # the chunk before it borrows (reach − stride rows).
    rows = max(layer.strip_rows(chunk_bytes), -(-(reach - stride) // stride), 1)
    rows = min(-(-rows // band) * band, out_height)
    padded = _padded_rows(da, array, layer.input_rows(0, out_height), layer.cval)
    count = -(-out_height // rows)
    sizes = [rows * stride] * (count - 1)
    sizes.append(padded.shape[0] - sum(sizes))
    padded = padded.rechunk({0: tuple(sizes), 1: -1, 2: -1})
    out_chunks = ((rows,) * (count - 1) + (out_height - rows * (count - 1),), (out_width,),
                  (filters,))  # fmt: skip
    halo = max(reach - stride, 0)
    options: dict[str, Any] = {
        "chunks": out_chunks, "dtype": np.float32, "meta": np.empty((0, 0, 0), np.float32),
        "layer": layer, "strip_rows": rows,
    }  # fmt: skip
    if not halo:
        return padded.map_blocks(_strip, **options)
    return da.map_overlap(
        _strip, padded, depth={0: (0, halo), 1: 0, 2: 0}, boundary="none", trim=False,
        allow_rechunk=False, **options,
    )  # fmt: skip


def _padded_rows(da: Any, array: Any, rows: np.ndarray, cval: float | np.ndarray) -> Any:
    """The rows ``rows`` names (−1: the constant), as one dask array: runs of neighbouring
    rows as slices, the rest one row at a time (borders are a kernel's reach at most)."""
    pieces = []
    start = 0
    width, channels = int(array.shape[1]), int(array.shape[2])
    while start < rows.size:
        stop = start + 1
        if rows[start] < 0:
            while stop < rows.size and rows[stop] < 0:
                stop += 1
            pieces.append(  # cval: one number, or one per channel
                da.zeros((stop - start, width, channels), dtype=np.float32)
                + np.asarray(cval, np.float32)
            )
        else:
            while stop < rows.size and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            pieces.append(array[int(rows[start]) : int(rows[stop - 1]) + 1])
        start = stop
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)


# OpenBLAS's thread count is one setting for the whole process, and BLAS's threading
# changes its sums' rounding, so strips must not race over it. In a Dask worker process
# BLAS stays on one thread for good and each task computes its bands in order; elsewhere
# (dask's local threads, in the user's process) strips take turns, each on the engine's
# own threads, setting and restoring the limit from its own thread as the engine does.
_TAKE_TURNS = threading.Lock()


def _strip(
    block: np.ndarray,
    *,
    layer: LayerPlan,
    strip_rows: int,
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    """One chunk: the output rows of strip ``block_id[0]`` from its padded input rows."""
    assert block_id is not None
    first = block_id[0] * strip_rows
    last = min(first + strip_rows, layer.out_shape[0])
    count = (last - first - 1) * layer.stride + layer.reach
    rows = np.ascontiguousarray(block[:count], np.float32)
    if _in_dask_worker():
        return layer.compute(rows, first, last, threads=1)
    with _TAKE_TURNS:
        return layer.compute(rows, first, last)


def _in_dask_worker() -> bool:
    """True in a ``distributed`` worker process (its BLAS then held to one thread)."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    single_threaded_blas()
    return True


_blas_held = False


def single_threaded_blas() -> None:
    """Hold BLAS to one thread for good: this process only runs tasks."""
    global _blas_held
    if not _blas_held:
        threadpool_limits(1, user_api="blas")  # for good: this process only runs tasks
        _blas_held = True
