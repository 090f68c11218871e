"""Batches on a Dask cluster: one task per file, and Zarr-to-Zarr inputs as a chunked
graph each. Needs the ``dask`` extra: ``pip install 'convvol[dask]'``.

Every file task runs the one job flow (:func:`convvol.jobs.process_file`) on a worker
with BLAS on one thread; a Zarr input with a Zarr output is filtered as a dask array
(:func:`convvol.dask_arrays.run_plans_dask`), written beside its target and moved
into place when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from convvol import batch
from convvol.dask_arrays import dask_array_module, run_plans_dask, single_threaded_blas
from convvol.errors import ConvvolError, OutputError, ParameterError
from convvol.io.remote import is_url
from convvol.io.streams import is_zarr, open_source, replace_directory
from convvol.io.writers import temporary_name
from convvol.jobs import (
    Item,
    JobOptions,
    JobResult,
    check_reach,
    check_streamed,
    failure,
    process_file,
    target_exists,
)
from convvol.pipeline import plan_stack


def _cluster_file(item: Item, options: JobOptions) -> JobResult:
    """One file as a task: BLAS on one thread, the engine's bands in order."""
    single_threaded_blas()
    return process_file(item, options, 1)


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
    items: Sequence[Item],
    options: JobOptions,
    client: Any,
    *,
    on_result: batch.OnResult | None = None,
    retries: int = 2,
    window: int = 1000,
) -> list[JobResult]:
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
    given = {os.path.abspath(item.source): item.source for item in items if not is_url(item.source)}
    items, options = batch.absolute(items, options)
    results: list[JobResult] = []
    futures: dict[Any, tuple[Item, str | None, str | None]] = {}
    queue = list(reversed(items))
    completed: Any = getattr(distributed, "as_completed")(loop=client.loop)  # noqa: B009

    def submit_next() -> None:
        item = queue.pop()
        target = options.single_target(item)
        if target is not None and options.skip_existing and target_exists(target):
            keep(JobResult(item.source, "skipped", (target,)))
            return
        if target is not None and is_zarr(item.source) and is_zarr(target):
            try:
                future, temporary = _submit_zarr(client, item, options, target, retries)
            except ConvvolError as error:
                keep(failure(item, error.message, error.hint, time.perf_counter()))
                return
            futures[future] = (item, target, temporary)
        else:
            future = client.submit(
                _cluster_file, item, options, pure=False, retries=retries,
                key=f"convvol-{len(results) + len(futures)}-{item.stem}-{os.urandom(4).hex()}",
            )  # fmt: skip
            futures[future] = (item, None, None)
        completed.add(future)

    def keep(result: JobResult) -> None:
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
    batch.remove_temporaries(batch.every_target(items, options, results))
    return results


def _submit_zarr(
    client: Any, item: Item, options: JobOptions, target: str, retries: int
) -> tuple[Any, str | None]:
    """The chunked graph of one Zarr-to-Zarr input, writing beside the target."""
    da = dask_array_module()
    source = open_source(item.source)  # checks it before any task runs
    source.close()
    array, has_missing = _with_missing(da, da.from_zarr(item.source), item, options)
    layers = plan_stack(source.shape, options.banks, options.engine_settings,
                        labels=options.labels or None, has_missing=has_missing)  # fmt: skip
    check_reach(layers)
    check_streamed(layers[-1:], target, options.max_output)  # no intermediate files here
    filtered = run_plans_dask(array, layers)
    temporary = None
    where = target
    if not is_url(target):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = str(temporary_name(path))
        where = temporary
    stored = filtered.to_zarr(where, compute=False, mode="w")
    return client.compute(stored, retries=retries), temporary


def _with_missing(da: Any, array: Any, item: Item, options: JobOptions) -> tuple[Any, bool]:
    """The array with its missing pixels NaN (``--nodata``, ``--mask``), and whether it
    may hold any: a float array given no ``--missing`` is looked at once, on the cluster."""
    import numpy as np

    from convvol.masks import check_nodata, read_mask

    shape = tuple(int(n) for n in array.shape)
    given = options.nodata is not None or options.mask is not None
    if given:
        values = array.astype(np.float32)
        if options.nodata is not None:
            check_nodata(options.nodata, array.dtype, item.label)
            if not np.isnan(options.nodata):
                values = da.where(array == np.asarray(options.nodata).astype(array.dtype),
                                  np.float32(np.nan), values)  # fmt: skip
        if options.mask is not None:
            volume_shape = (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
            mask = read_mask(options.mask, volume_shape, item.label)
            if len(shape) == 2:
                mask = mask[..., 0]
            elif mask.shape[2] != shape[2]:
                mask = np.broadcast_to(mask, shape)
            valid = da.from_array(np.ascontiguousarray(mask), chunks=values.chunks)
            values = da.where(valid, values, np.float32(np.nan))
        array = values
    if given or options.settings.missing is not None:
        return array, True
    if np.dtype(array.dtype).kind != "f":
        return array, False
    return array, bool(da.isnan(array).any().compute())


def _collect(
    future: Any,
    item: Item,
    target: str | None,
    temporary: str | None,
    started: float,
) -> JobResult:
    """A future's result as a JobResult; a chunked Zarr output is moved into place."""
    try:
        result = future.result()
    except Exception as error:  # a task's error, or a worker that kept dying on it
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        message = str(error) or type(error).__name__
        return failure(item, f"{type(error).__name__}: {message}", None, started)
    if target is None:
        assert isinstance(result, JobResult)
        return result
    if temporary:
        try:
            replace_directory(temporary, target)
        except OSError as error:
            error_message = OutputError(f"{target}: cannot write: {error.strerror or error}")
            return failure(item, error_message.message, None, started)
    seconds = time.perf_counter() - started
    return JobResult(item.source, "succeeded", (target,), seconds=seconds)
