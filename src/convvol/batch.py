"""Batches: many inputs, one output template, files filtered side by side.

Inputs are paths, directories (searched recursively for images, ``.npy`` files and Zarr
arrays, by extension) and glob patterns (:func:`expand_inputs`). Each input's outputs
come from a template with ``{stem}`` and, to mirror a directory tree, ``{relpath}``
(:func:`check_plan` refuses clashes before any work). Each file goes through the one job
flow (:func:`convvol.jobs.process_file`), which never raises for a bad file: it returns a
failed result, so the batch goes on. :func:`run_local` runs files in this process or in
a pool of worker processes, each engine held to its share of the cores;
:mod:`convvol.cluster` runs them on a Dask cluster.
"""

from __future__ import annotations

import copyreg
import glob
import os
import shutil
import signal
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from convvol.engine import available_threads
from convvol.errors import ParameterError, VolumeError, debug_requested
from convvol.io.remote import filesystem, is_url, path_key
from convvol.io.streams import is_zarr
from convvol.io.writers import TEMPORARY_SUFFIX, writer_gone
from convvol.jobs import Item, JobOptions, JobResult, directory_error, process_file

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

# What a directory is searched for: images Pillow reads, .npy volumes, Zarr arrays.
INPUT_SUFFIXES = frozenset(
    {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".dib",
     ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".npy", ".zarr"}
)  # fmt: skip
GLOB_CHARACTERS = frozenset("*?[")


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


# Banks keep their mappings read-only (types.MappingProxyType), which pickle cannot send
# to a worker process by itself: send a copy, made read-only again on arrival.
copyreg.pickle(MappingProxyType, lambda proxy: (_mapping_proxy, (dict(proxy),)))


# --- inputs -------------------------------------------------------------------------


def is_pattern(argument: str) -> bool:
    """A glob pattern to expand (``*``, ``?`` or ``[``) rather than a file that exists."""
    return bool(GLOB_CHARACTERS & set(argument)) and not os.path.lexists(argument)


def is_batch(arguments: Sequence[str]) -> bool:
    """Several inputs, or one that names several files (a directory or a pattern), or a URL."""
    if len(arguments) != 1:
        return True
    (argument,) = arguments
    if argument == "-":
        return False
    return (
        is_url(argument)
        or is_pattern(argument)
        or (os.path.isdir(argument) and not is_zarr(argument))
    )


def expand_inputs(arguments: Sequence[str]) -> list[Item]:
    """The files the arguments name, in order, each once.

    A file (or a Zarr array) is taken as it is, even if it does not exist (it then fails
    on its own). A directory gives every image, ``.npy`` and ``.zarr`` below it, hidden
    names skipped, with ``relpath`` its sub-directory. A pattern (``photos/*.png``,
    ``**`` for any depth) gives the files it matches, ``relpath`` relative to the part
    before the first wildcard. A directory or a pattern that gives nothing is an error.
    """
    items: list[Item] = []
    seen: set[str] = set()
    for argument in arguments:
        if argument == "-":
            if len(arguments) > 1:
                raise ParameterError("- (standard input) can only be the only INPUT")
            return [Item("-", "stdin")]
        found = list(_expand(argument))
        if not found:
            pattern = is_pattern(argument) or is_url(argument)
            raise ParameterError(
                f"{'pattern' if pattern else 'directory'} {argument!r} matches no images, "
                ".npy or .zarr files",
                hint=(
                    f"check its folders and extension: convvol matches * ? [...] and ** "
                    f"(any depth) itself, from {os.getcwd()}"
                    if pattern
                    else "it holds no file with an image, .npy or .zarr extension (hidden "
                    "names are skipped)"
                ),
            )
        for item in found:
            key = path_key(item.source)
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def _expand(argument: str) -> Iterator[Item]:
    if is_url(argument):
        yield from _expand_url(argument)
    elif is_pattern(argument):
        root = _pattern_root(argument)
        for match in sorted(glob.glob(argument, recursive=True)):
            if os.path.isfile(match) or is_zarr(match):
                yield Item.of(match, root)
    elif os.path.isdir(argument) and not is_zarr(argument):
        for path in _walk(Path(argument)):
            yield Item.of(str(path), argument)
    else:
        yield Item.of(argument)


def _walk(directory: Path) -> Iterator[Path]:
    """Inputs below ``directory`` in sorted order, not entering hidden or Zarr directories."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise VolumeError(f"{directory}: cannot list: {error.strerror or error}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not is_zarr(entry):
            yield from _walk(entry)
        elif entry.suffix.lower() in INPUT_SUFFIXES:
            yield entry


def _pattern_root(pattern: str) -> str:
    """The directories of a pattern before its first wildcard: what {relpath} is relative to."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _expand_url(url: str) -> Iterator[Item]:
    files, path = filesystem(url)
    protocol = url.split("://", 1)[0]
    if GLOB_CHARACTERS & set(path):
        root = _pattern_root(path)
        matches = sorted(files.glob(path))
    elif files.isdir(path) and not path.rstrip("/").endswith(".zarr"):
        root = path
        matches = [
            found for found in sorted(files.find(path))
            if Path(found).suffix.lower() in INPUT_SUFFIXES
            and not any(part.startswith(".") for part in Path(found).parts)
        ]  # fmt: skip
    else:
        yield Item.of(url)
        return
    for match in matches:
        relative = os.path.relpath(os.path.dirname(match) or ".", root)
        url_of_match = f"{protocol}://{match.lstrip('/') if protocol != 'file' else match}"
        yield Item(url_of_match, Item.of(match).stem, relative)


# --- planning -----------------------------------------------------------------------


def check_plan(items: Sequence[Item], options: JobOptions) -> None:
    """Refuse, before any work, outputs that clash or overwrite inputs (ParameterError)."""
    if len(items) > 1 and "stem" not in _template_fields(options.template):
        raise ParameterError(
            f"{options.template!r} would write every input to the same file; include {{stem}}",
            hint="e.g. -o 'out/{stem}.png', or 'out/{relpath}/{stem}.png' to mirror folders",
        )
    claimed: dict[str, str] = {}
    inputs = {path_key(item.source) for item in items}
    for item in items:
        # With --split, each file's own outputs differ by {name}/{index}; files clash
        # when everything else is the same.
        fields = options.fields(item)
        extra = {"name": "{name}", "index": 0} if options.split else {}
        target = options.template.format(**fields, **extra)
        key = path_key(target)
        if key in claimed:
            raise ParameterError(
                f"{claimed[key]} and {item.source} would both write {target}",
                hint="add {relpath} to the template to mirror the input folders",
            )
        claimed[key] = item.source
        if not options.split:
            if key in inputs:
                raise ParameterError(f"{target} is an input: convvol never overwrites its input")
            if not is_url(target) and os.path.isdir(target) and not is_zarr(target):
                raise directory_error(target)


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def absolute(items: Sequence[Item], options: JobOptions) -> tuple[list[Item], JobOptions]:
    """Items and template with local paths made absolute, for workers elsewhere."""

    def fix(path: str) -> str:
        return path if is_url(path) or path == "-" else os.path.abspath(path)

    fixed = [replace(item, source=fix(item.source)) for item in items]
    return fixed, replace(options, template=fix(options.template))


def remove_temporaries(targets: Iterable[str]) -> None:
    """Remove the hidden part-files that killed or interrupted workers left beside these
    outputs (call it only when none of this batch's workers is writing them): only those
    of processes that have ended, never a concurrent convvol's still being written."""
    by_directory: dict[Path, set[str]] = {}
    for target in targets:
        if not is_url(target):
            path = Path(target)
            by_directory.setdefault(path.parent, set()).add(path.name)
    for directory, names in by_directory.items():
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
                continue
            if name[1:].rsplit(".", 2)[0] in names and writer_gone(name):  # .NAME.<pid>-<hex>...
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with suppress(OSError):
                        os.unlink(entry.path)


def every_target(
    items: Sequence[Item], options: JobOptions, results: Sequence[JobResult]
) -> list[str]:
    """The outputs of finished files and the expected output of every file, failed ones
    too: a worker killed while writing a file that then failed left its part-file there."""
    expected = (options.single_target(item) for item in items)
    return [*(t for result in results for t in result.targets), *filter(None, expected)]


# --- running ------------------------------------------------------------------------

OnResult = Callable[[JobResult], None]


def run_local(
    items: Sequence[Item],
    options: JobOptions,
    *,
    jobs: int | None = None,
    on_result: OnResult | None = None,
    on_start: Callable[[], None] | None = None,
) -> list[JobResult]:
    """Filter every item: in this process with ``jobs=1``, else in worker processes.

    ``jobs`` defaults to the number of cores; each worker's engine gets cores ÷ workers
    threads, so the machine is busy but not oversubscribed. Results come back (and go to
    ``on_result``) as files finish. A worker that dies takes only its file with it: the
    files it held are retried once in a fresh pool. Ctrl-C stops the workers (their
    files in the making are removed) and raises KeyboardInterrupt. ``on_start`` is
    called once the workers exist: a caller's threads (a progress bar's) start there,
    after the workers were forked (:func:`convvol.worker_process.worker_context`).
    """
    report = on_result or (lambda result: None)
    cores = available_threads()
    workers = max(1, min(jobs or cores, len(items)))
    results: list[JobResult] = []

    def keep(result: JobResult) -> None:
        results.append(result)
        report(result)

    if workers == 1:
        if on_start is not None:
            on_start()
        for item in items:
            try:
                keep(process_file(item, options))
            except KeyboardInterrupt:
                remove_temporaries(filter(None, [options.single_target(item)]))
                raise
    else:
        _run_pool(items, options, workers, max(1, cores // workers), keep, on_start)
    remove_temporaries(every_target(items, options, results))
    return results


def _run_pool(
    items: Sequence[Item],
    options: JobOptions,
    workers: int,
    threads: int,
    keep: OnResult,
    on_start: Callable[[], None] | None = None,
) -> None:
    pending = list(reversed(items))  # popped from the end: input order
    attempts: dict[int, int] = {}

    def retry(item: Item) -> None:
        """Once more in a fresh pool; a second death (its own or a neighbour's) fails it."""
        attempts[id(item)] = attempts.get(id(item), 0) + 1
        if attempts[id(item)] < 2:
            pending.append(item)
        else:
            message = f"{item.source}: the worker process died on it (out of memory?)"
            keep(JobResult(item.source, "failed", (), message))

    with manager_deaths_quiet():
        _run_pools(pending, retry, options, workers, threads, keep, on_start)


def _run_pools(
    pending: list[Item],
    retry: Callable[[Item], None],
    options: JobOptions,
    workers: int,
    threads: int,
    keep: OnResult,
    on_start: Callable[[], None] | None = None,
) -> None:
    """Run ``pending`` in pools, a fresh one after each break, until none is left;
    ``on_start()`` once the first pool's workers exist."""
    # Imported here: multiprocessing costs start-up time that single files never need.
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from convvol.worker_process import worker_context

    while pending:
        pool = ProcessPoolExecutor(
            workers, mp_context=worker_context(), initializer=_worker_start,
            initargs=(os.getpid(),),
        )  # fmt: skip
        running: dict[Future[JobResult], Item] = {}
        broken = False
        try:
            while (pending or running) and not broken:
                while pending and len(running) < 4 * workers:  # a window, not a million futures
                    item = pending.pop()
                    try:
                        with _sigint_ignored():  # submit() may start a worker
                            running[pool.submit(_worker_job, item, options, threads)] = item
                        if on_start is not None:  # the workers exist (forked, if they were)
                            on_start()
                            on_start = None
                    except (BrokenProcessPool, OSError, ValueError):
                        # A worker that dies while the pool starts another can break
                        # submit() with these too (a race inside ProcessPoolExecutor).
                        pending.append(item)
                        broken = True
                        break
                if broken:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    try:
                        keep(future.result())
                    except BrokenProcessPool:
                        broken = True
                        retry(item)
            if broken:
                # Workers that stopped for Ctrl-C (exit 130) break the pool too, maybe just
                # before this process's own KeyboardInterrupt arrives: that is no crash.
                if _exit_codes(pool) & {128 + signal.SIGINT}:
                    raise KeyboardInterrupt
                for item in running.values():  # their futures fail too: start them again
                    retry(item)
                running.clear()
        except KeyboardInterrupt:
            _interrupt(pool)
            # An interrupt can fall between a part-file's creation and its bookkeeping.
            remove_temporaries(filter(None, (options.single_target(i) for i in running.values())))
            raise
        finally:
            if broken:  # its manager may wait for workers that were never told to stop
                _kill_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def manager_deaths_quiet() -> Iterator[None]:
    """Silence the death of a pool's manager thread: in CPython 3.11 it can die of a race
    while the pool breaks (``submit()`` starting a worker as the thread counts them:
    "dictionary changed size during iteration", seen in the soak). By then it has failed
    the pool's futures, so the batch retries their files and reports them in one line
    each; its traceback would only bury those lines. ``CONVVOL_DEBUG=1`` shows it."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        manager = type(args.thread).__name__ == "_ExecutorManagerThread"
        if manager and not debug_requested():
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """End a broken pool's remaining workers (their files are retried in a fresh pool)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
        process.join(timeout=5)


def _exit_codes(pool: ProcessPoolExecutor) -> set[int]:
    """How a broken pool's workers ended (they are joined first)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public list
    for process in processes:
        process.join(timeout=5)
    return {process.exitcode for process in processes if process.exitcode is not None}


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start workers with Ctrl-C ignored (an ignored signal stays ignored across exec): a
    worker still importing would die with a traceback. They take Ctrl-C again once ready."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(pool: ProcessPoolExecutor) -> None:
    """Ask every worker to stop: each removes its file in the making, then exits. One that
    does not within 10 s is killed (its part-file is removed by the next run)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public list
    for process in processes:
        if process.pid is not None and process.is_alive():
            with suppress(OSError):
                os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


_busy = False  # a file is in the making in this worker
_stopping = False  # this worker was interrupted or lost its parent: exit after the file
_exit_code = 1  # then, how it exits: 128 + the signal's number, or 1 for a lost parent


def _worker_start(parent: int) -> None:
    reuse_freed_memory()
    signal.signal(signal.SIGINT, _worker_interrupted)
    signal.signal(signal.SIGTERM, _worker_interrupted)  # the pool's own terminate() too
    # A worker's own queue handles keep its pipes open, so it would wait for work forever
    # if the batch were killed (SIGKILL): watch the parent instead (by the pid it gave,
    # since it may be gone already by the time this worker starts).
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


# glibc's mallopt parameters (malloc.h) and what a worker sets them to.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20  # the most glibc allows
_TRIM_THRESHOLD = 64 * 2**20


def reuse_freed_memory() -> bool:
    """Let this process reuse the memory its last file freed for the next one (glibc's C
    library; elsewhere nothing changes). Returns whether it was set.

    glibc gives allocations above a threshold (128 KiB at first, rising to the largest
    freed one) pages of their own from the kernel and returns them when freed, so a
    worker's every file faulted in its images afresh: for a 3000×2000 photo some 8 000
    pages, a fifth of its time. Served from the heap below 32 MiB, with up to 64 MiB of
    freed memory kept at its top, the next file's images reuse the last one's pages.
    Peak memory is unchanged; larger arrays are mapped and returned as before.
    """
    if "glibc" not in (_libc_version() or ""):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def _libc_version() -> str | None:
    """'glibc 2.36' and the like, or None where the C library is not glibc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None


def _watch_parent(parent: int) -> None:
    global _stopping
    while os.getppid() == parent:
        time.sleep(0.5)
    _stopping = True
    if not _busy:  # else the file in hand is finished first, then the worker goes
        os._exit(1)


def _worker_interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C reaches the workers too (and the batch passes it on), as may SIGTERM: a
    worker making a file stops it (its temporaries are removed on the way out) and exits
    with 128 + the signal's number; an idle one exits at once."""
    global _stopping, _exit_code
    if _stopping:
        return
    _stopping, _exit_code = True, 128 + signum
    if _busy:
        raise KeyboardInterrupt
    os._exit(_exit_code)


def _worker_job(item: Item, options: JobOptions, threads: int) -> JobResult:
    global _busy
    try:
        _busy = True
        try:
            return process_file(item, options, threads)
        finally:
            _busy = False
    except KeyboardInterrupt:  # the outputs in the making were discarded on the way here
        sys.stderr.flush()
        os._exit(_exit_code)
    finally:
        if _stopping:  # however the interrupt fell, never wait for more work
            os._exit(_exit_code)
