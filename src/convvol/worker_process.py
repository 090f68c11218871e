"""The process a batch's pool runs its workers in (imported only when a pool starts:
multiprocessing costs start-up time that single files never need)."""

from __future__ import annotations

import os
import sys
from multiprocessing.context import SpawnContext, SpawnProcess

from convvol.errors import debug_requested


class WorkerProcess(SpawnProcess):
    """A pool worker that ends quietly (exit 1) when the pool's own machinery fails under
    it, e.g. its task queue's descriptor gone after a neighbour was killed (seen once in
    the soak, on CPython 3.11's ProcessPoolExecutor). The batch already reports such a
    death in one line naming the file, and retries it; multiprocessing's traceback would
    only bury that line. Errors in convvol's own work never reach here: the worker's job
    turns them into failed results."""

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            if debug_requested():
                raise  # the traceback, as convvol's own errors give it with CONVVOL_DEBUG
            sys.stderr.flush()
            os._exit(1)


class WorkerContext(SpawnContext):
    """Spawned workers (forking after the engine's threads is unsafe), as WorkerProcess."""

    Process = WorkerProcess
