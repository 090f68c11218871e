"""Batches: many inputs, one output template, files filtered side by side.

Inputs are paths, directories (searched recursively for images, ``.npy`` files and Zarr
arrays, by extension) and glob patterns (:func:`expand_inputs`). Each input's outputs
come from a template with ``{stem}`` and, to mirror a directory tree, ``{relpath}``
(:func:`check_plan` refuses clashes before any work). :func:`process_file` filters one
file and never raises for a bad file: it returns a failed :class:`FileResult`, so the
batch goes on. :func:`run_local` runs files in this process or in a pool of worker
processes, each engine held to its share of the cores; :mod:`convvol.distributed` runs
them on a Dask cluster.
"""

from __future__ import annotations

import copyreg
import glob
import io
import os
import shutil
import signal
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from convvol import outofcore, strips
from convvol.bank import Bank
from convvol.engine import available_threads
from convvol.errors import ConvvolError, OutputError, ParameterError, VolumeError
from convvol.pipeline import check_memory
from convvol.volume import (
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_MAX_PIXELS,
    TEMPORARY_SUFFIX,
    Format,
    OutputSet,
    check_encodable,
    encode_volume,
    format_for_path,
    format_named,
    read_volume,
)

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


@dataclass(frozen=True)
class Item:
    """One input of a batch: where it is, and the template fields it gives."""

    source: str  # a path or fsspec URL, as given or found
    stem: str  # the file name without its extension
    relpath: str = "."  # its directory relative to the directory or pattern it came from


def is_url(text: str) -> bool:
    """An fsspec URL (``s3://bucket/key``, ``file:///path``) rather than a local path."""
    return "://" in text


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
        or (os.path.isdir(argument) and not outofcore.is_zarr(argument))
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
            what = "pattern" if is_pattern(argument) or is_url(argument) else "directory"
            raise ParameterError(
                f"{what} {argument!r} matches no images, .npy or .zarr files",
                hint="quote patterns ('photos/*.png') so that convvol expands them",
            )
        for item in found:
            key = item.source if is_url(item.source) else os.path.realpath(item.source)
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
            if os.path.isfile(match) or outofcore.is_zarr(match):
                yield _item(match, root)
    elif os.path.isdir(argument) and not outofcore.is_zarr(argument):
        for path in _walk(Path(argument)):
            yield _item(str(path), argument)
    else:
        yield Item(argument, _stem(argument))


def _walk(directory: Path) -> Iterator[Path]:
    """Inputs below ``directory`` in sorted order, not entering hidden or Zarr directories."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise VolumeError(f"{directory}: cannot list: {error.strerror or error}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not outofcore.is_zarr(entry):
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


def _stem(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem or name


def _item(source: str, root: str) -> Item:
    relative = os.path.relpath(os.path.dirname(source) or ".", root)
    return Item(source, _stem(source), relative)


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ParameterError(
            f"{url}: URLs need fsspec", hint="pip install 'convvol[dask]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as error:
        raise ParameterError(f"{url}: {error}") from None


def _expand_url(url: str) -> Iterator[Item]:
    filesystem, path = _filesystem(url)
    protocol = url.split("://", 1)[0]
    if GLOB_CHARACTERS & set(path):
        root = _pattern_root(path)
        matches = sorted(filesystem.glob(path))
    elif filesystem.isdir(path) and not path.rstrip("/").endswith(".zarr"):
        root = path
        matches = [
            found for found in sorted(filesystem.find(path))
            if Path(found).suffix.lower() in INPUT_SUFFIXES
            and not any(part.startswith(".") for part in Path(found).parts)
        ]  # fmt: skip
    else:
        yield Item(url, _stem(url))
        return
    for match in matches:
        relative = os.path.relpath(os.path.dirname(match) or ".", root)
        yield Item(f"{protocol}://{match.lstrip('/') if protocol != 'file' else match}",
                   _stem(match), relative)  # fmt: skip


# --- planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    """Everything a worker needs to filter one file, the same for every file."""

    banks: tuple[Bank, ...]
    template: str  # with {stem}, {relpath}, {bank}; with split also {name}, {index}
    labels: tuple[str, ...] = ()  # the banks as the user named them, for messages
    split: bool = False
    format_name: str | None = None
    channels: str = "rgb"
    overrides: Mapping[str, Any] = field(default_factory=dict)  # apply_bank's settings
    scale: str = "clip"
    depth: int = 8
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    max_memory: int | None = None  # bytes per file (out-of-core budget, engine share)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # input limit, as read_volume's
    skip_existing: bool = False


@dataclass(frozen=True)
class FileResult:
    """What became of one input."""

    source: str
    status: str  # "succeeded", "failed" or "skipped"
    targets: tuple[str, ...] = ()
    message: str = ""
    hint: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def fields_for(item: Item, options: BatchOptions) -> dict[str, str]:
    """The template fields an input gives (without --split's {name} and {index})."""
    return {"stem": item.stem, "relpath": item.relpath, "bank": options.banks[-1].name}


def single_target(item: Item, options: BatchOptions) -> str | None:
    """The one output of a file (None with --split, whose outputs depend on its depth)."""
    return None if options.split else options.template.format(**fields_for(item, options))


def check_plan(items: Sequence[Item], options: BatchOptions) -> None:
    """Refuse, before any work, outputs that clash or overwrite inputs (ParameterError)."""
    if len(items) > 1 and "stem" not in _template_fields(options.template):
        raise ParameterError(
            f"{options.template!r} would write every input to the same file; include {{stem}}",
            hint="e.g. -o 'out/{stem}.png', or 'out/{relpath}/{stem}.png' to mirror folders",
        )
    claimed: dict[str, str] = {}
    inputs = {_key(item.source) for item in items}
    for item in items:
        # With --split, each file's own outputs differ by {name}/{index}; files clash
        # when everything else is the same.
        fields = fields_for(item, options)
        extra = {"name": "{name}", "index": 0} if options.split else {}
        target = options.template.format(**fields, **extra)
        key = _key(target)
        if key in claimed:
            raise ParameterError(
                f"{claimed[key]} and {item.source} would both write {target}",
                hint="add {relpath} to the template to mirror the input folders",
            )
        claimed[key] = item.source
        if not options.split:
            if key in inputs:
                raise ParameterError(f"{target} is an input: convvol never overwrites its input")
            if not is_url(target) and os.path.isdir(target) and not outofcore.is_zarr(target):
                raise ParameterError(f"{target} is a directory")


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def _key(path: str) -> str:
    return path if is_url(path) else os.path.realpath(path)


def target_exists(target: str) -> bool:
    """Whether an output is there already (a local path or an fsspec URL)."""
    if is_url(target):
        filesystem, path = _filesystem(target)
        return bool(filesystem.exists(path))
    return os.path.exists(target)


def absolute(items: Sequence[Item], options: BatchOptions) -> tuple[list[Item], BatchOptions]:
    """Items and template with local paths made absolute, for workers elsewhere."""

    def fix(path: str) -> str:
        return path if is_url(path) or path == "-" else os.path.abspath(path)

    fixed = [replace(item, source=fix(item.source)) for item in items]
    return fixed, replace(options, template=fix(options.template))


# --- one file -----------------------------------------------------------------------


def process_file(item: Item, options: BatchOptions, threads: int | None = None) -> FileResult:
    """Filter one input to its outputs; a bad file gives a failed result, never an error.

    ``threads`` (default: every core) are the engine's threads for this file; results do
    not depend on them. Outputs are atomic: nothing appears unless it is complete.
    """
    started = time.perf_counter()
    try:
        targets, status = _process(item, options, threads)
    except ConvvolError as error:
        return failure(item, error.message, error.hint, started)
    except MemoryError:
        return failure(item, "not enough memory for this image and bank",
                       "use --max-memory with .npy or .zarr outputs", started)  # fmt: skip
    except Exception as error:  # a batch outlives surprises; the message says what
        return failure(item, f"internal error: {type(error).__name__}: {error}", None, started)
    return FileResult(item.source, status, tuple(targets), seconds=time.perf_counter() - started)


def failure(item: Item, message: str, hint: str | None, started: float) -> FileResult:
    """A failed result whose message names the file."""
    if item.source not in message:
        message = f"{item.source}: {message}"
    return FileResult(item.source, "failed", (), message, hint, time.perf_counter() - started)


def _process(item: Item, options: BatchOptions, threads: int | None) -> tuple[list[str], str]:
    target = single_target(item, options)
    if target is not None and options.skip_existing and target_exists(target):
        return [target], "skipped"
    if target is not None and outofcore.can_stream(
        item.source, target, split=False, format_name=options.format_name
    ):
        outofcore.filter_volume(
            item.source, options.banks, target, budget=options.max_memory, threads=threads,
            labels=options.labels or None, format=options.format_name,
            max_pixels=options.max_pixels, **options.overrides,
        )  # fmt: skip
        return [target], "succeeded"
    volume = _read(item.source, options.channels, options.max_pixels)
    # Refused up front, as on the command line, if the machine has no room for the run.
    check_memory(volume.shape, options.banks, label=item.source, input_bytes=volume.nbytes,
                 **options.overrides)  # fmt: skip
    layers = strips.plan_layers(
        (volume.shape[0], volume.shape[1], volume.shape[2]), options.banks,
        memory_limit=outofcore.engine_memory_limit(options.max_memory),
        labels=options.labels or None, **options.overrides,
    )  # fmt: skip
    names = layers[-1].names
    fields = fields_for(item, options)
    targets = (
        [options.template.format(name=name, index=index, **fields)
         for index, name in enumerate(names)]
        if options.split
        else [options.template.format(**fields)]
    )  # fmt: skip
    if options.split and options.skip_existing and all(map(target_exists, targets)):
        return targets, "skipped"
    formats = [_format(options.format_name, t) for t in targets]
    for each, fmt in zip(targets, formats, strict=True):
        check_encodable(fmt, 1 if options.split else len(names), options.depth, each)
        if _key(each) == _key(item.source):
            raise ParameterError(f"{each} is the input: convvol never overwrites its input")
    result = strips.run_plans(volume, layers, threads=threads)
    del volume
    jobs = [
        (each, result[:, :, index : index + 1] if options.split else result, fmt)
        for index, (each, fmt) in enumerate(zip(targets, formats, strict=True))
    ]
    encoding = {"scale": options.scale, "depth": options.depth,
                "compress_level": options.compress_level}  # fmt: skip
    if is_url(targets[0]):
        for each, volume_out, fmt in jobs:
            _write_url(each, volume_out, fmt, encoding)
    else:
        with OutputSet() as outputs:
            outputs.write_all(jobs, **encoding)
    return targets, "succeeded"


def _format(format_name: str | None, target: str) -> Format:
    return format_named(format_name) if format_name else format_for_path(target)


def _read(source: str, channels: str, max_pixels: int | None) -> np.ndarray:
    if outofcore.is_zarr(source):
        return outofcore.read_whole(source, max_pixels=max_pixels)
    if not is_url(source):
        return read_volume(source, channels=channels, max_pixels=max_pixels)
    filesystem, path = _filesystem(source)
    try:
        data = filesystem.cat_file(path)
    except FileNotFoundError:
        raise VolumeError(f"{source}: no such file") from None
    except OSError as error:
        raise VolumeError(f"{source}: cannot read: {error}") from None
    stream = io.BytesIO(data)
    stream.name = source  # read_volume names the file in its messages
    return read_volume(stream, channels=channels, max_pixels=max_pixels)


def _write_url(target: str, volume: np.ndarray, fmt: Format, encoding: dict[str, Any]) -> None:
    """Encode fully, then store in one call: object stores make the object appear whole."""
    buffer = io.BytesIO()
    encode_volume(buffer, volume, fmt, target=target, **encoding)
    filesystem, path = _filesystem(target)
    try:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            filesystem.makedirs(parent, exist_ok=True)
        filesystem.pipe_file(path, buffer.getvalue())
    except OSError as error:
        raise OutputError(f"{target}: cannot write: {error}") from None


def remove_temporaries(targets: Iterable[str]) -> None:
    """Remove the hidden part-files that killed or interrupted workers left beside these
    outputs (call it only when no worker is writing them)."""
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
            if name[1:].rsplit(".", 2)[0] in names:  # .NAME.<hex>.convvol-part
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with suppress(OSError):
                        os.unlink(entry.path)


# --- running ------------------------------------------------------------------------

OnResult = Callable[[FileResult], None]


def run_local(
    items: Sequence[Item],
    options: BatchOptions,
    *,
    jobs: int | None = None,
    on_result: OnResult | None = None,
) -> list[FileResult]:
    """Filter every item: in this process with ``jobs=1``, else in worker processes.

    ``jobs`` defaults to the number of cores; each worker's engine gets cores ÷ workers
    threads, so the machine is busy but not oversubscribed. Results come back (and go to
    ``on_result``) as files finish. A worker that dies takes only its file with it: the
    files it held are retried once in a fresh pool. Ctrl-C stops the workers (their
    files in the making are removed) and raises KeyboardInterrupt.
    """
    report = on_result or (lambda result: None)
    cores = available_threads()
    workers = max(1, min(jobs or cores, len(items)))
    results: list[FileResult] = []

    def keep(result: FileResult) -> None:
        results.append(result)
        report(result)

    if workers == 1:
        for item in items:
            try:
                keep(process_file(item, options))
            except KeyboardInterrupt:
                remove_temporaries(filter(None, [single_target(item, options)]))
                raise
    else:
        _run_pool(items, options, workers, max(1, cores // workers), keep)
    remove_temporaries(target for result in results for target in result.targets)
    return results


def _run_pool(
    items: Sequence[Item], options: BatchOptions, workers: int, threads: int, keep: OnResult
) -> None:
    # Imported here: multiprocessing costs start-up time that single files never need.
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(reversed(items))  # popped from the end: input order
    attempts: dict[int, int] = {}

    def retry(item: Item) -> None:
        """Once more in a fresh pool; a second death (its own or a neighbour's) fails it."""
        attempts[id(item)] = attempts.get(id(item), 0) + 1
        if attempts[id(item)] < 2:
            pending.append(item)
        else:
            message = f"{item.source}: the worker process died on it (out of memory?)"
            keep(FileResult(item.source, "failed", (), message))

    while pending:
        # Spawned, not forked: the engine keeps threads, and forking after threads is unsafe.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)
        )
        running: dict[Future[FileResult], Item] = {}
        broken = False
        try:
            while (pending or running) and not broken:
                while pending and len(running) < 4 * workers:  # a window, not a million futures
                    item = pending.pop()
                    try:
                        with _sigint_ignored():  # submit() may start a worker
                            running[pool.submit(_worker_job, item, options, threads)] = item
                    except BrokenProcessPool:
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
            remove_temporaries(filter(None, (single_target(i, options) for i in running.values())))
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


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
    signal.signal(signal.SIGINT, _worker_interrupted)
    signal.signal(signal.SIGTERM, _worker_interrupted)  # the pool's own terminate() too
    # A worker's own queue handles keep its pipes open, so it would wait for work forever
    # if the batch were killed (SIGKILL): watch the parent instead (by the pid it gave,
    # since it may be gone already by the time this worker starts).
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


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


def _worker_job(item: Item, options: BatchOptions, threads: int) -> FileResult:
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
