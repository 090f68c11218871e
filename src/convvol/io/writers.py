"""Writing outputs atomically: each file to a hidden temporary beside its target, renamed
into place only once complete; several files all or nothing (:class:`OutputSet`);
standard output written whole or not at all.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

from convvol.errors import OutputError, ParameterError
from convvol.io.encode import encode_volume
from convvol.io.formats import DEFAULT_COMPRESS_LEVEL, Format, format_for_path, format_named
from convvol.io.metadata import NO_INFO, ImageInfo
from convvol.io.tiff import DEFAULT_COMPRESSION

TEMPORARY_SUFFIX = ".convvol-part"  # the hidden files of outputs in the making


def temporary_name(path: Path, suffix: str = TEMPORARY_SUFFIX) -> Path:
    """A hidden, unique name beside ``path``: for its content until it is complete, or
    (``suffix=".convvol-backup"``) for what it held while it is being replaced. It names
    the process writing it (``.NAME.<pid>-<random>.convvol-part``), so that cleaning up
    after killed workers never touches another live convvol's files."""
    return path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(6).hex()}{suffix}")


def writer_gone(temporary_name: str) -> bool:
    """Whether the process that made a hidden temporary file has ended (or is this one,
    whose own files the caller may remove). Names without a process id (from older
    versions) count as gone."""
    marker = temporary_name[1:].rsplit(".", 2)[1] if temporary_name.count(".") >= 3 else ""
    pid_text = marker.split("-", 1)[0] if "-" in marker else ""
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _create_temporary(temporary: Path) -> int:
    """Create ``temporary`` with mode 0666 less the umask, as open() does."""
    return os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)


class OutputSet:
    """Write several files all or nothing.

    Each file goes to a hidden temporary file beside its target; :meth:`commit` renames
    them all into place, :meth:`discard` (or an exception inside ``with``) removes them.
    Missing parent directories are created.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # directories made for outputs, removed on discard

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    @contextmanager
    def open(self, target: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
        """A binary stream whose content becomes ``target`` at commit."""
        path = Path(target)
        try:
            self._make_parents(path.parent)
            while True:
                # Staged before it exists: an interrupt at any moment leaves nothing behind.
                temporary = temporary_name(path)
                self._staged.append((temporary, path))
                try:
                    handle = _create_temporary(temporary)
                    break
                except FileExistsError:  # another file's name: not ours to remove
                    self._staged.remove((temporary, path))
        except (FileExistsError, NotADirectoryError):
            raise OutputError(f"{path}: a parent of this path is a file, not a directory") from None
        except OSError as error:
            raise OutputError(f"{path}: cannot write here: {error.strerror or error}") from None
        try:
            with os.fdopen(handle, "w+b") as stream:  # TIFF pages need reading back
                yield stream
            with suppress(FileNotFoundError):  # replacing a file: keep its permissions
                os.chmod(temporary, path.stat().st_mode & 0o7777)
        except OSError as error:
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None

    def write(self, target: str | os.PathLike[str], volume: np.ndarray, **options: Any) -> None:
        """Encode ``volume`` for ``target`` (format from ``options['fmt']`` or the name)."""
        fmt = options.pop("fmt", None) or format_for_path(target)
        with self.open(target) as stream:
            encode_volume(stream, volume, fmt, target=str(target), **options)

    def write_all(
        self,
        jobs: Sequence[
            tuple[str, np.ndarray, Format] | tuple[str, np.ndarray, Format, dict[str, Any]]
        ],
        **options: Any,
    ) -> None:
        """Encode several files at once, on a thread per core (zlib and Pillow's encoders
        release the GIL), e.g. the channels of ``--split``. A job's optional fourth item
        holds options of its own (a channel's ``names``)."""
        for job in jobs:  # directories first, from this thread, in order
            self._make_parents(Path(job[0]).parent)
        own = [dict(job[3]) if len(job) > 3 else {} for job in jobs]
        if len(jobs) == 1:
            target, volume, fmt = jobs[0][:3]
            self.write(target, volume, fmt=fmt, **(options | own[0]))
            return
        workers = min(len(jobs), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="convvol-write") as pool:
            futures = [
                pool.submit(self.write, job[0], job[1], fmt=job[2], **(options | extra))
                for job, extra in zip(jobs, own, strict=True)
            ]
            try:
                for future in futures:
                    future.result()  # re-raises the first failure; __exit__ then discards all
            except BaseException:  # a failure or Ctrl-C: start no more files
                for future in futures:
                    future.cancel()
                raise

    def _make_parents(self, directory: Path) -> None:
        missing = []
        while not directory.exists() and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:
                if made.is_dir():  # made meanwhile by another process (a batch's worker)
                    continue
                raise OutputError(
                    f"{made}: a parent of this path is a file, not a directory"
                ) from None
            except NotADirectoryError:
                raise OutputError(
                    f"{made}: a parent of this path is a file, not a directory"
                ) from None
            except OSError as error:
                raise OutputError(
                    f"{made}: cannot make this directory: {error.strerror or error}"
                ) from None
            self._created.append(made)

    def commit(self) -> None:
        """Move every staged file into place; if one cannot be, restore the ones already moved.

        Files being replaced are first hard-linked to a backup name beside them, so a
        failure halfway puts every earlier target back as it was.
        """
        replaced: list[tuple[Path, Path | None]] = []
        try:
            for temporary, path in self._staged:
                if path.is_dir():
                    raise IsADirectoryError(21, "Is a directory")
                backup = None
                if path.exists():
                    backup = temporary.with_suffix(".convvol-backup")
                    try:
                        os.link(path, backup)
                    except OSError:  # no hard links here: replace without a way back
                        backup = None
                os.replace(temporary, path)
                replaced.append((path, backup))
        except BaseException as error:  # an OSError, or Ctrl-C halfway: put everything back
            for done, backup in reversed(replaced):
                with suppress(OSError):
                    os.replace(backup, done) if backup else os.unlink(done)
            self.discard()
            if not isinstance(error, OSError):
                raise
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
        finally:
            for _, backup in replaced:
                if backup:
                    with suppress(OSError):
                        os.unlink(backup)
        self._staged.clear()

    def discard(self) -> None:
        """Remove every staged file not moved into place, and directories made for them."""
        for temporary, _ in self._staged:
            with suppress(OSError):
                os.unlink(temporary)
        self._staged.clear()
        for directory in reversed(self._created):
            with suppress(OSError):
                directory.rmdir()  # only if still empty
        self._created.clear()


def write_stdout(data: memoryview) -> None:
    """All of ``data`` to standard output: a short write is continued, never dropped.

    BrokenPipeError (the reader has gone, as with ``| head``) is left to the caller.
    """
    view = memoryview(data)
    try:
        while view:
            written = sys.stdout.buffer.write(view)
            if not written:
                raise OSError("standard output takes no more data")
            view = view[written:]
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputError(f"standard output: cannot write: {error.strerror or error}") from None


def write_volume(
    target: str | os.PathLike[str] | IO[bytes],
    volume: np.ndarray,
    *,
    format: str | None = None,
    scale: str = "clip",
    depth: int | str = 8,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    quantized: bool = False,
    info: ImageInfo = NO_INFO,
    values: str = "unit",
    compress: str = DEFAULT_COMPRESSION,
    names: Sequence[str] = (),
    nodata: float | None = None,
    quality: int | None = None,
    lossless: bool = False,
) -> None:
    """Write an H×W×C volume to a path (atomically), ``"-"`` (stdout) or a binary stream.

    The format comes from ``format`` or else the path's extension. Images store 1
    (greyscale) or 3 (RGB) channels, TIFF any number (as one image of that many samples
    per pixel); pixels follow ``scale`` (clip, abs, minmax, signed) and ``depth`` (8 or 16
    bits; for TIFF also ``"float"``, raw float32 samples, or an integer type's name such
    as ``"int16"``). ``values="native"`` says the volume is in the samples' own numbers
    rather than [0, 1]. ``.npy`` stores the float32 volume unscaled. ``quantized=True``
    writes pixels that ``to_pixels`` (or ``render_layers``) made already, as they are.
    ``info`` (from :func:`read_image`) describes the input, for what the format can carry
    (a TIFF its georeferencing; ``nodata`` is in the output's units). TIFF takes
    ``compress`` (none, deflate, zstd, lzw, packbits) and ``names`` as band names.
    ``quality`` (1–100) is JPEG's and WebP's; ``lossless`` makes a WebP lossless.
    """
    options: dict[str, Any] = {
        "scale": scale, "depth": depth, "compress_level": compress_level, "quantized": quantized,
        "info": info, "values": values, "compress": compress, "names": tuple(names),
        "nodata": nodata, "quality": quality, "lossless": lossless,
    }  # fmt: skip
    to_stdout = isinstance(target, str | os.PathLike) and str(target) == "-"
    if isinstance(target, str | os.PathLike) and not to_stdout:
        fmt = format_named(format) if format else format_for_path(target)
        with OutputSet() as outputs:
            outputs.write(target, volume, fmt=fmt, **options)
        return
    if format is None:
        raise ParameterError("writing to a stream needs a format (e.g. format='png')")
    fmt = format_named(format)
    if isinstance(target, str | os.PathLike):
        # Encode fully first, so a failure never leaves half an image on stdout.
        buffer = io.BytesIO()
        encode_volume(buffer, volume, fmt, **options)
        write_stdout(buffer.getbuffer())
    else:
        encode_volume(target, volume, fmt, **options)
