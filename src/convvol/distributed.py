"""Dask: arrays larger than any machine, filtered chunk by chunk, and batches on a cluster.

:func:`convolve_dask` and :func:`apply_banks_dask` turn a dask array into the filtered
dask array through ``map_overlap``. The halo is the kernel's reach. Borders are not
dask's ``boundary`` options (dask has no equivalent of numpy's ``reflect``, the
default here): the rows of the padded volume are built with the engine's own index rule
(:func:`convvol.engine.border_indices`), then overlapped with ``boundary='none'``.
Chunks are strips of whole rows, made of whole bands of the in-memory engine's plan
(:mod:`convvol.strips`), so every chunk, seams included, is bit-identical to
:func:`convvol.convolve` on the whole array, whatever the array's own chunks were.

:func:`run_on_cluster` sends a batch to a ``distributed`` scheduler: one task per file
(:func:`convvol.batch.process_file`), and Zarr-to-Zarr inputs as a chunked graph each.
Needs the ``dask`` extra: ``pip install 'convvol[dask]'``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from convvol import batch, outofcore, strips
from convvol.bank import Bank
from convvol.errors import ConvvolError, OutputError, ParameterError
from convvol.volume import temporary_name

# Bytes of one chunk's input and output rows when the caller does not say.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _dask_array() -> Any:
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
    **settings: Any,
) -> Any:
    """Convolve an H×W×C (or H×W) dask array with a bank or N×C×kh×kw weights, lazily.

    ``filters`` is a :class:`~convvol.Bank` (its ``defaults:`` apply, ``settings``
    override them, as for :func:`~convvol.apply_bank`) or plain weights (``settings``
    are :func:`~convvol.convolve`'s: ``padding``, ``border``, ``cval``, ``stride``,
    ``dilation``, ``flip``, ``method``, plus ``activation``). Returns an H'×W'×N float32
    dask array chunked in strips of whole rows of about ``chunk_bytes``, equal bit for
    bit to the in-memory result. ``memory_limit`` is the engine's working set, as for
    :func:`~convvol.convolve`.

    >>> import dask.array as da, numpy as np, convvol
    >>> volume = np.random.default_rng(0).random((64, 48, 3), dtype=np.float32)
    >>> lazy = convolve_dask(da.from_array(volume, chunks=(10, 10, 3)), convvol.load_bank("edges"))
    >>> np.array_equal(lazy.compute(), convvol.apply_bank(volume, convvol.load_bank("edges")))
    True
    """
    shape = _shape(array)
    if isinstance(filters, Bank):
        (layer,) = strips.plan_layers(shape, [filters], memory_limit=memory_limit, **settings)
    else:
        layer = strips.plan_layer(shape, filters, bias, memory_limit=memory_limit, **settings)
    return _layer_dask(array, layer, chunk_bytes)


def apply_banks_dask(
    array: Any,
    banks: Sequence[Bank],
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    memory_limit: int | None = None,
    labels: Sequence[str] | None = None,
    **overrides: Any,
) -> Any:
    """Banks in order over a dask array, as :func:`~convvol.run_layers` runs them; lazy.

    ``overrides`` are :func:`~convvol.apply_bank`'s settings; ``labels`` name the banks
    in errors about depths that do not fit.
    """
    layers = strips.plan_layers(
        _shape(array), banks, memory_limit=memory_limit, labels=labels, **overrides
    )
    for layer in layers:
        array = _layer_dask(array, layer, chunk_bytes)
    return array


def _shape(array: Any) -> tuple[int, int, int]:
    if array.ndim not in (2, 3):
        raise ParameterError(f"the array must be H×W×C or H×W; got shape {array.shape}")
    height, width, *rest = (int(n) for n in array.shape)
    return height, width, rest[0] if rest else 1


def _layer_dask(array: Any, layer: strips.LayerPlan, chunk_bytes: int) -> Any:
    da = _dask_array()
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


def _padded_rows(da: Any, array: Any, rows: np.ndarray, cval: float) -> Any:
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
            pieces.append(da.full((stop - start, width, channels), cval, dtype=np.float32))
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
    layer: strips.LayerPlan,
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
    _single_threaded_blas()
    return True


_blas_held = False


def _single_threaded_blas() -> None:
    global _blas_held
    if not _blas_held:
        threadpool_limits(1, user_api="blas")  # for good: this process only runs tasks
        _blas_held = True


def _cluster_file(item: batch.Item, options: batch.BatchOptions) -> batch.FileResult:
    """One file as a task: BLAS on one thread, the engine's bands in order."""
    _single_threaded_blas()
    return batch.process_file(item, options, 1)


# --- batches on a cluster -----------------------------------------------------------


def connect(address: str, timeout: float = 10.0) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address`` (``tcp://host:8786``)."""
    try:
        import distributed
    except ImportError:
        raise ParameterError(
            "--scheduler needs Dask's distributed package", hint="pip install 'convvol[dask]'"
        ) from None
    try:
        client: Any = distributed.Client
        return client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise ConvvolError(
            f"cannot reach the Dask scheduler at {address}: {error}",
            hint="check the address (tcp://host:8786) and that the scheduler is running",
        ) from None


def run_on_cluster(
    items: Sequence[batch.Item],
    options: batch.BatchOptions,
    client: Any,
    *,
    on_result: batch.OnResult | None = None,
    retries: int = 2,
    window: int = 1000,
) -> list[batch.FileResult]:
    """Filter every item on the cluster ``client`` talks to; results as files finish.

    One task per file (``pure=False``: a re-run writes again), retried ``retries`` times
    on errors; a worker that dies mid-task has its tasks rerun elsewhere by the scheduler.
    A Zarr input with a Zarr output is a chunked graph of its own. Local paths are made
    absolute: workers must see the same files (a shared file system), or use fsspec
    URLs. Outputs are atomic as on one machine; hidden part-files of killed workers are
    removed at the end. Ctrl-C cancels what has not started and raises KeyboardInterrupt.
    """
    import distributed

    report = on_result or (lambda result: None)
    given = {
        os.path.abspath(item.source): item.source for item in items if not batch.is_url(item.source)
    }
    items, options = batch.absolute(items, options)
    results: list[batch.FileResult] = []
    futures: dict[Any, tuple[batch.Item, str | None, str | None]] = {}
    queue = list(reversed(items))
    completed: Any = getattr(distributed, "as_completed")(loop=client.loop)  # noqa: B009

    def submit_next() -> None:
        item = queue.pop()
        target = batch.single_target(item, options)
        if target is not None and options.skip_existing and batch.target_exists(target):
            keep(batch.FileResult(item.source, "skipped", (target,)))
            return
        if target is not None and outofcore.is_zarr(item.source) and outofcore.is_zarr(target):
            try:
                future, temporary = _submit_zarr(client, item, options, target, retries)
            except ConvvolError as error:
                keep(batch.failure(item, error.message, error.hint, time.perf_counter()))
                return
            futures[future] = (item, target, temporary)
        else:
            future = client.submit(
                _cluster_file, item, options, pure=False, retries=retries,
                key=f"convvol-{len(results) + len(futures)}-{item.stem}-{os.urandom(4).hex()}",
            )  # fmt: skip
            futures[future] = (item, None, None)
        completed.add(future)

    def keep(result: batch.FileResult) -> None:
        name = given.get(result.source)
        if name is not None:  # report files by the names the user gave
            message = result.message.replace(result.source, name)
            result = replace(result, source=name, message=message)
        results.append(result)
        report(result)

    started = time.perf_counter()
    try:
        while queue and len(futures) < window:
            submit_next()
        for future in completed:
            item, target, temporary = futures.pop(future)
            keep(_collect(future, item, target, temporary, started))
            while queue and len(futures) < window:
                submit_next()
    except KeyboardInterrupt:
        client.cancel(list(futures))
        for _, _, temporary in futures.values():
            if temporary:
                shutil.rmtree(temporary, ignore_errors=True)
        raise
    batch.remove_temporaries(target for result in results for target in result.targets)
    return results


def _submit_zarr(
    client: Any, item: batch.Item, options: batch.BatchOptions, target: str, retries: int
) -> tuple[Any, str | None]:
    """The chunked graph of one Zarr-to-Zarr input, writing beside the target."""
    da = _dask_array()
    source = outofcore.open_source(item.source)  # checks it before any task runs
    source.close()
    array = da.from_zarr(item.source)
    filtered = apply_banks_dask(
        array, options.banks, memory_limit=outofcore.engine_memory_limit(options.max_memory),
        labels=options.labels or None, **options.overrides,
    )  # fmt: skip
    temporary = None
    where = target
    if not batch.is_url(target):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = str(temporary_name(path))
        where = temporary
    stored = filtered.to_zarr(where, compute=False, mode="w")
    return client.compute(stored, retries=retries), temporary


def _collect(
    future: Any,
    item: batch.Item,
    target: str | None,
    temporary: str | None,
    started: float,
) -> batch.FileResult:
    """A future's result as a FileResult; a chunked Zarr output is moved into place."""
    try:
        result = future.result()
    except Exception as error:  # a task's error, or a worker that kept dying on it
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        message = str(error) or type(error).__name__
        return batch.failure(item, f"{type(error).__name__}: {message}", None, started)
    if target is None:
        assert isinstance(result, batch.FileResult)
        return result
    if temporary:
        try:
            outofcore.replace_directory(temporary, target)
        except OSError as error:
            error_message = OutputError(f"{target}: cannot write: {error.strerror or error}")
            return batch.failure(item, error_message.message, None, started)
    return batch.FileResult(item.source, "succeeded", (target,),
                            seconds=time.perf_counter() - started)  # fmt: skip
