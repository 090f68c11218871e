"""``python -m convvol`` and the ``convvol`` command: the CLI, with Ctrl-C handled from the
first instant (``import convvol`` itself imports nothing heavy)."""

import os
import sys


def main() -> None:
    """Console-script entry point."""
    # The engine runs BLAS on one thread (its bands are its parallelism), so OpenBLAS's
    # own threads would only spin up at import and burn CPU the workers need. Set before
    # NumPy is imported; a user's own setting wins. The Python API leaves it alone.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from convvol.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C while Python is still importing: no traceback either
        sys.stderr.write("convvol: error: interrupted; no output was written\n")
        sys.exit(130)
    try:
        cli_main()
        code = 0
    except SystemExit as done:
        code = _exit_code(done)
    _exit(code)


def _exit_code(done: SystemExit) -> int:
    """What the interpreter would exit with for ``done``."""
    if done.code is None or isinstance(done.code, int):
        return done.code or 0
    sys.stderr.write(f"{done.code}\n")
    return 1


def _exit(code: int) -> None:
    """Exit without the interpreter's teardown (a few hundredths of a second of freeing
    modules and objects, at the end of every run). By now every output is written and
    closed, pools and clients are shut down and temporaries removed; only the standard
    streams may still hold bytes, and they are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (| head) or a stream closed
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    main()
