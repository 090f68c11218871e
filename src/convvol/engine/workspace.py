"""Per-thread scratch arrays reused from band to band, and the bias every method adds."""

from __future__ import annotations

import math
import threading
from typing import ClassVar

import numpy as np
from numpy.typing import DTypeLike


class Workspace:
    """Scratch arrays reused from band to band, one set per thread.

    Fresh multi-megabyte arrays cost a page fault per 4 KiB on first touch, which can
    take longer than the arithmetic of a band. Between calls :func:`trim_workspaces`
    keeps at most a few MiB per thread.
    """

    _lock = threading.Lock()
    _by_thread: ClassVar[dict[int, Workspace]] = {}

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    @classmethod
    def current(cls) -> Workspace:
        """This thread's workspace."""
        ident = threading.get_ident()
        with cls._lock:
            return cls._by_thread.setdefault(ident, cls())

    def array(self, name: str, shape: tuple[int, ...], dtype: DTypeLike = np.float32) -> np.ndarray:
        """An uninitialised array of ``shape``, valid until the next request for ``name``."""
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = np.empty(max(size, 1), dtype)
            self.buffers[name] = buffer
        return buffer[:size].reshape(shape)


def trim_workspaces(keep_bytes: int = 32 * 2**20) -> None:
    """Free scratch arrays beyond ``keep_bytes`` per thread, and those of ended threads."""
    alive = {thread.ident for thread in threading.enumerate()}
    with Workspace._lock:
        for ident in list(Workspace._by_thread):
            if ident not in alive:
                del Workspace._by_thread[ident]
                continue
            buffers = Workspace._by_thread[ident].buffers
            kept = 0
            for name in sorted(buffers, key=lambda n: buffers[n].nbytes):
                kept += buffers[name].nbytes
                if kept > keep_bytes:
                    del buffers[name]


def add_bias(out: np.ndarray, bias: np.ndarray | None) -> None:
    """out += bias over an H×W×N band, with inner loops a whole row long (broadcasting
    the N values directly gives loops of length N, far slower for small N)."""
    if bias is None or not bias.any():
        return
    if out.strides[1:] != (out.shape[2] * out.itemsize, out.itemsize):  # rows not contiguous
        out += bias
        return
    rows = out.reshape(out.shape[0], -1)  # a view: each row's W'×N values are contiguous
    rows += np.tile(bias, out.shape[1])
