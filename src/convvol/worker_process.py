"""The processes a batch's pool runs its workers in (imported only when a pool starts:
multiprocessing costs start-up time that single files never need)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import suppress
from multiprocessing.context import (
    BaseContext,
    ForkContext,
    ForkProcess,
    SpawnContext,
    SpawnProcess,
)

from convvol.errors import debug_requested


class _QuietWhenThePoolFails:
    """A pool worker that ends quietly (exit 1) when the pool's own machinery fails under
    it, e.g. its task queue's descriptor gone after a neighbour was killed (seen once in
    the soak, on CPython 3.11's ProcessPoolExecutor). The batch already reports such a
    death in one line naming the file, and retries it; multiprocessing's traceback would
    only bury that line. Errors in convvol's own work never reach here: the worker's job
    turns them into failed results."""

    def run(self) -> None:
        try:
            super().run()  # type: ignore[misc]
        except Exception:
            if debug_requested():
                raise  # the traceback, as convvol's own errors give it with CONVVOL_DEBUG
            sys.stderr.flush()
            os._exit(1)


class WorkerProcess(_QuietWhenThePoolFails, SpawnProcess):
    """A spawned worker: a fresh interpreter that imports what it needs."""


class ForkedWorkerProcess(_QuietWhenThePoolFails, ForkProcess):
    """A forked worker: a copy of the batch's process, its imports included."""


class WorkerContext(SpawnContext):
    """Spawned workers, as WorkerProcess."""

    Process = WorkerProcess


class ForkedWorkerContext(ForkContext):
    """Forked workers, as ForkedWorkerProcess."""

    Process = ForkedWorkerProcess


def _fresh_stop_signals() -> None:
    """In a forked worker, at once: SIGTERM and SIGHUP as a spawned worker starts with
    them. The batch's own handlers (raising in its main thread, to clean up and report)
    would otherwise run in the child, e.g. when the pool terminates a worker that is
    still starting, and print a traceback; the worker sets its own when it starts."""
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and callable(signal.getsignal(number)):
            with suppress(ValueError):  # not the main thread: nothing to reset there
                signal.signal(number, signal.SIG_DFL)


# Registered when this module is imported (only when a pool starts): every child this
# process forks afterwards is one of a pool's workers.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_stop_signals)


def worker_context() -> BaseContext:
    """How a pool starts its workers: forked where that is safe, else spawned.

    A forked worker starts at once with everything the batch has imported; a spawned one
    first starts Python and imports NumPy, Pillow and convvol again (about 0.15 s of a
    core each, per pool). Forking is safe only on Linux (macOS's system libraries are not
    fork-safe) and from a process running no other thread, since a lock another thread
    held at the fork would stay locked in the child for ever. The batch forks before it
    starts any thread of its own (its progress bar starts after the workers); a pool
    started later (after a worker died) or from a program with threads is spawned. A
    forked worker's SIGTERM and SIGHUP are reset at once (:func:`_fresh_stop_signals`).
    """
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return ForkedWorkerContext()
    return WorkerContext()
